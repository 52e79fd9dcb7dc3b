"""QAT-KD: torch QuantizeLinear/DequantizeLinear kernels (straight-through), the fake-quant
student of a QDQ model, and quantization-aware distillation inside QuantizeStatic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxslim import PassContext
from onnxslim.passes.quantization import QuantizeStatic
from onnxslim.passes.quantization._qat import fake_quant_model, requantize
from onnxslim.torch_bridge import OnnxModule


def _init(name: str, array, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), name)


def _unoptimized(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, feeds)


def _qdq_conv(rng: np.random.Generator) -> onnx.ModelProto:
    """x -> Q/DQ (uint8) -> Conv with per-channel int8 weights and an int32 bias."""
    weight_scale = np.array([0.01, 0.02, 0.005, 0.04], dtype=np.float32)
    codes = rng.integers(-127, 128, size=(4, 2, 3, 3))
    bias_scale = 0.05 * weight_scale
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_quantized", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b_quantized", "bs", "bz"], ["bd"], axis=0),
        helper.make_node(
            "Conv", ["xd", "wd", "bd"], ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [
            _init("xs", 0.05),
            _init("xz", 128, np.uint8),
            _init("w_quantized", codes, np.int8),
            _init("ws", weight_scale),
            _init("wz", np.zeros(4), np.int8),
            _init("b_quantized", rng.integers(-500, 500, size=4), np.int32),
            _init("bs", bias_scale),
            _init("bz", np.zeros(4), np.int32),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_torch_qdq_kernels_match_ort() -> None:
    rng = np.random.default_rng(0)
    model = _qdq_conv(rng)
    feeds = {"x": (rng.normal(size=(2, 2, 6, 6)) * 4).astype(np.float32)}  # some clip at 255
    expected = _unoptimized(model, feeds)[0]
    module = OnnxModule(ir.from_proto(model))
    assert module.parameter_names() == {"ws": "ws", "bs": "bs"}  # per-channel scales are floats
    found = module(**feeds)["y"].detach().numpy()
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-5)  # float32 sums


def test_fake_quant_gradients_pass_straight_through_inside_the_range() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "fq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
        [_init("s", 0.5), _init("z", 0, np.int8)],
    )
    module = OnnxModule(ir.from_proto(helper.make_model(graph)))
    x = torch.tensor([-70.0, -1.26, 0.25, 0.75, 63.0], requires_grad=True)
    y = module(x=x)["y"]
    # codes: clip(round_half_even(x / 0.5), -128, 127) -> -128, -3 (-2.52), 0 (0.5), 2 (1.5), 126
    assert y.tolist() == [-64.0, -1.5, 0.0, 1.0, 63.0]
    y.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_fake_quant_student_reproduces_the_qdq_model_and_requantizes_to_its_codes() -> None:
    rng = np.random.default_rng(1)
    qdq = _qdq_conv(rng)
    float_weight = (
        numpy_helper.to_array(qdq.graph.initializer[2]).astype(np.float32)
        * np.array([0.01, 0.02, 0.005, 0.04], dtype=np.float32)[:, None, None, None]
    )
    float_proto = helper.make_model(
        helper.make_graph([], "f", [], [], [_init("w", float_weight + 0.001)])
    )
    student, fakes = fake_quant_model(qdq, float_proto)
    assert [(f.float_name, f.codes, f.dtype) for f in fakes] == [
        ("w_quantized_qat", "w_quantized", np.dtype(np.int8)),
        ("b_quantized_qat", "b_quantized", np.dtype(np.int32)),
    ]
    # the float weight starts from the float model's (0.001 off the grid: the same codes)
    assert [n.op_type for n in student.graph.node].count("QuantizeLinear") == 2
    feeds = {"x": rng.normal(size=(1, 2, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(
        _unoptimized(student, feeds)[0], _unoptimized(qdq, feeds)[0], rtol=0, atol=1e-5
    )
    trained = {t.name: numpy_helper.to_array(t) for t in student.graph.initializer}
    back = requantize(qdq, trained, fakes)
    for name in ("w_quantized", "b_quantized"):
        original = next(t for t in qdq.graph.initializer if t.name == name)
        again = next(t for t in back.graph.initializer if t.name == name)
        np.testing.assert_array_equal(numpy_helper.to_array(again), numpy_helper.to_array(original))


def _conv_net(rng: np.random.Generator) -> onnx.ModelProto:
    """A small conv net whose first conv's channels span 50x in weight range (the second conv
    makes up for it): per-tensor int8 rounds the small channels coarsely."""
    spread = np.geomspace(0.02, 1.0, 8)[:, None, None, None]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [
            _init("w1", rng.normal(size=(8, 1, 3, 3)) * spread),
            _init("b1", rng.normal(size=8) * 0.05),
            _init("w2", rng.normal(size=(8, 8, 3, 3)) * 0.3 / spread.reshape(1, 8, 1, 1)),
            _init("b2", rng.normal(size=8) * 0.05),
            _init("w3", rng.normal(size=(10, 8))),
            _init("b3", np.zeros(10)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_qat_brings_a_model_int8_misses_within_the_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.normal(size=(80, 1, 12, 12)).astype(np.float32))
    quantize = QuantizeStatic(
        str(data),
        per_channel=False,  # per-tensor weights: the spread channels lose the most
        reduce_range=False,  # the full-range weights these figures were measured with (VNNI)
        latency_guard=False,
        min_sqnr_db=28.0,  # int8 reaches 24 dB here; QAT-KD about 32
        min_top1=None,
        mode="static",
        equalize=False,
        bias_correction=False,
        qat_epochs=4,
        qat_lr=3e-3,
    )
    work = tmp_path / "work"
    work.mkdir()
    model = ir.from_proto(_conv_net(rng))
    summary = quantize.apply(model, PassContext(workdir=work)).summary
    report = summary["recovery"]
    assert report["base"]["score_db"] < 28.0
    assert report["qat"]["accurate"] is True, report
    assert report["qat"]["score_db"] >= 28.0 > report["qat"]["score_db_before"]
    assert report["qat"]["weights_trained"] == 6  # 3 weights, 3 int32 biases
    assert summary["chosen"].endswith("QAT-KD")
    dtypes = {v.name: v.const_value.dtype for v in model.graph.initializers.values()}
    assert dtypes["w1_quantized"] == ir.DataType.INT8
