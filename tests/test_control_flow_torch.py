"""Torch kernels for If/Loop/Scan: parity with ONNX Runtime on graphs built with onnx.helper
(outer-scope captures, a branch's own initializers, carried state, scan outputs, both directions),
gradients through a branch into initializers, write-back into subgraphs, and Silero VAD (an LSTM
inside an If on the sample rate) run and distilled in torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import pytest

torch = pytest.importorskip("torch")

import onnxslim  # noqa: E402
from onnxslim import UnsupportedModelError  # noqa: E402
from onnxslim.inputs import open_samples  # noqa: E402
from onnxslim.passes import Cleanup, Distill  # noqa: E402
from onnxslim.torch_bridge import OnnxModule, write_back  # noqa: E402
from onnxslim.torch_bridge._kernels_control import all_initializers, captured_values  # noqa: E402
from tests.test_torch_bridge import assert_parity  # noqa: E402

FLOAT, INT64, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL
RNG = np.random.default_rng(3)


def _array(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return onh.from_array(array, name)


def _model(graph: onnx.GraphProto, opset: int = 17) -> ir.Model:
    opsets = [oh.make_opsetid("", opset), oh.make_opsetid("custom.example", 1)]
    model = oh.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(model, full_check=True)
    return ir.from_proto(model)


def if_model(then_op: str = "MatMul", then_domain: str = "") -> ir.Model:
    """``h = x * scale`` outside; then: ``(h @ W + b, identity(h))`` with W outer and b the branch's own;
    else: ``(h - x, -x)``. Outputs y [2, 4] and z [2, 4]."""
    then_branch = oh.make_graph(
        [
            oh.make_node(then_op, ["h", "W"], ["hw"], domain=then_domain),
            oh.make_node("Add", ["hw", "b_then"], ["y_then"]),
            oh.make_node("Identity", ["h"], ["z_then"]),
        ],
        "then",
        [],
        [
            oh.make_tensor_value_info("y_then", FLOAT, [2, 4]),
            oh.make_tensor_value_info("z_then", FLOAT, [2, 4]),
        ],
        [_tensor("b_then", _array(4))],
    )
    else_branch = oh.make_graph(
        [
            oh.make_node("Sub", ["h", "x"], ["y_else"]),
            oh.make_node("Mul", ["x", "minus_one"], ["z_else"]),
        ],
        "else",
        [],
        [
            oh.make_tensor_value_info("y_else", FLOAT, [2, 4]),
            oh.make_tensor_value_info("z_else", FLOAT, [2, 4]),
        ],
        [_tensor("minus_one", np.array(-1.0, np.float32))],
    )
    graph = oh.make_graph(
        [
            oh.make_node("Mul", ["x", "scale"], ["h"]),
            oh.make_node(
                "If", ["flag"], ["y", "z"], then_branch=then_branch, else_branch=else_branch
            ),
        ],
        "if_capture",
        [
            oh.make_tensor_value_info("x", FLOAT, [2, 4]),
            oh.make_tensor_value_info("flag", BOOL, []),
        ],
        [
            oh.make_tensor_value_info("y", FLOAT, [2, 4]),
            oh.make_tensor_value_info("z", FLOAT, [2, 4]),
        ],
        [_tensor("scale", _array(4)), _tensor("W", _array(4, 4))],
    )
    return _model(graph)


def loop_model(with_condition: bool = True) -> ir.Model:
    """Carried ``s <- s * decay + i`` and a scan output ``s @ W`` per iteration; the body's
    condition is ``i < limit`` (``decay``, ``W``, ``limit`` are outer initializers)."""
    body = oh.make_graph(
        [
            oh.make_node("Less", ["i", "limit"], ["cond_out"]),
            oh.make_node("Cast", ["i"], ["i_float"], to=FLOAT),
            oh.make_node("Mul", ["s", "decay"], ["decayed"]),
            oh.make_node("Add", ["decayed", "i_float"], ["s_out"]),
            oh.make_node("MatMul", ["s_out", "W"], ["scan_out"]),
        ],
        "body",
        [
            oh.make_tensor_value_info("i", INT64, []),
            oh.make_tensor_value_info("cond_in", BOOL, []),
            oh.make_tensor_value_info("s", FLOAT, [3]),
        ],
        [
            oh.make_tensor_value_info("cond_out", BOOL, []),
            oh.make_tensor_value_info("s_out", FLOAT, [3]),
            oh.make_tensor_value_info("scan_out", FLOAT, [2]),
        ],
    )
    inputs = [oh.make_tensor_value_info("M", INT64, [])]
    if with_condition:
        inputs.append(oh.make_tensor_value_info("cond", BOOL, []))
    inputs.append(oh.make_tensor_value_info("s0", FLOAT, [3]))
    loop = oh.make_node(
        "Loop", ["M", "cond" if with_condition else "", "s0"], ["s_final", "scanned"], body=body
    )
    graph = oh.make_graph(
        [loop],
        "loop",
        inputs,
        [
            oh.make_tensor_value_info("s_final", FLOAT, [3]),
            oh.make_tensor_value_info("scanned", FLOAT, ["iterations", 2]),
        ],
        [
            _tensor("decay", _array(3)),
            _tensor("W", _array(3, 2)),
            _tensor("limit", np.array(2, np.int64)),
        ],
    )
    return _model(graph)


def scan_model() -> ir.Model:
    """State ``s <- s + x_t * w`` over axis 1 of x, read backwards; ``relu(s)`` stacked on axis 1
    in reverse order."""
    body = oh.make_graph(
        [
            oh.make_node("Mul", ["x_t", "w"], ["weighted"]),
            oh.make_node("Add", ["s", "weighted"], ["s_out"]),
            oh.make_node("Relu", ["s_out"], ["y_t"]),
        ],
        "body",
        [oh.make_tensor_value_info("s", FLOAT, [3]), oh.make_tensor_value_info("x_t", FLOAT, [3])],
        [
            oh.make_tensor_value_info("s_out", FLOAT, [3]),
            oh.make_tensor_value_info("y_t", FLOAT, [3]),
        ],
    )
    scan = oh.make_node(
        "Scan",
        ["s0", "x"],
        ["s_final", "ys"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_input_directions=[1],
        scan_output_axes=[-1],
        scan_output_directions=[1],
    )
    graph = oh.make_graph(
        [scan],
        "scan",
        [
            oh.make_tensor_value_info("s0", FLOAT, [3]),
            oh.make_tensor_value_info("x", FLOAT, [3, 5]),
        ],
        [
            oh.make_tensor_value_info("s_final", FLOAT, [3]),
            oh.make_tensor_value_info("ys", FLOAT, [3, 5]),
        ],
        [_tensor("w", _array(3))],
    )
    return _model(graph)


@pytest.mark.parametrize("flag", [True, False])
def test_if_runs_the_chosen_branch_with_outer_scope_values(flag: bool) -> None:
    model = if_model()
    assert_parity(model, {"x": _array(2, 4), "flag": np.array(flag)})


def test_if_captures_outer_values_and_branch_initializers() -> None:
    node = next(n for n in if_model().graph if n.op_type == "If")
    branches = [a.as_graph() for a in node.attributes.values()]
    assert sorted(str(v.name) for v in captured_values(branches)) == [
        "W",
        "b_then",
        "h",
        "minus_one",
        "x",
    ]


@pytest.mark.parametrize(("trips", "iterations"), [(5, 3), (2, 2), (0, 0)])
def test_loop_carries_state_and_stacks_scan_outputs(trips: int, iterations: int) -> None:
    # the condition i < 2 stops after 3 iterations; a trip count of 2 stops first
    model = loop_model()
    feeds = {"M": np.array(trips), "cond": np.array(True), "s0": _array(3)}
    if iterations:
        assert_parity(model, feeds)
    with torch.no_grad():
        scanned = OnnxModule(model).eval()(**feeds)["scanned"]
    assert scanned.shape[0] == iterations


def test_loop_without_condition_input_still_stops_on_the_body_condition() -> None:
    # ONNX Runtime honours the body's condition output here too; the kernel follows ORT
    model = loop_model(with_condition=False)
    feeds = {"M": np.array(6), "s0": _array(3)}
    assert_parity(model, feeds)
    with torch.no_grad():
        assert OnnxModule(model).eval()(**feeds)["scanned"].shape == (3, 2)


def test_scan_over_axis_one_backwards() -> None:
    assert_parity(scan_model(), {"s0": _array(3), "x": _array(3, 5)})


def test_gradients_reach_initializers_used_inside_the_taken_branch(tmp_path: Path) -> None:
    model = if_model()
    module = OnnxModule(model)
    keys = module.parameter_names()
    assert {"W", "b_then", "scale"} <= set(keys)
    x, target = torch.from_numpy(_array(2, 4)), torch.from_numpy(_array(2, 4))
    feeds = {"x": x, "flag": torch.tensor(True)}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    loss_before = torch.nn.functional.mse_loss(module(**feeds)["y"], target)
    loss_before.backward()
    for name in ("W", "b_then", "scale"):
        gradient = module.weights[keys[name]].grad
        assert gradient is not None and float(gradient.abs().sum()) > 0, name
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        after = module.eval()(**feeds)
    assert float(torch.nn.functional.mse_loss(after["y"], target)) < loss_before.item()
    # the branch's own initializer is written back into the then-branch and ORT agrees with torch
    changed = write_back(module, model)
    assert set(changed) == {"W", "b_then", "scale"}
    branch_bias = dict(all_initializers(model.graph))["b_then"].const_value.numpy()
    np.testing.assert_array_equal(branch_bias, module.onnx_tensor("b_then").detach().numpy())
    ort_y = onnxslim.create_session(model).run(["y"], {"x": x.numpy(), "flag": np.array(True)})[0]
    np.testing.assert_allclose(ort_y, after["y"].numpy(), atol=1e-5, rtol=0)


def test_unsupported_op_inside_a_branch_names_the_branch() -> None:
    model = if_model(then_op="Frobnicate", then_domain="custom.example")
    with pytest.raises(UnsupportedModelError, match=r"If \('.*'\) then_branch has no torch kernel"):
        OnnxModule(model)


def test_loop_that_never_ends_is_refused() -> None:
    model = loop_model(with_condition=False)
    loop = next(n for n in model.graph if n.op_type == "Loop")
    loop.replace_input_with(0, None)
    with pytest.raises(UnsupportedModelError, match="neither trip count nor condition"):
        OnnxModule(model)


# ------------------------------------------------------------------------------ Silero VAD


def silero_vad_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the silero-vad wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


@pytest.fixture(scope="module")
def silero_clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = Cleanup()(ir.load(silero_vad_path())).model
    return onnxslim.save(model, tmp_path_factory.mktemp("silero") / "silero_clean.onnx")


def silero_feeds(seed: int, sample_rate: int, batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    window = 512 if sample_rate == 16000 else 256
    return {
        "input": (rng.standard_normal((batch, window)) * 0.1).astype(np.float32),
        "state": (rng.standard_normal((2, batch, 128)) * 0.1).astype(np.float32),
        "sr": np.array(sample_rate, np.int64),
    }


@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_silero_vad_runs_in_torch_like_ort(silero_clean: Path, sample_rate: int) -> None:
    assert_parity(ir.load(silero_clean), silero_feeds(0, sample_rate), atol=1e-4)


def test_silero_vad_distills_through_its_if(silero_clean: Path) -> None:
    model = ir.load(silero_clean)
    rng = np.random.default_rng(1)
    for name, value in all_initializers(model.graph):
        if "then_branch" in name and "encoder" in name and name.endswith("weight"):
            array = value.const_value.numpy()
            noisy = array * (1 + 0.3 * rng.standard_normal(array.shape))
            value.const_value = ir.Tensor(noisy.astype(np.float32), name=name)
    damaged = {name: v.const_value.numpy().copy() for name, v in all_initializers(model.graph)}
    feeds = [silero_feeds(seed, 16000, batch=4) for seed in range(8)]
    result = Distill(
        open_samples(feeds=feeds, model=model),
        teacher=str(silero_clean),
        epochs=2,
        lr=1e-3,
        batch_size=None,
    ).apply(model, onnxslim.PassContext())
    summary = result.summary
    assert result.modified and summary["steps"] == 16
    assert summary["student_vs_onnx_max_abs_error"] <= 1e-3
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    assert summary["fidelity_after"]["sqnr_db"] > summary["fidelity_before"]["sqnr_db"] + 1
    # 16 kHz picks the then-branch: its weights moved, the 8 kHz branch's did not
    after = {name: v.const_value.numpy() for name, v in all_initializers(model.graph)}
    moved = {name for name in after if not np.array_equal(after[name], damaged[name])}
    assert moved and all("then_branch" in name for name in moved)
