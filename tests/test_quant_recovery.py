"""Accuracy recovery: bias correction, cross-layer equalization and SmoothQuant, each on a case
with a known answer, and wired into QuantizeStatic as measured candidates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import PassContext, RecipeError
from onnxslim.passes.quantization import QuantizeStatic
from onnxslim.passes.quantization._bias_correction import (
    bias_shifts,
    fold_bias_shifts,
    shifted_means,
)
from onnxslim.passes.quantization._emit import emit_qdq
from onnxslim.passes.quantization._equalize import equalization_pairs, equalize
from onnxslim.passes.quantization._profiles import target_profile
from onnxslim.passes.quantization._smoothquant import smooth, smoothing_targets


def _model(nodes, inputs, outputs, initializers, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        [
            numpy_helper.from_array(np.asarray(a, dtype=np.float32), n)
            for n, a in initializers.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto | Path, feeds: dict) -> list[np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def _sqnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = np.sum((reference - candidate) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / noise))


# -- bias correction -------------------------------------------------------------------------


def _matmul_add(rng: np.random.Generator) -> onnx.ModelProto:
    weight = rng.normal(size=(8, 6)) * 0.05
    weight[0, 0] = 1.0  # one large weight: a coarse per-tensor int8 step for the rest
    return _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "b"], ["y"], name="add"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        {"w": weight, "b": rng.normal(size=6)},
    )


def _emit(proto: onnx.ModelProto, path: Path, ranges: dict, op_types: list[str]) -> Path:
    profile = dataclasses.replace(
        target_profile("cpu"),
        per_channel=False,
        activation_type="uint8",
        activation_symmetric=False,
        weight_type="int8",
        weight_symmetric=True,
        reduce_range=False,
    )
    copy = onnx.ModelProto()
    copy.CopyFrom(onnx.shape_inference.infer_shapes(proto))
    return emit_qdq(copy, path, ranges, op_types, [], profile, external_data=False)


def test_bias_correction_restores_the_shifted_mean_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    proto = _matmul_add(rng)
    # integer inputs over [0, 255] with the range [0, 255]: uint8 represents them exactly, so
    # the int8 model's mean shift is the weight error's alone: (W - W_int8) E[x]
    batches = [{"x": rng.integers(0, 256, size=(16, 8)).astype(np.float32)} for _ in range(4)]
    batches[0]["x"][0] = [0, 255, 0, 255, 0, 255, 0, 255]
    ranges = {"x": (0.0, 255.0), "m": (-400.0, 400.0)}
    qdq = _emit(proto, tmp_path / "qdq.onnx", ranges, ["MatMul"])
    # the layer's int8 output: MatMul "m" before it is requantized for the Add
    float_means = shifted_means([_run(_exposed(proto, "m"), b)[1] for b in batches], -1)
    int8_means = shifted_means([_run(_exposed(qdq, "m"), b)[-1] for b in batches], -1)
    assert np.abs(float_means - int8_means).max() > 0.05  # a visible shift to restore

    shifts = bias_shifts(qdq, proto, batches)
    assert list(shifts) == ["mm"]
    initializers = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(qdq)).graph.initializer}
    weight = numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    error = weight - initializers["w_quantized"].astype(np.float64) * initializers["w_scale"]
    mean_x = np.concatenate([b["x"] for b in batches]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(shifts["mm"], mean_x @ error, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shifts["mm"], float_means - int8_means, rtol=1e-5, atol=1e-5)

    corrected = fold_bias_shifts(proto, shifts)
    np.testing.assert_allclose(
        numpy_helper.to_array(corrected.graph.initializer[1]),
        numpy_helper.to_array(proto.graph.initializer[1]) + shifts["mm"],
        rtol=0,
        atol=1e-6,
    )
    fixed = _emit(corrected, tmp_path / "fixed.onnx", ranges, ["MatMul"])
    fixed_y = shifted_means([_run(fixed, b)[0] for b in batches], -1)
    float_y = shifted_means([_run(proto, b)[0] for b in batches], -1)
    int8_y = shifted_means([_run(qdq, b)[0] for b in batches], -1)
    # the Add's output: the shift is gone up to the mean rounding of the requantized m
    # (its step is 800 / 255); before, it was the weight error's
    np.testing.assert_allclose(fixed_y, float_y, rtol=0, atol=0.3)
    np.testing.assert_allclose(int8_y - float_y, -shifts["mm"], rtol=0, atol=0.3)
    assert np.abs(fixed_y - float_y).max() < np.abs(int8_y - float_y).max() / 4


def test_bias_correction_adds_a_conv_bias_within_half_an_int32_step(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    weight = rng.normal(size=(4, 3, 1, 1)) * 0.05
    weight[0, 0] = 1.0
    proto = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 4, 4, 4])],
        {"w": weight},
        opset=13,
    )
    batches = [{"x": rng.integers(0, 256, size=(4, 3, 4, 4)).astype(np.float32)} for _ in range(2)]
    ranges = {"x": (0.0, 255.0), "c": (-400.0, 400.0)}
    qdq = _emit(proto, tmp_path / "qdq.onnx", ranges, ["Conv"])
    shifts = bias_shifts(qdq, proto, batches)
    initializers = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(qdq)).graph.initializer}
    error = weight[:, :, 0, 0] - initializers["w_quantized"][:, :, 0, 0] * initializers["w_scale"]
    mean_x = np.concatenate([b["x"] for b in batches]).astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(shifts["conv"], error @ mean_x, rtol=1e-5, atol=1e-5)
    corrected = fold_bias_shifts(proto, shifts)
    assert list(corrected.graph.node[0].input) == ["x", "w", "conv_bias"]  # a bias was added
    fixed = _emit(corrected, tmp_path / "fixed.onnx", ranges, ["Conv"])
    float_means = shifted_means([_run(proto, b)[0] for b in batches], 1)
    # the Conv's own output, before requantization; its bias is int32 with step s_x * s_w
    # (the graph output "c" is the requantized value: ORT renamed the Conv's own output)
    own = next(n.output[0] for n in onnx.load(str(fixed)).graph.node if n.name == "conv")
    assert own != "c"
    fixed_means = shifted_means([_run(_exposed(fixed, own), b)[-1] for b in batches], 1)
    step = 1.0 * float(initializers["w_scale"])
    assert np.abs(fixed_means - float_means).max() <= step / 2 + 1e-4
    assert np.abs(shifts["conv"]).max() > 10 * step


def _exposed(model: onnx.ModelProto | Path, name: str) -> onnx.ModelProto:
    proto = onnx.load(str(model)) if isinstance(model, Path) else onnx.ModelProto()
    if isinstance(model, onnx.ModelProto):
        proto.CopyFrom(model)
    proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return proto


def _conv_relu_depthwise(rng: np.random.Generator) -> onnx.ModelProto:
    first = (
        rng.normal(size=(8, 3, 3, 3))
        * np.array([20, 0.05, 1, 3, 0.2, 8, 0.5, 1])[:, None, None, None]
    )
    second = (
        rng.normal(size=(8, 1, 3, 3))
        * np.array([0.01, 5, 1, 0.3, 4, 0.1, 2, 1])[:, None, None, None]
    )
    return _model(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="pw", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r"], name="relu"),
            helper.make_node(
                "Conv", ["r", "w2", "b2"], ["y"], name="dw", group=8, pads=[1, 1, 1, 1]
            ),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        {"w1": first, "b1": rng.normal(size=8) * 0.1, "w2": second, "b2": rng.normal(size=8)},
    )


def test_equalization_keeps_outputs_and_equalizes_ranges() -> None:
    rng = np.random.default_rng(1)
    proto = _conv_relu_depthwise(rng)
    pairs = equalization_pairs(proto)
    assert [(p.first.name, p.second.name, p.depthwise) for p in pairs] == [("pw", "dw", True)]
    before = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    r1 = np.abs(before["w1"]).reshape(8, -1).max(axis=1)
    r2 = np.abs(before["w2"]).reshape(8, -1).max(axis=1)
    feeds = {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)}
    reference = _run(proto, feeds)[0]
    equalized = onnx.ModelProto()
    equalized.CopyFrom(proto)
    assert equalize(equalized) == 1
    after = {t.name: numpy_helper.to_array(t) for t in equalized.graph.initializer}
    # the known answer: both ranges become sqrt(r1 r2) per channel
    np.testing.assert_allclose(
        np.abs(after["w1"]).reshape(8, -1).max(axis=1), np.sqrt(r1 * r2), rtol=1e-6
    )
    np.testing.assert_allclose(
        np.abs(after["w2"]).reshape(8, -1).max(axis=1), np.sqrt(r1 * r2), rtol=1e-6
    )
    np.testing.assert_allclose(after["b1"], before["b1"] / np.sqrt(r1 / r2), rtol=1e-6)
    output = _run(equalized, feeds)[0]
    assert np.abs(output - reference).max() <= 1e-5 * max(1.0, np.abs(reference).max())


def test_equalization_skips_relu6_and_shared_outputs() -> None:
    rng = np.random.default_rng(2)
    proto = _conv_relu_depthwise(rng)
    proto.graph.node[1].op_type = "Relu"
    relu6 = onnx.ModelProto()
    relu6.CopyFrom(proto)
    relu6.graph.node[1].CopyFrom(helper.make_node("Clip", ["c1", "lo", "hi"], ["r"], name="relu6"))
    relu6.graph.initializer.extend(
        [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    )
    assert equalization_pairs(relu6) == []  # ReLU6(x / s) != ReLU6(x) / s
    shared = onnx.ModelProto()
    shared.CopyFrom(proto)
    shared.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, None))
    assert equalization_pairs(shared) == []


# -- SmoothQuant -----------------------------------------------------------------------------


def _layernorm_matmul(rng: np.random.Generator) -> onnx.ModelProto:
    gamma = np.ones(16)
    gamma[3] = 60.0  # an outlier channel, as in transformer LayerNorm outputs
    weight = rng.normal(size=(16, 12)) * 0.2
    weight[3] *= 0.02  # the output rests on the ordinary channels int8 then starves
    return _model(
        [
            helper.make_node("LayerNormalization", ["x", "g", "beta"], ["n"], name="ln", axis=-1),
            helper.make_node("MatMul", ["n", "w"], ["y"], name="mm"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        {"g": gamma, "beta": rng.normal(size=16) * 0.1, "w": weight},
    )


def _channel_max(proto: onnx.ModelProto, batches: list[dict]) -> dict[str, np.ndarray]:
    extended = onnx.ModelProto()
    extended.CopyFrom(proto)
    extended.graph.output.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, None))
    values = np.concatenate([_run(extended, b)[1] for b in batches])
    return {"n": np.abs(values).max(axis=0)}


def test_smoothquant_is_exact_in_float_and_improves_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    proto = _layernorm_matmul(rng)
    batches = [{"x": rng.normal(size=(32, 16)).astype(np.float32)} for _ in range(2)]
    assert list(smoothing_targets(proto)) == ["n"]
    maxima = _channel_max(proto, batches)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(proto)
    assert smooth(smoothed, maxima, 0.5) == ["n"]
    assert [n.op_type for n in smoothed.graph.node] == ["LayerNormalization", "MatMul"]  # folded
    feeds = batches[0]
    reference = _run(proto, feeds)[0]
    np.testing.assert_allclose(_run(smoothed, feeds)[0], reference, rtol=1e-5, atol=1e-4)

    def int8_sqnr(model: onnx.ModelProto, name: str) -> float:
        channel = _channel_max(model, batches)["n"].max()
        out = np.abs(reference).max() * 1.2
        path = _emit(
            model,
            tmp_path / f"{name}.onnx",
            {"n": (-channel, channel), "y": (-out, out)},
            ["MatMul"],
        )
        return _sqnr(reference, _run(path, feeds)[0])

    plain, improved = int8_sqnr(proto, "plain"), int8_sqnr(smoothed, "smoothed")
    assert improved > plain + 6.0, (plain, improved)


def test_smoothquant_inserts_an_explicit_mul_without_a_foldable_producer() -> None:
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(16, 4))
    proto = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        {"w": weight},
    )
    maxima = np.ones(16)
    maxima[5] = 40.0
    assert smooth(proto, {"x": maxima}, 0.5) == ["x"]
    assert [n.op_type for n in proto.graph.node] == ["Mul", "MatMul"]
    feeds = {"x": rng.normal(size=(3, 16)).astype(np.float32)}
    np.testing.assert_allclose(_run(proto, feeds)[0], feeds["x"] @ weight, rtol=1e-5, atol=1e-5)


def test_smoothquant_folds_into_a_scalar_mul_and_the_model_still_infers_shapes() -> None:
    # BERT's attention scaling: X = A * 0.125 with the scalar's rank-0 shape in value_info;
    # folding per-channel scales makes it rank 1, and shape inference must not see the old rank
    rng = np.random.default_rng(6)
    weight = rng.normal(size=(16, 4))
    proto = _model(
        [
            helper.make_node("Mul", ["a", "c"], ["x"], name="scale"),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        {"c": np.array(0.125), "w": weight},
    )
    proto.graph.value_info.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, []))
    maxima = np.ones(16)
    maxima[5] = 40.0
    assert smooth(proto, {"x": maxima}, 0.5) == ["x"]
    assert [n.op_type for n in proto.graph.node] == ["Mul", "MatMul"]  # folded, no extra Mul
    assert [v.name for v in proto.graph.value_info] == []
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    feeds = {"a": rng.normal(size=(3, 16)).astype(np.float32)}
    np.testing.assert_allclose(
        _run(proto, feeds)[0], feeds["a"] * 0.125 @ weight, rtol=1e-5, atol=1e-5
    )


# -- wired into QuantizeStatic ---------------------------------------------------------------


def test_quantize_tries_recovery_when_the_bound_fails(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    proto = _layernorm_matmul(rng)
    data = {"x": rng.normal(size=(40, 16)).astype(np.float32)}
    np.savez(tmp_path / "data.npz", **data)
    model = ir.from_proto(proto)
    quantize = QuantizeStatic(
        str(tmp_path / "data.npz"),
        method="minmax",
        latency_guard=False,
        min_sqnr_db=60.0,  # int8 cannot reach it: every recovery is tried
        min_top1=None,
        mode="static",
        per_channel=False,
    )
    work = tmp_path / "work"
    work.mkdir()
    report = quantize.apply(model, PassContext(workdir=work)).summary["recovery"]
    assert report["triggered_by"] == "bound failed"
    assert report["equalize"] == {"skipped": "no Conv -> ReLU -> Conv pairs"}
    assert report["smooth_quant"]["tensors"] == ["n"]
    assert report["smooth_quant"]["score_db"] > report["smooth_quant"]["score_db_before"]
    assert report["base"]["candidate"] == "only Conv/MatMul/Gemm"
    assert report["smooth_quant"]["score_db_before"] == report["base"]["score_db"]
    assert report["smooth_quant"]["accurate"] is False
    assert report["bias_correction"] == {"skipped": "no Conv/Gemm/MatMul+Add with int8 weights"}
    assert "qat" not in report  # qat_epochs 0: off


def test_recovery_options_are_checked_before_any_work() -> None:
    with pytest.raises(RecipeError, match=r"smooth_quant_alpha must be in \[0, 1\], got 1.5"):
        QuantizeStatic("random", smooth_quant_alpha=1.5)
    with pytest.raises(RecipeError, match="qat_epochs must be >= 0 and qat_lr > 0, got -1"):
        QuantizeStatic("random", qat_epochs=-1)
