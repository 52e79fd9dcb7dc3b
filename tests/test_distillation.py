"""Distill: ORT teacher -> torch student (the graph itself or a user module) -> written back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

torch = pytest.importorskip("torch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

import onnxslim  # noqa: E402
from onnxslim import VerificationError, testing  # noqa: E402
from onnxslim.passes.distillation import (  # noqa: E402
    Distill,
    DistillationLoss,
    binary_kl,
    infer_output_losses,
    kl_divergence,
)

SAMPLES = 96


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Real images: scikit-learn's digits, upsampled 8x8 -> 16x16, scaled to [0, 1]."""
    data = sklearn_datasets.load_digits()
    images = np.kron(data.images[:SAMPLES] / 16.0, np.ones((2, 2))).astype(np.float32)[:, None]
    return images, data.target[:SAMPLES].astype(np.int64)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = testing.resnet_style(widths=(8, 16), blocks_per_stage=1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.onnx"
    return testing.export_torch(module, (torch.randn(1, 1, 16, 16),), path)


def perturbed_student(teacher_path: Path, scale: float = 0.3) -> ir.Model:
    """The teacher with noise on every weight: a damaged model that distillation must repair."""
    model = onnxslim.load(teacher_path)
    rng = np.random.default_rng(1)
    for value in model.graph.initializers.values():
        array = value.const_value.numpy()
        if array.dtype == np.float32 and array.size > 1:
            noisy = array + scale * array.std() * rng.standard_normal(array.shape)
            value.const_value = ir.Tensor(noisy.astype(np.float32), name=value.name)
    return model


def reader(images: np.ndarray, labels: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    items = []
    for index in range(len(images)):
        item = {"input0": images[index : index + 1]}
        if labels is not None:
            item["label"] = labels[index : index + 1]
        items.append(item)
    return items


def initializer_bytes(model: ir.Model) -> dict[str, bytes]:
    return {name: v.const_value.numpy().tobytes() for name, v in model.graph.initializers.items()}


def test_distill_repairs_damaged_student_without_labels(teacher_path, digits, tmp_path):
    model = perturbed_student(teacher_path)
    nodes_before = [(n.op_type, n.name) for n in model.graph]
    names_before = set(model.graph.initializers)
    result = Distill(
        reader(digits[0]), teacher=str(teacher_path), epochs=3, lr=3e-3, batch_size=16
    ).apply(model, onnxslim.PassContext())
    summary = result.summary
    assert result.model is model and result.modified
    assert summary["epochs_run"] == 3 and summary["steps"] == 3 * SAMPLES // 16
    assert summary["losses"] == {"output": "kl"}
    assert all("ce" not in record["parts"] for record in summary["history"])
    # the graph keeps its nodes, names and opset; only weights changed
    assert [(n.op_type, n.name) for n in model.graph] == nodes_before
    assert set(model.graph.initializers) == names_before
    assert summary["student_vs_onnx_max_abs_error"] <= 1e-4
    assert summary["fidelity_after"]["sqnr_db"] > summary["fidelity_before"]["sqnr_db"] + 5
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    # fidelity measured independently with ORT on the saved file
    saved = onnxslim.save(model, tmp_path / "distilled.onnx")
    feeds = {"input0": digits[0]}
    reference = onnxslim.create_session(teacher_path).run(None, feeds)[0]
    damaged = onnxslim.create_session(perturbed_student(teacher_path)).run(None, feeds)[0]
    repaired = onnxslim.create_session(saved).run(None, feeds)[0]
    assert onnxslim.sqnr_db(reference, repaired) > onnxslim.sqnr_db(reference, damaged) + 5


def test_labels_add_cross_entropy_and_dataloader_input(teacher_path, digits):
    images, labels = digits
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)),
        batch_size=32,
    )
    result = Distill(loader, teacher=str(teacher_path), epochs=1, ce_weight=0.5).apply(
        perturbed_student(teacher_path), onnxslim.PassContext()
    )
    record = result.summary["history"][0]
    assert set(record["parts"]) == {"kl:output", "ce"}
    assert result.summary["steps"] == 3


