"""The indexed ORT quantizer (onnxslim/compat/onnxruntime_qdq.py) emits byte for byte what ORT's
own QDQQuantizer emits, across the candidates of one run sharing a weight cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim.compat.onnxruntime import WeightCache, qdq_quantizer
from onnxslim.passes.quantization._calibrate import calibrate
from onnxslim.passes.quantization._emit import (
    Emitter,
    emit_qdq,
    qdq_settings,
    quiet_ort_quantizer,
)
from onnxslim.passes.quantization._prepare import prepare
from onnxslim.passes.quantization._profiles import TargetProfile
from onnxslim.passes.quantization._tensors import tensors_to_calibrate
from onnxslim.testing import ppocr_model_path

RNG = np.random.default_rng(0)


def _init(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def conv_model() -> onnx.ModelProto:
    """Conv(+bias) -> Relu, whose output two Convs read (one weight shared) and a graph output
    is; Add of both; a Mul by a constant; GlobalAveragePool."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r1", "w2"], ["c3"], "conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "c3"], ["a"], "add"),
        helper.make_node("Mul", ["a", "k"], ["m"], "mul"),
        helper.make_node("GlobalAveragePool", ["m"], ["y"], "pool"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1]),
            helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 4, 8, 8]),
        ],
        [
            _init("w1", 4, 3, 3, 3),
            _init("b1", 4),
            _init("w2", 4, 4, 3, 3),
            _init("b2", 4),
            _init("k", 1, 4, 1, 1),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def matmul_model() -> onnx.ModelProto:
    """MatMul + Add bias -> Relu -> Gemm (transB) -> MatMul by an activation (x @ h^T)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["mm"], "matmul1"),
        helper.make_node("Add", ["mm", "b1"], ["h0"], "bias1"),
        helper.make_node("Relu", ["h0"], ["h"], "relu"),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["g"], "gemm", transB=1),
        helper.make_node("Transpose", ["h"], ["ht"], "transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["g", "w3"], ["g3"], "matmul2"),
        helper.make_node("MatMul", ["g3", "ht"], ["y"], "matmul3"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [
            _init("w1", 16, 32),
            _init("b1", 32),
            _init("w2", 8, 32),
            _init("b2", 8),
            _init("w3", 8, 32),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _profile(**changes) -> TargetProfile:
    base = TargetProfile(
        "cpu",
        activation_type="uint8",
        weight_type="int8",
        per_channel=True,
        reduce_range=False,
        activation_symmetric=False,
        weight_symmetric=True,
        providers=("CPUExecutionProvider",),
    )
    return dataclasses.replace(base, **changes)


PROFILES = [
    _profile(),
    _profile(per_channel=False),
    _profile(reduce_range=True),
    _profile(activation_type="int8", activation_symmetric=True),
    _profile(weight_type="uint8", weight_symmetric=False, per_channel=False),
]


def _prepared(proto: onnx.ModelProto, tmp_path: Path, samples: int = 8):
    model = ir.from_proto(proto)
    prepared = prepare(model, tmp_path)
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    data = {"x": RNG.standard_normal([samples, *shape[1:]]).astype(np.float32)}
    if shape[0] != 1:  # a fixed leading dimension: one sample per feed
        data = [{"x": RNG.standard_normal(shape).astype(np.float32)} for _ in range(samples)]
    ranges = calibrate(model, data, method="minmax")
    return prepared, ranges


def _ort_bytes(prepared_path: Path, output: Path, ranges, op_types, excluded, profile) -> bytes:
    """ORT's own QDQQuantizer, unindexed, on a fresh shape-inferred copy."""
    from onnxslim.compat.onnxruntime import shape_inferred_proto

    quantizer = qdq_quantizer(
        shape_inferred_proto(prepared_path),
        **qdq_settings(profile, ranges, excluded, op_types),
        indexed=False,
    )
    assert type(quantizer).__name__ == "QDQQuantizer"
    with quiet_ort_quantizer():
        quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(output), False)
    return output.read_bytes()


CONV_CANDIDATES = [
    ("all", ["Conv", "Relu", "Add", "Mul", "GlobalAveragePool"], []),
    ("conv only", ["Conv"], []),
    ("conv3 in float", ["Conv", "Relu", "Add", "Mul"], ["conv3"]),
    ("all again", ["Conv", "Relu", "Add", "Mul", "GlobalAveragePool"], []),
]
MATMUL_CANDIDATES = [
    ("all", ["MatMul", "Gemm", "Add", "Relu", "Transpose"], []),
    ("matmul/gemm", ["MatMul", "Gemm"], []),
    ("gemm in float", ["MatMul", "Add"], ["gemm"]),
    ("all again", ["MatMul", "Gemm", "Add", "Relu", "Transpose"], []),
]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: f"{p.weight_type}-pc{p.per_channel}")
@pytest.mark.parametrize(
    "build, candidates",
    [(conv_model, CONV_CANDIDATES), (matmul_model, MATMUL_CANDIDATES)],
    ids=["conv", "matmul"],
)
def test_emitter_files_are_ort_quantizer_bytes(tmp_path, build, candidates, profile):
    prepared, ranges = _prepared(build(), tmp_path)
    emitter = Emitter(prepared.path, tmp_path, profile, ranges)
    for label, op_types, excluded in candidates:
        ours = emitter.emit(label, op_types, excluded).read_bytes()
        reference = _ort_bytes(
            prepared.path, tmp_path / "reference.onnx", ranges, op_types, excluded, profile
        )
        assert ours == reference, label
        assert b"DequantizeLinear" in ours
    cache = emitter.weight_cache
    # every weight's scales were computed by the first candidate that quantized it, then reused
    assert cache.misses == len({key[0] for key in cache.params})
    assert cache.hits > 0
    assert cache.quantized  # the int8 copies are kept for the next candidates


