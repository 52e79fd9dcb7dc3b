"""Per-node placement searches on the guard's score: int4's per-MatMul 8-bit fallback, static
int8's sensitive tensors kept float."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxslim import PassContext
from onnxslim.passes.quantization import QuantizeStatic, QuantizeWeightsInt4
from onnxslim.passes.quantization._int4_search import promotion_steps
from onnxslim.passes.quantization._node_search import activation_pairs, released
from tests.test_quant_int4 import K, N, _feeds, _smooth_weight, two_linear_model


def _outlier_weight() -> np.ndarray:
    """Gaussian weights with one 30-sigma outlier per 32-row block: 4-bit blocks round most
    weights to zero, 8-bit blocks of 128 keep them (scale 30/127)."""
    weight = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    weight[::32] = 30.0
    return weight


def test_int4_guard_gives_exactly_the_sensitive_matmul_8bit_blocks():
    proto = two_linear_model(_outlier_weight(), _smooth_weight(N, N) * 0.5)
    model = ir.from_proto(proto)
    feeds = _feeds(4)
    result = QuantizeWeightsInt4(latency_guard=False).apply(model, PassContext(sample_inputs=feeds))
    assert result.modified
    assert result.summary["matmuls_8bit"] == ["fc1"]
    assert result.summary["fidelity"]["mean_cosine"] >= 0.99
    bits = {
        node.name: helper.get_attribute_value(next(a for a in node.attribute if a.name == "bits"))
        for node in ir.to_proto(model).graph.node
        if node.op_type == "MatMulNBits"
    }
    assert bits == {"fc1_Q8": 8, "fc2_Q4": 4}
    assert Counter(n.op_type for n in ir.to_proto(model).graph.node)["MatMul"] == 1  # gram


def test_without_the_fallback_the_same_model_comes_back_float():
    proto = two_linear_model(_outlier_weight(), _smooth_weight(N, N) * 0.5)
    model = ir.from_proto(proto)
    result = QuantizeWeightsInt4(latency_guard=False, sensitive_bits=None).apply(
        model, PassContext(sample_inputs=_feeds(4))
    )
    assert not result.modified
    assert "matmuls_8bit" not in result.summary
    assert result.summary["fallback"].startswith("returned the float model: accuracy: mean output")


def test_promotion_steps_double_from_the_most_sensitive_then_take_all():
    gains = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.6, "e": 0.8}
    assert promotion_steps(gains) == [
        ["b"],
        ["b", "e"],
        ["b", "e", "c", "d"],
        ["b", "e", "c", "d", "a"],
    ]
    assert promotion_steps({}) == []


# -- static int8: the tensors whose int8 breaks the bound, found on the guard's score ---------
def _outlier_channel_net() -> onnx.ModelProto:
    """Conv -> Relu -> Conv (channel 0 biased to +400) -> Conv (ignores channel 0) -> Relu -> Conv.

    Per-tensor uint8 on h2 spends its range on the outlier channel: the channels the rest of the
    net reads round to a few levels. Only h2 breaks the bound."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    b2 = np.zeros(8, np.float32)
    b2[0] = 400.0
    w3 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3
    w3[:, 0] = 0.0
    w4 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], name="c2"),
        helper.make_node("Conv", ["h2", "w3"], ["h3"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h3"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "w4"], ["y"], name="c4"),
    ]
    weights = {"w1": w1, "w2": w2, "b2": b2, "w3": w3, "w4": w4}
    graph = helper.make_graph(
        nodes,
        "outlier_channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_static_search_keeps_exactly_the_outlier_tensors_nodes_float():
    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)} for _ in range(24)]
    model = ir.from_proto(_outlier_channel_net())
    result = QuantizeStatic(data, latency_guard=False).apply(model, PassContext())
    summary = result.summary
    assert result.modified
    assert summary["chosen"] == "all quantizable ops, 1 sensitive tensor(s) in float"
    first, found = summary["candidates"][:2]
    assert first["label"] == "all quantizable ops" and first["fidelity"]["sqnr_db"] < 10
    assert found["extra_float_nodes"] == 2 and found["fidelity"]["sqnr_db"] > 30
    assert sorted(summary["nodes_excluded"]) == ["c2", "c3"]
    assert summary["nodes_excluded"]["c3"].startswith(
        "placement search: int8 on tensor 'h2' costs "
    )
    ops = Counter(n.op_type for n in ir.to_proto(model).graph.node)
    assert ops["Conv"] == 4 and ops["QuantizeLinear"] > 0


def test_released_pairs_leave_the_qdq_graph_runnable_and_float_where_released(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(2)
            self.items = iter(
                [{"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.items, None)

    source = tmp_path / "float.onnx"
    onnx.save(_outlier_channel_net(), str(source))
    quantize_static(str(source), str(tmp_path / "qdq.onnx"), Reader())
    proto = onnx.load(str(tmp_path / "qdq.onnx"))
    pairs = activation_pairs(proto)
    assert {"x", "r1", "h2", "r3"} <= set(pairs) and "y" not in pairs
    free = released(proto, ["h2"])
    assert set(activation_pairs(free)) == set(pairs) - {"h2"}
    assert [n.name for n in free.graph.node if "h2" in n.input] == ["c3"]
    # the released pair's scale and zero point go with it (ORT warns of unused initializers);
    # the other pairs' stay, and nothing else of the model changes
    read = {name for n in free.graph.node for name in n.input}
    assert {t.name for t in free.graph.initializer} <= read
    gone = {t.name for t in proto.graph.initializer} - {t.name for t in free.graph.initializer}
    assert gone and all(name.startswith("h2") for name in gone)
    assert free.opset_import == proto.opset_import and free.ir_version == proto.ir_version
    feeds = {"x": np.ones((1, 4, 16, 16), np.float32)}
    session = ort.InferenceSession(free.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, feeds)[0].shape == (1, 4, 16, 16)


def test_static_search_emits_nothing_when_releasing_the_worst_tensors_cannot_fix_the_bound():
    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)} for _ in range(24)]
    model = ir.from_proto(_outlier_channel_net())
    result = QuantizeStatic(data, latency_guard=False, min_sqnr_db=200.0).apply(
        model, PassContext()
    )
    labels = [c["label"] for c in result.summary["candidates"]]
    assert not any("sensitive tensor" in label for label in labels)
    assert labels[0] == "all quantizable ops"