def test_same_seed_same_weights_and_resume_equals_uninterrupted(teacher_path, digits, tmp_path):
    options = dict(teacher=str(teacher_path), lr=3e-3, batch_size=32, seed=7)
    uninterrupted = perturbed_student(teacher_path)
    Distill(reader(digits[0]), epochs=3, **options).apply(uninterrupted, onnxslim.PassContext())
    repeated = perturbed_student(teacher_path)
    Distill(reader(digits[0]), epochs=3, **options).apply(repeated, onnxslim.PassContext())
    assert initializer_bytes(repeated) == initializer_bytes(uninterrupted)

    # interrupt during epoch 3 (before its checkpoint), then resume: same weights as uninterrupted
    from onnxslim.passes.distillation import _loop

    checkpoint = tmp_path / "distill.ckpt"
    real_evaluate, calls = _loop.evaluate, []

    def interrupted_evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # before training, epochs 1 and 2, then epoch 3
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    _loop.evaluate = interrupted_evaluate
    try:
        with pytest.raises(KeyboardInterrupt):
            Distill(reader(digits[0]), epochs=3, checkpoint=str(checkpoint), **options).apply(
                perturbed_student(teacher_path), onnxslim.PassContext()
            )
    finally:
        _loop.evaluate = real_evaluate
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2
    resumed = perturbed_student(teacher_path)
    result = Distill(
        reader(digits[0]), epochs=3, checkpoint=str(checkpoint), resume=True, **options
    ).apply(resumed, onnxslim.PassContext())
    assert [r["epoch"] for r in result.summary["history"]] == [1, 2, 3]
    assert initializer_bytes(resumed) == initializer_bytes(uninterrupted)