def test_weight_cache_serves_only_equal_weights(tmp_path):
    """Two models with a weight of the same name and other values: the cache keys on bytes."""
    profile = _profile()
    first = conv_model()
    second = onnx.ModelProto()
    second.CopyFrom(first)
    second.graph.initializer[0].CopyFrom(_init("w1", 4, 3, 3, 3))
    cache = WeightCache()
    for index, proto in enumerate([first, second]):
        folder = tmp_path / str(index)
        folder.mkdir()
        prepared, ranges = _prepared(proto, folder)
        ops = ["Conv", "Relu"]
        output = folder / "ours.onnx"
        from onnxslim.compat.onnxruntime import shape_inferred_proto

        emit_qdq(
            shape_inferred_proto(prepared.path),
            output,
            ranges,
            ops,
            [],
            profile,
            external_data=False,
            weight_cache=cache,
        )
        reference = _ort_bytes(prepared.path, folder / "ref.onnx", ranges, ops, [], profile)
        assert output.read_bytes() == reference
    # w2 (equal in both) was served; w1 (other values) computed twice
    names = sorted(key[0] for key in cache.params)
    assert names == ["w1", "w1", "w2"]
    assert cache.hits == 1


def test_quantized_model_runs_like_ort_reference(tmp_path):
    """The emitted model is a working model: ORT runs it, outputs equal the reference's."""
    profile = _profile()
    prepared, ranges = _prepared(conv_model(), tmp_path)
    emitter = Emitter(prepared.path, tmp_path, profile, ranges)
    ops = ["Conv", "Relu", "Add", "Mul", "GlobalAveragePool"]
    emitter.emit("warm", ops, [])
    ours = emitter.emit("second", ops, [])
    reference = tmp_path / "reference.onnx"
    _ort_bytes(prepared.path, reference, ranges, ops, [], profile)
    feed = {"x": RNG.standard_normal([1, 3, 8, 8]).astype(np.float32)}
    got = ort.InferenceSession(str(ours), providers=["CPUExecutionProvider"]).run(None, feed)
    want = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(None, feed)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(ppocr_model_path("cls") is None, reason="rapidocr's PP-OCR models")
def test_ppocr_cls_candidates_are_ort_quantizer_bytes(tmp_path):
    path = ppocr_model_path("cls")
    model = onnxslim.load(path)
    prepared = prepare(model, tmp_path)
    ops = ["Conv", "Relu", "Add", "Mul", "HardSigmoid", "GlobalAveragePool"]
    names = tensors_to_calibrate(prepared.proto, ops)
    assert names
    data = {"x": RNG.uniform(-1, 1, [4, 3, 48, 192]).astype(np.float32)}
    ranges = calibrate(model, data, method="minmax")
    emitter = Emitter(prepared.path, tmp_path, _profile(), ranges)
    convs = [n.name for n in prepared.proto.graph.node if n.op_type == "Conv"]
    for label, op_types, excluded in [
        ("all", ops, []),
        ("convs", ["Conv"], []),
        ("two convs in float", ops, convs[:2]),
    ]:
        ours = emitter.emit(label, op_types, excluded).read_bytes()
        reference = _ort_bytes(
            prepared.path, tmp_path / "reference.onnx", ranges, op_types, excluded, _profile()
        )
        assert ours == reference, label
    assert emitter.weight_cache.hits >= len(convs)


def test_int8_copies_beyond_the_budget_are_quantized_again(tmp_path):
    """A cache with no room for int8 copies keeps only scales; the files stay ORT's bytes."""
    profile = _profile()
    prepared, ranges = _prepared(conv_model(), tmp_path)
    emitter = Emitter(prepared.path, tmp_path, profile, ranges)
    emitter.weight_cache = WeightCache(max_quantized_bytes=0)
    ops = ["Conv", "Relu"]
    for label in ("first", "second"):
        ours = emitter.emit(label, ops, []).read_bytes()
        assert ours == _ort_bytes(prepared.path, tmp_path / "ref.onnx", ranges, ops, [], profile)
    assert emitter.weight_cache.quantized == {}
    assert emitter.weight_cache.quantized_bytes == 0
    assert emitter.weight_cache.hits == 2  # w1 and w2's scales, served to the second candidate
