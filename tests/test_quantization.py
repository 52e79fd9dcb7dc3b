"""QuantizeStatic: profiles, selectors, QDQ emission through ORT, guards, end-to-end ORT runs."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import onnxslim
from onnxslim import InputDataError, PassContext, RecipeError
from onnxslim.passes.quantization import (
    QuantizeStatic,
    select_nodes,
    target_profile,
)
from onnxslim.runtime import CpuFeatures, cpu_features

torch = pytest.importorskip("torch")

from onnxslim.testing import bert_style_encoder, export_torch, resnet_style  # noqa: E402

X86_AVX2 = "processor : 0\nflags : fpu sse sse2 avx avx2 fma\n"
X86_VNNI = "processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni\n"
ARM_DOT = "processor : 0\nFeatures : fp asimd evtstrm aes asimddp\n"


# -- profiles ----------------------------------------------------------------------------------
def test_cpu_features_from_cpuinfo_flags():
    assert cpu_features(X86_AVX2, "x86_64") == CpuFeatures(arch="x86")
    assert cpu_features(X86_VNNI, "x86_64").vnni
    assert cpu_features("flags : avx2 amx_int8 amx_tile\n", "x86_64").amx
    arm = cpu_features(ARM_DOT, "aarch64")
    assert arm.arch == "arm" and arm.arm_dot and not arm.arm_i8mm


def test_cpu_profile_follows_int8_instructions():
    avx2 = target_profile("cpu", cpu_features(X86_AVX2, "x86_64"))
    assert (avx2.activation_type, avx2.weight_type, avx2.per_channel, avx2.reduce_range) == (
        "uint8",
        "int8",
        True,
        True,
    )
    vnni = target_profile("cpu", cpu_features(X86_VNNI, "x86_64"))
    assert vnni.activation_type == "uint8" and not vnni.reduce_range
    assert any("full-range" in reason for reason in vnni.reasons)
    amx = target_profile("cpu", cpu_features("flags : avx2 avx512f amx_int8\n", "x86_64"))
    assert amx.activation_type == "uint8" and not amx.reduce_range
    arm = target_profile("cpu", cpu_features(ARM_DOT, "aarch64"))
    assert arm.activation_type == "int8" and not arm.reduce_range
    plain_arm = target_profile("cpu", cpu_features("Features : fp asimd\n", "aarch64"))
    assert plain_arm.activation_type == "uint8"


def test_tensorrt_is_symmetric_and_cuda_warns(caplog):
    trt = target_profile("tensorrt")
    assert trt.activation_type == trt.weight_type == "int8"
    assert trt.activation_symmetric and trt.weight_symmetric
    with caplog.at_level(logging.WARNING):
        cuda = target_profile("cuda")
    assert "fake quantization" in caplog.text and cuda.warnings
    with pytest.raises(RecipeError, match="unknown quantization target 'npu'"):
        target_profile("npu")


# -- selectors ---------------------------------------------------------------------------------
SELECTOR_MODEL = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 4] x) => (float[1, 4] y)
   <float[4, 4] w = {1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1}>
{
    a_mm = MatMul (x, w)
    b_mm = MatMul (a_mm, w)
    act = Relu (b_mm)
    y = Add (act, x)
}
"""


def test_exclusion_selectors_by_name_regex_and_op_type():
    proto = onnx.parser.parse_model(SELECTOR_MODEL)
    for node, name in zip(proto.graph.node, ["first", "second", "relu", "add"]):
        node.name = name
    matched, unmatched = select_nodes(
        proto.graph, ["relu", "re:^s", "op:MatMul", "op:Conv", "nope"]
    )
    assert matched == {"relu": "relu", "second": "re:^s", "first": "op:MatMul"}
    assert unmatched == ["op:Conv", "nope"]