def test_teacher_runs_once_per_sample_for_in_memory_data(teacher_path, digits, monkeypatch):
    from onnxslim.passes.distillation import Batches, OrtTeacher, TeacherTargets, _teacher

    runs = []

    class CountingTeacher(OrtTeacher):
        def __call__(self, feeds):
            runs.append(len(feeds["input0"]))
            return super().__call__(feeds)

    monkeypatch.setattr(_teacher, "OrtTeacher", CountingTeacher)
    summary = (
        Distill(reader(digits[0]), teacher=str(teacher_path), epochs=3, batch_size=16, threads=1)
        .apply(perturbed_student(teacher_path), onnxslim.PassContext())
        .summary
    )
    assert summary["teacher_cache"] == f"in memory ({SAMPLES} samples, computed once)"
    # validation (the first 6 batches of 16) once, then every training sample once, not per epoch
    assert runs == [16] * (SAMPLES // 16) * 2
    assert summary["steps"] == 3 * SAMPLES // 16

    # shuffled batches look up exactly what the teacher computes for them
    teacher = OrtTeacher(teacher_path)
    batches = Batches(reader(digits[0]), ["input0"], batch_size=16)
    targets, _ = TeacherTargets.build(teacher, batches, max_bytes=None)
    for feeds, _, key in batches.epoch(1, shuffle=True, seed=3):
        expected = teacher(feeds)["output"]
        np.testing.assert_allclose(targets[key]["output"].numpy(), expected, rtol=0, atol=1e-5)
    assert TeacherTargets.build(teacher, batches, max_bytes=1000)[1] == (
        "off (teacher outputs would take 3.75 KiB > 1000 B: the teacher runs on every batch)"
    )
    loader = torch.utils.data.DataLoader(torch.from_numpy(digits[0]), batch_size=32)
    assert TeacherTargets.build(teacher, Batches(loader, ["input0"]), None) == (
        None,
        "off (streamed data: the teacher runs on every batch)",
    )


def test_threads_default_auto_and_restored_afterwards(teacher_path, digits):
    from onnxslim.passes.distillation import THREAD_GRAIN_MACS, default_thread_count

    before = torch.get_num_threads()
    runs = {}
    for threads in (None, "auto", 1):
        runs[threads] = (
            Distill(reader(digits[0][:32]), teacher=str(teacher_path), epochs=1, threads=threads)
            .apply(perturbed_student(teacher_path), onnxslim.PassContext())
            .summary["threads"]
        )
        assert torch.get_num_threads() == before
    # this student's batch costs far less than THREAD_GRAIN_MACS: one thread by default
    assert runs[None] == 1 and runs[1] == 1
    assert runs["auto"] in (1, before)
    assert default_thread_count(3 * THREAD_GRAIN_MACS + 1, 16) == 4
    assert default_thread_count(100 * THREAD_GRAIN_MACS, 16) == 16
    assert default_thread_count(None, 16) == 16
    for bad in (0, "fast", True):
        with pytest.raises(
            onnxslim.SlimError,
            match=rf"^distill: threads must be a count >= 1 or 'auto', got {bad!r}\.$",
        ):
            Distill(threads=bad)


def test_samples_of_different_shapes_are_refused(teacher_path, digits):
    items = [{"input0": digits[0][:2]}, {"input0": np.zeros((1, 1, 8, 8), np.float32)}]
    with pytest.raises(
        onnxslim.InputDataError,
        match=r"^distill: samples of input 'input0' differ in shape \(\(1, 16, 16\), \(1, 8, 8\)\); give batch_size=None",
    ):
        Distill(items, teacher=str(teacher_path)).apply(
            onnxslim.load(teacher_path), onnxslim.PassContext()
        )


def test_early_stopping_and_best_epoch(teacher_path, digits):
    # lr 0: nothing improves after epoch 1 is not better than "before", so patience stops it
    result = Distill(
        reader(digits[0][:32]),
        teacher=str(teacher_path),
        epochs=5,
        lr=0.0,
        patience=2,
        batch_size=16,
    ).apply(perturbed_student(teacher_path), onnxslim.PassContext())
    assert result.summary["epochs_run"] == 2
    assert result.summary["stopped_early"] is True
    assert result.summary["best_epoch"] == 0
    assert result.modified is False


def test_user_module_student_is_exported(teacher_path, digits):
    torch.manual_seed(3)
    student = testing.resnet_style(widths=(8, 16), blocks_per_stage=1)
    model = onnxslim.load(teacher_path)
    result = Distill(
        reader(digits[0]), teacher=str(teacher_path), student=student, epochs=2, lr=3e-3
    ).apply(model, onnxslim.PassContext())
    assert result.summary["student"] == "ResNet"
    assert result.summary["student_vs_onnx_max_abs_error"] <= 1e-4
    exported = result.model
    assert [v.name for v in exported.graph.inputs] == ["input0"]
    assert [v.name for v in exported.graph.outputs] == ["output"]
    # in place: the export lives in the given model object, and ORT runs it as the student
    assert exported is model
    feeds = {"input0": digits[0][:8]}
    with onnxslim.temporary_model_file(model) as path:
        ort_output = onnxslim.create_session(path).run(None, feeds)[0]
    with torch.no_grad():
        torch_output = student(torch.from_numpy(digits[0][:8])).numpy()
    np.testing.assert_allclose(ort_output, torch_output, rtol=0, atol=1e-4)
    assert (
        result.summary["fidelity_after"]["sqnr_db"] > result.summary["fidelity_before"]["sqnr_db"]
    )


def test_in_pipeline_teacher_is_the_input_model(teacher_path, digits):
    pipeline = onnxslim.Pipeline([Distill(epochs=1, batch_size=32)])
    result = pipeline.run(teacher_path, data=reader(digits[0]))
    stage = result.report.stages[-1]
    assert stage.summary["teacher"].endswith("reference.onnx") or stage.summary["teacher"] == str(
        teacher_path
    )
    # the teacher distilled into itself stays (nearly) itself
    sqnr_after = stage.summary["fidelity_after"]["sqnr_db"]
    assert sqnr_after == "inf" or sqnr_after > 40


def test_errors_name_the_fix(teacher_path, digits, monkeypatch):
    model = onnxslim.load(teacher_path)
    with pytest.raises(onnxslim.SlimError, match=r"^distill: no teacher; run it in a Pipeline"):
        Distill(reader(digits[0])).apply(model, onnxslim.PassContext())
    with pytest.raises(onnxslim.SlimError, match=r"^distill: no training data; pass data="):
        Distill(teacher=str(teacher_path)).apply(model, onnxslim.PassContext())
    with pytest.raises(
        onnxslim.InputDataError, match=r"lacks model input\(s\) 'input0' \(it has 'image'\)"
    ):
        Distill([{"image": digits[0][:1]}], teacher=str(teacher_path)).apply(
            model, onnxslim.PassContext()
        )
    from onnxslim.passes.distillation import _distill

    real_find_spec = _distill.importlib.util.find_spec
    monkeypatch.setattr(
        _distill.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real_find_spec(name, *a),
    )
    with pytest.raises(onnxslim.SlimError) as error:
        Distill(reader(digits[0]), teacher=str(teacher_path)).apply(model, onnxslim.PassContext())
    assert (
        str(error.value) == "distill needs PyTorch; install it with: pip install 'onnxslim[torch]'"
    )


# ----------------------------------------------------------------------------- losses


def test_kl_divergence_at_temperature():
    student = torch.tensor([[1.0, 2.0, 0.5]])
    teacher = torch.tensor([[0.0, 3.0, 1.0]])
    temperature = 2.0
    p = torch.softmax(teacher / temperature, -1)
    q = torch.softmax(student / temperature, -1)
    expected = (p * (p.log() - q.log())).sum() * temperature**2
    assert torch.allclose(kl_divergence(student, teacher, temperature), expected)
    assert float(kl_divergence(teacher, teacher, 4.0)) == pytest.approx(0.0, abs=1e-7)


def test_binary_kl_is_zero_at_the_teacher_and_pulls_logits_by_the_difference():
    torch.manual_seed(0)
    teacher = torch.sigmoid(3 * torch.randn(2, 1, 4, 4))
    assert float(binary_kl(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    logits = (3 * torch.randn(2, 1, 4, 4)).requires_grad_()
    binary_kl(torch.sigmoid(logits), teacher).backward()
    # through the sigmoid, d/dz = (student - teacher) / elements: no vanishing where saturated
    expected = (torch.sigmoid(logits) - teacher).detach() / teacher.numel()
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_loss_kinds_and_hint_on_kept_channels():
    teacher = {
        "logits": np.zeros((2, 5), np.float32),
        "mask": np.zeros((2, 1, 8, 8), np.float32),
        "ids": np.zeros((2,), np.int64),
    }
    assert infer_output_losses(teacher) == {"logits": "kl", "mask": "mse", "ids": "none"}
    assert infer_output_losses(teacher, softmax_outputs=["logits"])["logits"] == "kl_probs"
    assert infer_output_losses(teacher, sigmoid_outputs=["mask"])["mask"] == "binary_kl"
    kept = [0, 2, 5]
    teacher_feature = torch.randn(2, 6, 4, 4)
    loss = DistillationLoss(
        {"y": "mse"}, hints={"feat": "teacher_feat"}, channel_maps={"feat": kept}
    )
    total, parts = loss(
        {"y": torch.ones(2, 3), "feat": teacher_feature[:, kept]},
        {"y": torch.ones(2, 3), "teacher_feat": teacher_feature},
    )
    assert parts == {"mse:y": 0.0, "hint:feat": 0.0}
    _, parts = loss(
        {"y": torch.ones(2, 3), "feat": teacher_feature[:, [0, 1, 2]]},
        {"y": torch.ones(2, 3), "teacher_feat": teacher_feature},
    )
    assert parts["hint:feat"] > 0
    unmapped = DistillationLoss({"y": "mse"}, hints={"feat": "teacher_feat"})
    with pytest.raises(
        onnxslim.SlimError,
        match=r"hint 'feat' has shape \(2, 3, 4, 4\) in the student and \(2, 6, 4, 4\)",
    ):
        unmapped(
            {"y": torch.ones(2, 3), "feat": teacher_feature[:, kept]},
            {"y": torch.ones(2, 3), "teacher_feat": teacher_feature},
        )


def test_hints_on_graph_intermediates(teacher_path, digits):
    model = perturbed_student(teacher_path)
    relu = next(n for n in model.graph if n.op_type == "Relu").outputs[0].name
    result = Distill(
        reader(digits[0][:32]), teacher=str(teacher_path), epochs=1, hints=[relu], batch_size=16
    ).apply(model, onnxslim.PassContext())
    assert set(result.summary["history"][0]["parts"]) == {"kl:output", f"hint:{relu}"}


# ----------------------------------------------------------------------------- torchrun

WORKER = """
import ctypes, hashlib, os, signal, sys, threading
if sys.platform.startswith("linux"):
    # Die with the launcher even when it is SIGKILLed (a timed-out test): PR_SET_PDEATHSIG.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)
# Backstop against a hung collective: never outlive the test.
deadline = threading.Timer(float(os.environ["WORKER_DEADLINE_S"]), os._exit, (3,))
deadline.daemon = True
deadline.start()
from datetime import timedelta
import numpy as np, onnx_ir as ir, torch, torch.distributed as dist
import onnxslim
from onnxslim.passes.distillation import Distill

dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
teacher, out = sys.argv[1], sys.argv[2]
images = np.load(sys.argv[3])
model = onnxslim.load(teacher)
rng = np.random.default_rng(1)
for value in model.graph.initializers.values():
    array = value.const_value.numpy()
    if array.dtype == np.float32 and array.size > 1:
        value.const_value = ir.Tensor((array + 0.3 * array.std() * rng.standard_normal(array.shape)).astype(np.float32), name=value.name)
data = [{"input0": images[i : i + 1]} for i in range(len(images))]
result = Distill(data, teacher=teacher, epochs=2, lr=3e-3, batch_size=16).apply(model, onnxslim.PassContext())
digest = hashlib.sha256(b"".join(v.const_value.numpy().tobytes() for v in model.graph.initializers.values())).hexdigest()
open(f"{out}.rank{rank}.sha256", "w").write(digest)
if rank == 0:
    onnxslim.save(model, out)
    s = result.summary
    print("RESULT", s["world_size"], s["steps"], s["fidelity_before"]["sqnr_db"], s["fidelity_after"]["sqnr_db"])
dist.destroy_process_group()
"""
TORCHRUN_TIMEOUT_S = 150


def _processes_running(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` (a unique path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                line
                for line in (entry / "status").read_text().splitlines()
                if line.startswith("State:")
            )
        except (OSError, StopIteration):
            continue
        if marker in cmdline and "zombie" not in state:
            pids.append(int(entry.name))
    return pids


def _end_launch(launcher: subprocess.Popen, marker: str) -> None:
    """Ends the torchrun launcher (its session) and any worker still running ``marker``."""
    if launcher.poll() is None:
        os.killpg(launcher.pid, signal.SIGTERM)  # torchrun forwards SIGTERM to its workers
        try:
            launcher.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    # Workers run in sessions of their own; end those this test started, by PID.
    for pid in _processes_running(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_torchrun_two_processes_gloo(teacher_path, digits, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    images = tmp_path / "images.npy"
    np.save(images, digits[0][:64])
    out = tmp_path / "distilled.onnx"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WORKER_DEADLINE_S": str(TORCHRUN_TIMEOUT_S + 10),
    }
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(teacher_path),
            str(out),
            str(images),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = launcher.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _end_launch(launcher, str(script))
        stdout, stderr = launcher.communicate()
        pytest.fail(f"torchrun did not finish in {TORCHRUN_TIMEOUT_S} s:\n{stderr[-3000:]}")
    finally:
        _end_launch(launcher, str(script))
    assert _processes_running(str(script)) == []
    assert launcher.returncode == 0, stderr[-3000:]
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT"))
    _, world_size, steps, before, after = line.split()
    assert int(world_size) == 2
    assert int(steps) == 2 * (64 // 2 // 16)  # each rank trains on its half
    assert float(after) > float(before) + 5
    # DDP kept both ranks' weights identical; rank 0's file verifies in ORT
    assert Path(f"{out}.rank0.sha256").read_text() == Path(f"{out}.rank1.sha256").read_text()
    feeds = {"input0": digits[0][:64]}
    reference = onnxslim.create_session(teacher_path).run(None, feeds)[0]
    distilled = onnxslim.create_session(out).run(None, feeds)[0]
    assert onnxslim.sqnr_db(reference, distilled) > float(before) + 5


@pytest.mark.parametrize("wrong", [False, True])
def test_write_back_check_tolerates_rounding_and_catches_wrong_kernels(
    teacher_path, digits, monkeypatch, wrong
):
    """ORT must reproduce the torch student: a relative rounding difference (as float32
    accumulation order gives on deep trained nets) passes on SQNR even above 1e-4 absolute; a
    kernel that computes something else is refused."""
    from onnxslim.torch_bridge import _kernels

    if wrong:
        kernel = lambda x: torch.nn.functional.leaky_relu(x, 0.2)  # noqa: E731
    else:
        kernel = lambda x: torch.relu(x) * (1 + 1e-3)  # noqa: E731
    monkeypatch.setitem(_kernels.KERNELS, "Relu", lambda node, opset: kernel)
    distill = Distill(reader(digits[0][:32]), teacher=str(teacher_path), epochs=1, batch_size=16)
    model = perturbed_student(teacher_path)
    if wrong:
        with pytest.raises(VerificationError, match=r"differs from the torch student by .* dB"):
            distill.apply(model, onnxslim.PassContext())
        return
    summary = distill.apply(model, onnxslim.PassContext()).summary
    assert summary["student_vs_onnx_max_abs_error"] > 1e-4
    assert 50.0 <= summary["student_vs_onnx_sqnr_db"] < 120.0


# ----------------------------------------------------------------------------- options, in place


def test_options_have_one_source_of_defaults():
    import dataclasses
    import inspect

    from onnxslim.passes.distillation import DataConfig, LossConfig, TrainConfig

    parameters = inspect.signature(Distill).parameters
    shared = 0
    for config in (TrainConfig(), LossConfig(), DataConfig()):
        for field in dataclasses.fields(config):
            if field.name in parameters:
                assert parameters[field.name].default == field.default, field.name
                shared += 1
    assert shared == 24  # issue 15: augment
    assert (parameters["epochs"].default, parameters["lr"].default) == (5, 1e-3)
    assert (parameters["batch_size"].default, parameters["temperature"].default) == (32, 4.0)
    assert Distill(epochs=2, lr=0.01, seed=3).train_config() == TrainConfig(
        epochs=2, lr=0.01, seed=3
    )
    assert "        epochs (5): Passes over the data.\n" in Distill.__doc__
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_exported_model_is_moved_into_the_given_model_object():
    from onnxslim.passes.distillation._export import replace_model

    target = ir.from_proto(
        onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 13]>
            g (float[2] x) => (float[2] y) { y = Relu(x) }"""
        )
    )
    source = ir.from_proto(
        onnx.parser.parse_model(
            """<ir_version: 9, opset_import: ["" : 17]>
            h (float[2] x) => (float[2] z) <float[2] w = {1.0, -2.0}> { z = Add(x, w) }"""
        )
    )
    graph = target.graph
    replace_model(target, source)
    assert target.graph is graph and graph.name == "h"
    assert [n.op_type for n in graph] == ["Add"]
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["z"]
    assert list(graph.initializers) == ["w"]
    assert (target.ir_version, target.opset_imports) == (9, {"": 17})
    assert len(source.graph) == 0 and not source.graph.inputs and not source.graph.initializers
    (z,) = onnxslim.create_session(target).run(None, {"x": np.array([3.0, 4.0], np.float32)})
    np.testing.assert_array_equal(z, np.array([4.0, 2.0], np.float32))


# ----------------------------------------------------------------------------- data sources


class GetNextReader:
    """An ONNX Runtime style CalibrationDataReader: get_next()/rewind(), not iterable."""

    def __init__(self, items):
        self.items, self.position = items, 0

    def get_next(self):
        if self.position >= len(self.items):
            return None
        self.position += 1
        return self.items[self.position - 1]

    def rewind(self):
        self.position = 0


def test_every_data_source_trains_on_the_same_samples(teacher_path, digits, tmp_path):
    images, labels = digits[0][:32], digits[1][:32]
    npz = tmp_path / "train.npz"
    np.savez(npz, input0=images, label=labels)
    sources = {
        "npz": str(npz),
        "dicts": reader(images, labels),
        "tuples": [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)],
        "get_next": GetNextReader(reader(images, labels)),
    }
    for name, source in sources.items():
        summary = (
            Distill(source, teacher=str(teacher_path), epochs=1, batch_size=16, seed=1)
            .apply(perturbed_student(teacher_path), onnxslim.PassContext())
            .summary
        )
        assert (summary["samples"], summary["steps"]) == (32, 2), name
        assert set(summary["history"][0]["parts"]) == {"kl:output", "ce"}, name
    # batch_size=None: items as given (4 items of 8 samples: 4 steps an epoch)
    summary = (
        Distill(sources["tuples"], teacher=str(teacher_path), epochs=2, batch_size=None)
        .apply(perturbed_student(teacher_path), onnxslim.PassContext())
        .summary
    )
    assert (summary["samples"], summary["steps"]) == (32, 8)


def test_batches_stack_split_shuffle_and_shard(digits):
    from onnxslim.passes.distillation import Batches

    images, labels = digits[0][:40], digits[1][:40]
    batches = Batches(reader(images, labels), ["input0"], batch_size=16)
    assert batches.in_memory and batches.sample_count == 40
    assert batches.arrays["input0"].shape == (40, 1, 16, 16)
    np.testing.assert_array_equal(batches.labels, labels)
    assert [batches.batches_per_epoch(w) for w in (1, 2, 3)] == [3, 2, 1]
    sizes = [len(feeds["input0"]) for feeds, _, _ in batches.epoch()]
    assert sizes == [16, 16, 8]
    for feeds, batch_labels, key in batches.epoch(2, shuffle=True, seed=5):
        np.testing.assert_array_equal(feeds["input0"], images[key])
        np.testing.assert_array_equal(batch_labels, labels[key])
    order = np.random.default_rng(5 + 2).permutation(40)
    shard = [key for _, _, key in batches.epoch(2, shuffle=True, seed=5, rank=1, world_size=3)]
    np.testing.assert_array_equal(np.concatenate(shard), order[:39][1::3])

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)),
        batch_size=16,
    )
    streamed = Batches(loader, ["input0"])
    assert not streamed.in_memory and streamed.sample_count == 40
    assert streamed.batches_per_epoch() == 3 and streamed.batches_per_epoch(2) == 1
    got = list(streamed.epoch())
    assert [len(f["input0"]) for f, _, _ in got] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate([lab for _, lab, _ in got]), labels)
    assert all(key is None for _, _, key in got)
    (only,) = list(streamed.epoch(rank=1, world_size=2))  # batch 1 of the 2 * 1 shared ones
    np.testing.assert_array_equal(only[0]["input0"], images[16:32])


def test_user_module_student_in_a_pipeline_keeps_the_in_place_promise(teacher_path, digits):
    torch.manual_seed(3)
    student = testing.resnet_style(widths=(8, 16), blocks_per_stage=1)
    pipeline = onnxslim.Pipeline([Distill(student=student, epochs=1, batch_size=32, lr=3e-3)])
    result = pipeline.run(teacher_path, data=reader(digits[0]))
    stage = result.report.stages[-1]
    assert stage.summary["student"] == "ResNet" and stage.summary["initializers_updated"] == 1
    assert [v.name for v in result.model.graph.inputs] == ["input0"]
    assert [v.name for v in result.model.graph.outputs] == ["output"]
    feeds = {"input0": digits[0][:8]}
    with onnxslim.temporary_model_file(result.model) as path:
        ort_output = onnxslim.create_session(path).run(None, feeds)[0]
    with torch.no_grad():
        torch_output = student(torch.from_numpy(digits[0][:8])).numpy()
    np.testing.assert_allclose(ort_output, torch_output, rtol=0, atol=1e-4)


def test_summary_keeps_floats_and_the_report_encodes_them(teacher_path, digits):
    import json

    pipeline = onnxslim.Pipeline([Distill(epochs=1, batch_size=32, lr=0.0)])
    result = pipeline.run(teacher_path, data=reader(digits[0][:32]))
    summary = result.report.stages[-1].summary
    encoded = json.loads(result.report.to_json())["stages"][-1]["summary"]
    for key in ("sqnr_before_db", "sqnr_after_db"):
        assert isinstance(summary[key], float)
        assert encoded[key] == (
            str(summary[key]) if not np.isfinite(summary[key]) else summary[key]
        )
    for record, written in zip(summary["history"], encoded["history"], strict=True):
        assert isinstance(record["fidelity"]["sqnr_db"], float)
        assert set(written["fidelity"]) == {
            "max_abs_error",
            "mean_abs_error",
            "sqnr_db",
            "top1_agreement",
            "samples",
        }
    assert summary["fidelity_after"]["samples"] == 1 and encoded["fidelity_after"]["samples"] == 1
    # lr 0: the written model is the teacher, bit for bit; "inf" only at the JSON edge
    assert summary["sqnr_after_db"] == float("inf") and encoded["sqnr_after_db"] == "inf"
    assert summary["fidelity_after"]["sqnr_db"] == float("inf")
    assert encoded["fidelity_after"]["sqnr_db"] == "inf"


def test_declared_options_positional_data_and_recipe_checks(tmp_path):
    import dataclasses

    from onnxslim.passes.distillation import DataConfig, DistillOptions, LossConfig, TrainConfig

    assert Distill.Options is DistillOptions
    configs = {
        f.name: f for c in (TrainConfig, LossConfig, DataConfig) for f in dataclasses.fields(c)
    }
    shared = [f for f in dataclasses.fields(DistillOptions) if f.name in configs]
    assert len(shared) == 24  # issue 15: augment
    for field in shared:
        source = configs[field.name]
        assert (field.default, field.metadata["help"]) == (source.default, source.metadata["help"])
    distill = Distill("train.npz", epochs=10, lr=3e-3)
    assert (distill.data, distill.epochs, distill.lr, distill.batch_size) == (
        "train.npz",
        10,
        3e-3,
        32,
    )
    assert distill.settings == DistillOptions(data="train.npz", epochs=10, lr=3e-3)
    assert Distill(DistillOptions(epochs=2)).epochs == 2
    assert Distill(data=[1]).data == [1]
    with pytest.raises(onnxslim.SlimError, match=r"^distill: epochs must be >= 1, got 0\.$"):
        DistillOptions(epochs=0)
    with pytest.raises(onnxslim.SlimError, match=r"^distill: kd_weight must be >= 0, got -1\.0\.$"):
        Distill(kd_weight=-1.0)
    # recipes: real type checks from the declaration
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[passes]]\nname = "distill"\noptimizer = "rmsprop"\n')
    with pytest.raises(onnxslim.RecipeError) as error:
        onnxslim.load_recipe(recipe)
    assert "option 'optimizer' of pass 'distill' expects one of 'adamw', 'adam', 'sgd'" in str(
        error.value
    )
    recipe.write_text('[[passes]]\nname = "distill"\nepochs = 2\nlr = 0\nthreads = "auto"\n')
    (loaded,) = onnxslim.load_recipe(recipe).passes
    assert (loaded.epochs, loaded.lr, loaded.threads) == (2, 0.0, "auto")


def test_batch_forward_macs_by_the_engine_rule():
    from onnxslim.passes.distillation._stages import _batch_forward_macs

    rng = np.random.default_rng(0)
    model = ir.from_proto(
        onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 13]>
            g (float[N, 3, 8, 8] x) => (float[N, 10] y) {
                c = Conv <pads = [1, 1, 1, 1]> (x, w)
                f = Flatten (c)
                y = Gemm (f, v)
            }"""
        )
    )
    for name, shape in (("w", (4, 3, 3, 3)), ("v", (256, 10))):
        value = ir.Value(name=name, const_value=ir.Tensor(rng.standard_normal(shape, np.float32)))
        model.graph.register_initializer(value)
        next(n for n in model.graph if name in [i.name for i in n.inputs if i]).replace_input_with(
            1, value
        )
    # Conv: 2 x 4x8x8 outputs x 3x3x3 taps; Gemm: 2 x 10 outputs x 256 inputs
    feeds = {"x": np.zeros((2, 3, 8, 8), np.float32)}
    assert _batch_forward_macs(model, feeds) == 2 * 4 * 64 * 27 + 2 * 10 * 256


def test_teacher_exposes_hinted_values_in_one_session(teacher_path, digits):
    from onnxslim.passes.distillation import OrtTeacher

    model = onnxslim.load(teacher_path)
    relu = next(n for n in model.graph if n.op_type == "Relu").outputs[0].name
    teacher = OrtTeacher(teacher_path, extra_outputs=[relu])
    assert teacher.input_names == ["input0"] and teacher.output_names == ["output", relu]
    feeds = {"input0": digits[0][:4]}
    outputs = teacher(feeds)
    plain = onnxslim.create_session(teacher_path).run(None, feeds)[0]
    np.testing.assert_array_equal(outputs["output"], plain)
    assert outputs[relu].shape[0] == 4 and outputs[relu].min() >= 0
    with pytest.raises(
        onnxslim.SlimError,
        match=r"^distill: teacher has no value\(s\) 'nope' for hint losses; name values",
    ):
        OrtTeacher(teacher_path, extra_outputs=["nope"])


def test_augmented_inputs_reach_student_and_teacher_alike(teacher_path, digits):
    """Student = teacher and lr 0: the loss is 0 only if the teacher ran on the same augmented
    batch as the student (the clean batch would give it other outputs)."""
    from onnxslim.inputs import ImageAugment

    seen: list[np.ndarray] = []

    def recording(feeds, rng):
        out = ImageAugment(flip=1.0, crop=0.3)(feeds, rng)
        seen.append(out["input0"])
        return out

    images = digits[0][:32]
    result = Distill(
        reader(images),
        teacher=str(teacher_path),
        epochs=1,
        lr=0.0,
        batch_size=16,
        augment=recording,
    ).apply(onnxslim.load(teacher_path), onnxslim.PassContext())
    summary = result.summary
    assert summary["teacher_cache"] == "off (augmented inputs: the teacher runs on every batch)"
    assert len(seen) == summary["steps"] == 2
    clean = {tuple(sample.ravel()) for sample in images}
    assert not any(tuple(sample.ravel()) in clean for batch in seen for sample in batch)
    assert summary["history"][0]["loss"] < 1e-6


def test_distill_with_image_augmentation_repairs_and_is_repeatable(teacher_path, digits):
    def run() -> dict:
        model = perturbed_student(teacher_path)
        options = {"teacher": str(teacher_path), "epochs": 1, "lr": 3e-3, "batch_size": 16}
        return (
            Distill(reader(digits[0]), augment="image", threads=1, **options)
            .apply(model, onnxslim.PassContext())
            .summary
        )

    first, second = run(), run()
    assert first["steps"] == SAMPLES // 16
    assert first["fidelity_after"]["sqnr_db"] > first["fidelity_before"]["sqnr_db"]
    assert [r["loss"] for r in first["history"]] == [r["loss"] for r in second["history"]]
    with pytest.raises(onnxslim.SlimError, match="augment 'noise'"):
        Distill(augment="noise")