# -- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conv_net(tmp_path_factory):
    """A small ResNet exported at opset 12 (per-channel QDQ needs an upgrade) + digit images."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("conv")
    path = export_torch(
        resnet_style(widths=(8, 16), blocks_per_stage=1),
        (torch.randn(1, 1, 16, 16),),
        folder / "resnet.onnx",
        input_names=["x"],
        opset=12,
    )
    digits = load_digits().images.astype(np.float32) / 16.0
    images = np.repeat(np.repeat(digits, 2, axis=1), 2, axis=2)[:, None]
    return path, images


def _ops(model: ir.Model) -> Counter:
    return Counter(node.op_type for node in model.graph)


def _outputs(model: ir.Model, feeds: dict) -> np.ndarray:
    return onnxslim.create_session(model).run(None, feeds)[0]


def test_conv_net_quantizes_per_channel_and_runs_in_ort(conv_net, tmp_path):
    path, images = conv_net
    model = onnxslim.load(path)
    calibration = [{"x": image} for image in images[:32]]
    quantizer = QuantizeStatic(calibration, method="percentile", latency_guard=False, batch_size=8)
    result = quantizer.apply(model, PassContext(workdir=tmp_path))
    assert result.modified and result.model is model
    ops = _ops(model)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    opset = model.opset_imports[""]
    assert opset >= 13  # upgraded from 12 for per-channel axes
    per_channel = [
        n
        for n in model.graph
        if n.op_type == "DequantizeLinear"
        and n.inputs[1].shape is not None
        and n.inputs[1].shape.rank() == 1
    ]
    assert per_channel, "weights should carry per-channel scales"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    feeds = {"x": images[100:108]}
    reference = _outputs(onnxslim.load(path), feeds)
    quantized = _outputs(model, feeds)
    assert onnxslim.sqnr_db(reference, quantized) > 20.0
    summary = result.summary
    assert summary["calibration"]["samples"] == 32 and not summary["smoke_data"]
    conv_names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    assert set(conv_names) <= set(summary["nodes_quantized"])
    assert all(entry["method"] == "percentile" for entry in summary["tensors"].values())
    # Tensors ORT folded away (a Conv output feeding a removed Relu) have no SQNR; the rest do.
    measured = [
        e["sqnr_db"] for e in summary["tensors"].values() if isinstance(e["sqnr_db"], float)
    ]
    assert len(measured) > len(summary["tensors"]) / 2 and min(measured) > 10.0
    assert summary["size_bytes_after"] < summary["size_bytes_before"]


def test_excluded_node_stays_float_in_orts_optimized_graph(conv_net, tmp_path):
    path, images = conv_net
    conv_names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    model = onnxslim.load(path)
    quantizer = QuantizeStatic(
        [{"x": image} for image in images[:8]],
        latency_guard=False,
        accuracy_guard=False,
        exclude=[conv_names[0], "op:NoSuchOp"],
    )
    result = quantizer.apply(model, PassContext(workdir=tmp_path))
    summary = result.summary
    assert summary["nodes_excluded"][conv_names[0]].startswith("excluded by the user")
    assert conv_names[0] not in summary["nodes_quantized"]
    assert "exclude selector 'op:NoSuchOp' matches no node" in summary["warnings"]
    assert summary["excluded_verified_on_ort_graph"][conv_names[0]] == "float"


def test_latency_guard_never_returns_a_slower_model(conv_net, tmp_path):
    path, images = conv_net
    model = onnxslim.load(path)
    before = ir.to_proto(model).SerializeToString()
    quantizer = QuantizeStatic(
        [{"x": image} for image in images[:8]], min_speedup=1000.0, latency_runs=3
    )
    result = quantizer.apply(model, PassContext(workdir=tmp_path))
    assert not result.modified
    assert result.summary["fallback"].startswith("returned the float model")
    assert ir.to_proto(model).SerializeToString() == before
    assert all(c["rejected"] for c in result.summary["candidates"])


def test_latency_guard_times_at_the_deployment_batch(conv_net, tmp_path):
    path, images = conv_net
    quantizer = QuantizeStatic(
        [{"x": image} for image in images[:8]],
        min_speedup=1000.0,
        latency_runs=2,
        latency_batch=12,
        eval_samples=5,
    )
    result = quantizer.apply(onnxslim.load(path), PassContext(workdir=tmp_path))
    # 12 samples cycled from the 5+ evaluation samples; the guard reports the batch it timed.
    assert result.summary["latency_batch"] == 12


def test_timing_feeds_cycle_samples_and_respect_a_fixed_batch():
    from onnxslim.passes.quantization._latency_guard import timing_feeds as _timing_feeds

    dynamic = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[N, 2] x) => (float[N, 2] y) { y = Relu(x) }'
    )
    fixed = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[3, 2] x) => (float[3, 2] y) { y = Relu(x) }'
    )
    batches = [
        {"x": np.arange(4, dtype=np.float32).reshape(2, 2)},
        {"x": np.full((1, 2), 9, np.float32)},
    ]
    feeds = _timing_feeds(dynamic, batches, 5)["x"]
    np.testing.assert_array_equal(feeds[:, 0], [0, 2, 9, 0, 2])
    assert _timing_feeds(fixed, batches, 5)["x"].shape == (3, 2)
    with pytest.raises(RecipeError, match="latency_batch must be >= 1, got 0"):
        QuantizeStatic(latency_batch=0)


def test_accuracy_guard_keeps_sensitive_layers_in_float(conv_net, tmp_path):
    path, images = conv_net
    model = onnxslim.load(path)
    quantizer = QuantizeStatic(
        [{"x": image} for image in images[:16]],
        latency_guard=False,
        min_sqnr_db=60.0,
        mode="static",
    )
    result = quantizer.apply(model, PassContext(workdir=tmp_path))
    summary = result.summary
    assert summary["sensitivity_db"], "a per-layer sensitivity ranking is reported"
    if result.modified:
        assert summary["fidelity"]["sqnr_db"] >= 60.0
        kept = [r for r in summary["nodes_excluded"].values() if r.startswith("accuracy guard")]
        assert kept
    else:
        assert "accuracy" in summary["fallback"]


def test_wrong_calibration_input_fails_before_work(conv_net, tmp_path):
    path, _ = conv_net
    model = onnxslim.load(path)
    quantizer = QuantizeStatic([{"image": np.zeros((1, 1, 16, 16), np.float32)}])
    with pytest.raises(InputDataError, match="input 'image' is not an input of the model"):
        quantizer.apply(model, PassContext(workdir=tmp_path))
    assert not any((tmp_path / "quantize").glob("*.onnx"))


def test_reader_is_accepted_by_orts_quantize_static(conv_net, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    path, images = conv_net
    reader = onnxslim.inputs.open_reader([{"x": image} for image in images[:4]])
    upgraded = onnx.version_converter.convert_version(onnx.load(str(path)), 13)
    onnx.save(upgraded, str(tmp_path / "in.onnx"))
    quantize_static(
        str(tmp_path / "in.onnx"), str(tmp_path / "out.onnx"), reader, quant_format=QuantFormat.QDQ
    )
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node)
    assert ops["QuantizeLinear"] > 0


@pytest.fixture(scope="module")
def attention_net(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert")
    module = bert_style_encoder(
        vocab_size=50, hidden=32, heads=2, layers=1, intermediate=64, num_classes=4
    )
    ids = torch.randint(0, 50, (1, 8))
    mask = torch.ones(1, 8, dtype=torch.int64)
    path = export_torch(
        module, (ids, mask), folder / "bert.onnx", input_names=["input_ids", "attention_mask"]
    )
    rng = np.random.default_rng(0)
    data = [
        {
            "input_ids": rng.integers(0, 50, (1, 8)).astype(np.int64),
            "attention_mask": np.ones((1, 8), np.int64),
        }
        for _ in range(24)
    ]
    return path, data


def test_attention_net_static_qdq_matmuls_run_in_ort(attention_net, tmp_path):
    path, data = attention_net
    model = onnxslim.load(path)
    result = QuantizeStatic(
        data[:16], method="minmax", mode="static", latency_guard=False, accuracy_guard=False
    ).apply(model, PassContext(workdir=tmp_path))
    assert result.modified
    matmuls = [n for n in model.graph if n.op_type == "MatMul"]
    fed_by_dq = [
        n
        for n in matmuls
        if any(
            i is not None
            and i.producer() is not None
            and i.producer().op_type == "DequantizeLinear"
            for i in n.inputs
        )
    ]
    assert len(fed_by_dq) == len(matmuls) > 0
    reference = onnxslim.create_session(onnxslim.load(path))
    quantized = onnxslim.create_session(model)
    fidelity = onnxslim.compare_outputs(
        [dict(zip(["output"], reference.run(None, feeds))) for feeds in data[16:]],
        [dict(zip(["output"], quantized.run(None, feeds))) for feeds in data[16:]],
    )
    assert fidelity.sqnr_db > 15.0


def test_attention_net_dynamic_mode_quantizes_matmuls(attention_net, tmp_path):
    path, data = attention_net
    model = onnxslim.load(path)
    result = QuantizeStatic(data[:8], mode="dynamic", latency_guard=False).apply(
        model, PassContext(workdir=tmp_path)
    )
    assert result.modified and result.summary["chosen"] == "dynamic MatMul/Gemm"
    ops = _ops(model)
    assert (
        ops["DynamicQuantizeLinear"] > 0
        and (ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"]) > 0
    )
    session = onnxslim.create_session(model)
    out = session.run(None, data[20])[0]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, data[20])[0]
    assert out.shape == ref.shape and onnxslim.sqnr_db(ref, out) > 15.0


def test_options_are_validated():
    with pytest.raises(RecipeError, match="unknown calibration method 'kl'"):
        QuantizeStatic(method="kl")
    with pytest.raises(RecipeError, match="unknown quantization mode 'fast'"):
        QuantizeStatic(mode="fast")
    assert set(QuantizeStatic.options()) >= {
        "calibration",
        "method",
        "exclude",
        "target",
        "min_sqnr_db",
    }


def test_top1_bound_ignores_near_ties_but_catches_clear_flips():
    from onnxslim.fidelity import FidelityBounds, decisive_top1_agreement

    # Row 0: class 1 leads by 0.05% of the range (a tie); row 1: class 0 leads clearly.
    reference = [{"scores": np.array([[0.0, 1.0, 0.9995, 0.2], [3.0, 1.0, 0.0, 0.5]], np.float32)}]
    tie_flipped = [
        {"scores": np.array([[0.0, 0.9995, 1.0, 0.2], [3.0, 1.0, 0.0, 0.5]], np.float32)}
    ]
    clear_flipped = [
        {"scores": np.array([[0.0, 1.0, 0.9995, 0.2], [1.0, 3.0, 0.0, 0.5]], np.float32)}
    ]
    assert decisive_top1_agreement(reference, tie_flipped) == (1.0, 1)
    assert decisive_top1_agreement(reference, clear_flipped) == (0.0, 1)
    bound = FidelityBounds(min_sqnr_db=None, min_top1_agreement=0.95)
    tie = onnxslim.compare_outputs(reference, tie_flipped)
    assert tie.top1_agreement == 0.5 and bound.violations(tie, reference, tie_flipped) == []
    clear = onnxslim.compare_outputs(reference, clear_flipped)
    assert bound.violations(clear, reference, clear_flipped) == [
        "top-1 agreement 0.0% < 95% (on 1 samples with a clear float top-1)"
    ]


def test_statistics_cache_is_keyed_by_sample_limit_and_batching(conv_net, tmp_path):
    path, images = conv_net
    data = tmp_path / "calibration.npz"
    np.savez(data, x=images[:12])
    cache = tmp_path / "cache"

    def calibrate(**options) -> dict:
        quantizer = QuantizeStatic(
            str(data),
            method="minmax",
            moving_average=True,
            cache_dir=str(cache),
            latency_guard=False,
            accuracy_guard=False,
            **options,
        )
        return quantizer.apply(onnxslim.load(path), PassContext()).summary["calibration"]

    assert calibrate(samples=8)["cache_hit"] is False
    assert calibrate(samples=8)["cache_hit"] is True
    assert calibrate(samples=12)["cache_hit"] is False
    assert calibrate(samples=12, batch_size=4)["cache_hit"] is False
    assert calibrate(samples=12, batch_size=4)["cache_hit"] is True
    assert len(list(cache.glob("*.npz"))) == 3


def test_slow_nodes_ranks_time_per_mac_against_the_median():
    from onnxslim.passes.quantization._latency_guard import slow_nodes

    seconds = {"stem": 40e-6, "a": 20e-6, "b": 22e-6, "c": 18e-6, "dw": 9e-6, "untimed_macs": 1.0}
    macs = {"stem": 1e5, "a": 2e6, "b": 2e6, "c": 2e6, "dw": 2e5}
    slow = slow_nodes(seconds, macs, ["stem", "a", "b", "c", "dw", "untimed_macs"])
    # per MAC: stem 4e-10 (36.4x the median, b's 1.1e-11), dw 4.5e-11 (4.1x), a/b/c ~1e-11
    assert list(slow) == ["stem", "dw"]
    assert slow["stem"] == (
        "latency guard: its int8 kernel takes 36.4x the median time per MAC (40 us per run)"
    )
    assert slow_nodes(seconds, macs, ["stem", "a", "b"]) == {}  # too few to have a median


def test_slow_nodes_come_most_time_lost_first():
    from onnxslim.passes.quantization._latency_guard import slow_nodes

    # per MAC "tiny" is the worst (2e-9), but it loses 2 us; the stem (3e-10) loses 29 us
    seconds = {"a": 10e-6, "b": 11e-6, "c": 9e-6, "d": 10e-6, "stem": 30e-6, "tiny": 2e-6}
    macs = {"a": 1e6, "b": 1e6, "c": 1e6, "d": 1e6, "stem": 1e5, "tiny": 1e3}
    assert list(slow_nodes(seconds, macs, list(seconds))) == ["stem", "tiny"]


def test_node_kernel_seconds_names_the_model_nodes(conv_net, tmp_path):
    from onnxslim.runtime import node_kernel_seconds

    path, images = conv_net
    model = onnxslim.load(path)
    QuantizeStatic(
        [{"x": image} for image in images[:8]], latency_guard=False, accuracy_guard=False
    ).apply(model, PassContext(workdir=tmp_path))
    quantized = onnxslim.save(model, tmp_path / "int8.onnx")
    seconds = node_kernel_seconds(quantized, {"x": images[:1]}, runs=3)
    convs = [n.name for n in model.graph if n.op_type == "Conv"]
    # every Conv of the file runs as an integer kernel found under its own name
    assert convs and set(convs) <= set(seconds)
    assert all(value > 0 for value in seconds.values())


def test_accuracy_guard_widens_ranges_a_clipping_method_cut_too_far(tmp_path):
    """On the demo digits net, entropy (KL) thresholds clip the rare large activations of the
    strokes (most of a digit image is blank): 12 dB at the output. The guard widens the most
    clipped ranges back to min/max before keeping layers in float."""
    from onnxslim.data import demo_data, demo_model_path

    images = demo_data()["calibration_images"][:32]
    model = onnxslim.load(demo_model_path())
    quantizer = QuantizeStatic(
        {"image": images}, method="entropy", latency_guard=False, batch_size=4
    )
    summary = quantizer.apply(model, PassContext(workdir=tmp_path)).summary
    chosen = next(c for c in summary["candidates"] if c["chosen"])
    assert chosen["ranges_widened_to_minmax"] > 0 and chosen["extra_float_nodes"] == 0
    assert summary["fidelity"]["sqnr_db"] >= 20.0
    widened = {
        name: entry
        for name, entry in summary["tensors"].items()
        if entry["method"].startswith("minmax (accuracy guard")
    }
    assert len(widened) == chosen["ranges_widened_to_minmax"]
    # a widened range is the tensor's full min/max: wider than entropy's
    stem = widened["/stem/stem.2/Relu_output_0"]["range"]
    assert stem[0] == 0.0 and stem[1] > 5.0


def test_reported_latencies_agree_with_the_reported_speedup(tmp_path):
    """The summary's before/after latencies come from different timing rounds than the
    (conservative) speed-up; the pair printed beside it must not contradict it (the demo once
    printed '0.191 ms -> 0.211 ms (1.06x faster)')."""
    from onnxslim.data import demo_data, demo_model_path

    images = demo_data()["calibration_images"][:32]
    model = onnxslim.load(demo_model_path())
    # any int8 candidate is acceptable here: the check is on how its timing is reported
    quantizer = QuantizeStatic({"image": images}, min_speedup=0.01, latency_runs=3)
    summary = quantizer.apply(model, PassContext(workdir=tmp_path)).summary
    before, after, speedup = (
        summary[k] for k in ("latency_ms_before", "latency_ms_after", "speedup")
    )
    assert speedup > 0 and after == pytest.approx(before / speedup, abs=1.5e-3)


# -- stages -------------------------------------------------------------------------------------
def test_candidate_is_a_frozen_value_with_a_rejection_reason(tmp_path):
    import dataclasses

    from onnxslim.passes.quantization import Candidate, Evaluation, Rejected
    from onnxslim.passes.quantization._summary import candidates_summary

    fidelity = onnxslim.Fidelity(max_abs_error=0.5, mean_abs_error=0.1, sqnr_db=12.0)
    static = Candidate(
        "all quantizable ops",
        ("Conv", "MatMul"),
        tmp_path / "c0.onnx",
        Evaluation(fidelity, ("output SQNR 12.0 dB < 20 dB",)),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        static.label = "changed"  # type: ignore[misc]
    rejected = static.replace(rejected=Rejected("accuracy: output SQNR 12.0 dB < 20 dB"))
    assert (
        static.rejected is None
        and str(rejected.rejected) == "accuracy: output SQNR 12.0 dB < 20 dB"
    )
    on_logits = Evaluation(fidelity, (), logits_sqnr_db=31.5, on_logits=True)
    dynamic = Candidate(
        "dynamic MatMul/Gemm", None, tmp_path / "c1.onnx", on_logits, speedup=1.23456
    )
    assert dynamic.dynamic and not static.dynamic
    assert (on_logits.score, static.evaluation.score) == (31.5, 12.0)
    assert Evaluation(onnxslim.Fidelity(0.0, 0.0, float("nan"))).score == float("-inf")
    summary = candidates_summary([rejected, dynamic], chosen=1)
    assert summary[0]["rejected"] == "accuracy: output SQNR 12.0 dB < 20 dB"
    assert summary[0]["op_types"] == ["Conv", "MatMul"] and not summary[0]["chosen"]
    assert summary[1] == {
        "label": "dynamic MatMul/Gemm",
        "op_types": "dynamic MatMul/Gemm",
        "fidelity": {
            "max_abs_error": 0.5,
            "mean_abs_error": 0.1,
            "sqnr_db": 12.0,
            "top1_agreement": None,
            "samples": 0,
            "logits_sqnr_db": 31.5,
        },
        "speedup": 1.235,
        "speedup_confirmed": None,
        "extra_float_nodes": 0,
        "ranges_widened_to_minmax": 0,
        "chosen": True,
        "rejected": None,
    }


def test_calibrate_only_gives_the_full_pass_ranges(conv_net, tmp_path):
    from onnxslim.calibration import collect_statistics, compute_range
    from onnxslim.inputs import open_reader
    from onnxslim.passes.quantization import calibrate, quantizable_op_types, run_calibration
    from onnxslim.passes.quantization._prepare import prepare
    from onnxslim.passes.quantization._tensors import tensors_to_calibrate

    path, images = conv_net
    data = [{"x": image} for image in images[:16]]
    ranges = calibrate(onnxslim.load(path), data, method="percentile", batch_size=4)
    result = QuantizeStatic(
        data, method="percentile", batch_size=4, latency_guard=False, accuracy_guard=False
    ).apply(onnxslim.load(path), PassContext(workdir=tmp_path / "pass"))
    tensors = result.summary["tensors"]
    assert len(ranges) == len(tensors) == result.summary["calibration"]["tensors"] > 10
    assert {n: [round(lo, 6), round(hi, 6)] for n, (lo, hi) in ranges.items()} == {
        n: entry["range"] for n, entry in tensors.items()
    }
    # ... and exactly what the benchmark computed by hand from the pass's private steps
    (tmp_path / "hand").mkdir()
    prepared = prepare(onnxslim.load(path), tmp_path / "hand")
    names = tensors_to_calibrate(prepared.proto, quantizable_op_types())
    collector = collect_statistics(
        prepared.model, names, open_reader(data, prepared.model, batch_size=4)
    )
    by_hand = {n: compute_range(s, "percentile", levels=255) for n, s in collector.tensors.items()}
    assert ranges == by_hand
    # the statistics behind them, for the benchmark's memory column
    detailed = run_calibration(onnxslim.load(path), data, method="percentile", batch_size=4)
    assert detailed.ranges == ranges and detailed.names == tuple(names)
    assert detailed.summary()["samples"] == 16
    assert detailed.summary()["retained_bytes"] == collector.retained_bytes() > 0
    with pytest.raises(RecipeError, match="unknown calibration method 'kl'"):
        calibrate(onnxslim.load(path), data, method="kl")


def test_ort_compat_names_import_and_build_a_qdq_model_with_keywords():
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer as OrtQDQQuantizer

    from onnxslim.compat import onnxruntime as _ort_compat

    assert _ort_compat.QDQQuantizer is OrtQDQQuantizer
    assert callable(_ort_compat.load_model_with_shape_infer)
    assert (_ort_compat.ORT_QUANTIZATION_DIR / "qdq_quantizer.py").is_file()
    proto = onnx.parser.parse_model(SELECTOR_MODEL)
    for node, name in zip(proto.graph.node, ["first", "second", "relu", "add"]):
        node.name = name
    quantizer = _ort_compat.qdq_quantizer(
        onnx.shape_inference.infer_shapes(proto),
        per_channel=False,
        reduce_range=False,
        weight_type="int8",
        activation_type="uint8",
        ranges={"x": (-1.0, 1.0), "a_mm": (-1.0, 1.0), "b_mm": (-1.0, 1.0)},
        nodes_to_exclude=["second"],
        op_types_to_quantize=["MatMul"],
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    quantizer.quantize_model()
    ops = Counter(n.op_type for n in quantizer.model.model.graph.node)
    # "first" quantized: x and its weight through Q/DQ (the weight shared with "second" too)
    assert (ops["QuantizeLinear"], ops["DequantizeLinear"], ops["MatMul"]) == (2, 3, 2)
    with pytest.raises(RecipeError, match="quantization type 'int4' is not supported"):
        _ort_compat.quant_type("int4")


def test_ort_quantizer_is_silenced_without_touching_the_root_level(caplog):
    from onnxslim.compat.onnxruntime import ORT_QUANTIZATION_DIR
    from onnxslim.passes.quantization._emit import quiet_ort_quantizer

    root = logging.getLogger()
    ort_file = str(ORT_QUANTIZATION_DIR / "qdq_quantizer.py")

    def record(message: str, level: int, pathname: str) -> logging.LogRecord:
        return logging.LogRecord("root", level, pathname, 1, message, None, None)

    with caplog.at_level(logging.INFO):
        level = root.level
        with quiet_ort_quantizer():
            assert root.level == level
            root.handle(record("ORT bias warning", logging.WARNING, ort_file))
            root.handle(record("ORT failure", logging.ERROR, ort_file))
            root.handle(record("our warning", logging.WARNING, __file__))
            logging.getLogger("onnxslim.passes.quantization").warning("pass warning")
        root.handle(record("ORT after", logging.WARNING, ort_file))
    assert [r.getMessage() for r in caplog.records] == [
        "ORT failure",
        "our warning",
        "pass warning",
        "ORT after",
    ]


def test_a_batch_dim_declared_minus_one_is_timed_at_the_deployment_batch():
    from onnx import TensorProto, helper

    from onnxslim.inputs import fixed_batch
    from onnxslim.passes.quantization._latency_guard import timing_feeds

    # Paddle exports declare a dynamic batch as -1 (it used to be timed as an empty 0 x 2 batch)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "paddle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 2])],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert model.graph.inputs[0].shape[0] == -1 and fixed_batch(model, "x") == 0
    batches = [{"x": np.arange(6, dtype=np.float32).reshape(3, 2)}]
    feeds = timing_feeds(model, batches, 1)["x"]
    np.testing.assert_array_equal(feeds, [[0, 1]])
    assert timing_feeds(model, batches, 4)["x"].shape == (4, 2)


def _relu_models(folder) -> list:
    paths = []
    for index, op in enumerate(("Relu", "Sigmoid", "Tanh")):
        model = onnx.parser.parse_model(
            f'<ir_version: 8, opset_import: ["" : 17]> g (float[2, 8] x) => (float[2, 8] y) '
            f"{{ y = {op}(x) }}"
        )
        paths.append(folder / f"m{index}.onnx")
        onnx.save(model, str(paths[-1]))
    return paths


def test_latency_guard_timer_runs_interleaved_rounds_on_real_sessions(tmp_path):
    """Pinned before the guard moved onto onnxslim.runtime's timer: same rotation of the run
    order (round r starts at model r mod n), one figure per model, any quantile."""
    from onnxslim.passes.quantization import interleaved_latency
    from onnxslim.runtime import rotation

    for count in (1, 2, 3, 4):
        order = list(range(count))
        for round_index in range(8):
            shift = round_index % count  # the guard's own rotation before the move
            assert rotation(round_index, count) == order[shift:] + order[:shift]
    paths = _relu_models(tmp_path)
    feeds = {"x": np.ones((2, 8), np.float32)}
    for quantile in (0.5, 0.25):
        latencies = interleaved_latency(paths, feeds, runs=3, warmup=1, quantile=quantile)
        assert len(latencies) == 3 and all(isinstance(s, float) and s > 0 for s in latencies)
    assert len(interleaved_latency(paths[:2], feeds, runs=1, warmup=0, min_block_s=0.0)) == 2


def test_declared_options_keep_the_keyword_api(tmp_path):
    from onnxslim.options import check_value, option_specs
    from onnxslim.passes.quantization import QuantizeOptions

    quantizer = QuantizeStatic("calibration.npz", method="entropy", exclude=("op:Add",))
    assert (quantizer.calibration, quantizer.method, quantizer.exclude) == (
        "calibration.npz",
        "entropy",
        ["op:Add"],
    )
    assert quantizer.settings == QuantizeOptions(
        calibration="calibration.npz", method="entropy", exclude=["op:Add"]
    )
    assert QuantizeStatic(calibration="random").calibration == "random"
    assert QuantizeStatic(QuantizeOptions(latency_batch=4)).latency_batch == 4
    assert QuantizeStatic().config()["exclude"] == [] and QuantizeStatic().min_top1 == 0.95
    bound = QuantizeStatic(min_top1=0.5).bound()
    assert (bound.min_sqnr_db, bound.min_top1_agreement) == (20.0, 0.5)
    assert not QuantizeStatic(accuracy_guard=False).bound().enabled
    specs = option_specs(QuantizeStatic)
    assert list(specs) == [f.name for f in dataclasses.fields(QuantizeOptions)]
    assert specs["latency_batch"].default == 1 and specs["latency_batch"].annotation is int
    with pytest.raises(RecipeError) as error:
        check_value("quantize", specs["exclude"], "conv1")
    assert str(error.value) == (
        "option 'exclude' of pass 'quantize' expects NoneType/a list of str, got str 'conv1'."
    )
    with pytest.raises(RecipeError) as error:
        check_value("quantize", specs["method"], "kl")
    assert str(error.value) == (
        "option 'method' of pass 'quantize' expects one of 'minmax', 'percentile', 'entropy', "
        "'mse', got str 'kl'."
    )


def test_summaries_keep_non_finite_floats_and_the_report_encodes_them(tmp_path):
    from onnxslim._json import json_safe
    from onnxslim.passes.quantization import Candidate, Evaluation
    from onnxslim.passes.quantization._summary import candidates_summary, tensors_summary

    fidelity = onnxslim.Fidelity(max_abs_error=0.0, mean_abs_error=0.0, sqnr_db=float("inf"))
    exact = Candidate(
        "exact",
        ("Conv",),
        tmp_path / "c.onnx",
        Evaluation(fidelity, (), logits_sqnr_db=float("inf"), on_logits=True),
    )
    entry = candidates_summary([exact], chosen=0)[0]["fidelity"]
    assert entry["sqnr_db"] == entry["logits_sqnr_db"] == float("inf")
    assert json_safe(entry)["sqnr_db"] == json_safe(entry)["logits_sqnr_db"] == "inf"
    tensors = tensors_summary(
        {"a": (0.0, 1.0), "b": (-1.0, 1.0)},
        {"a": (0.0, 1.0), "b": (-1.0, 1.0)},
        "percentile",
        {"a": float("inf"), "b": 31.4159},
    )
    assert (tensors["a"]["sqnr_db"], tensors["b"]["sqnr_db"]) == (float("inf"), 31.42)
    assert json_safe(tensors)["a"] == {
        "range": [0.0, 1.0],
        "method": "percentile",
        "sqnr_db": "inf",
    }


def _matmul_softmax(folder, quantized: bool):
    from onnx import TensorProto, helper, numpy_helper

    weight = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"], name="mm")]
    initializers = [numpy_helper.from_array(weight, "w")]
    logits = "t"
    if quantized:
        logits = "t_DequantizeLinear_Output"
        nodes += [
            helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"], name="q"),
            helper.make_node("DequantizeLinear", ["tq", "s", "z"], [logits], name="dq"),
        ]
        initializers += [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
        ]
    nodes.append(helper.make_node("Softmax", [logits], ["y"], name="softmax"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / ("quantized.onnx" if quantized else "float.onnx")
    onnx.save(model, str(path))
    return path, weight


def test_guards_read_dequantized_values_through_one_probe(tmp_path):
    """Pinned before the guards moved onto onnxslim.model's ValueProbe."""
    from onnxslim.passes.quantization import layer_sensitivity
    from onnxslim.passes.quantization._accuracy_guard import output_logits, run_with_logits

    float_path, weight = _matmul_softmax(tmp_path, quantized=False)
    quantized_path, _ = _matmul_softmax(tmp_path, quantized=True)
    batches = [{"x": np.linspace(-2.0, 2.0, 8, dtype=np.float32).reshape(2, 4) * k} for k in (1, 3)]
    t = [b["x"].astype(np.float64) @ weight.astype(np.float64) for b in batches]
    dq = [(np.clip(np.round(v / 0.05) + 128, 0, 255) - 128) * 0.05 for v in t]
    signal = sum(float(np.sum(v * v)) for v in t)
    noise = sum(float(np.sum((v - d) ** 2)) for v, d in zip(t, dq))
    expected = 10.0 * np.log10(signal / noise)
    float_model = onnxslim.load(float_path)
    assert output_logits(float_model) == {"y": "t"}
    losses, sqnr = layer_sensitivity(float_model, quantized_path, {"mm": "t"}, batches)
    assert list(sqnr) == ["t"] and sqnr["t"] == pytest.approx(expected, rel=1e-5)
    assert losses == {"mm": pytest.approx(100.0 - expected, rel=1e-5)}
    for path, values in ((float_path, t), (quantized_path, dq)):
        outputs = run_with_logits(path, batches, {"y": "t"})
        assert [list(o) for o in outputs] == [["y"], ["y"]]
        for got, want in zip(outputs, values):
            np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-6)
    plain = run_with_logits(float_path, batches, {})
    np.testing.assert_allclose(plain[0]["y"].sum(-1), [1.0, 1.0], rtol=1e-6)


def test_excluded_node_verdicts_use_the_engine_integer_ops():
    from onnx import helper

    from onnxslim.passes.quantization._summary import float_nodes_after_optimization

    graph = helper.make_graph(
        [
            helper.make_node("QLinearConv", ["a"], ["b"], name="conv"),
            # onnxslim.model.INTEGER_OPS has it (the guard's own copy did not: it said "float")
            helper.make_node(
                "QLinearConvTranspose", ["b"], ["c"], name="up", domain="com.microsoft"
            ),
            helper.make_node("Conv", ["c"], ["d"], name="head"),
        ],
        "ort",
        [],
        [],
    )
    assert float_nodes_after_optimization(graph, ["conv", "up", "head", "gone"]) == {
        "conv": "QLinearConv",
        "up": "QLinearConvTranspose",
        "head": "float",
        "gone": "fused or renamed",
    }
