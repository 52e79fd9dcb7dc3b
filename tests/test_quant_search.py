"""Per-node placement searches on the task metric: the int4 guard's per-MatMul 8-bit fallback."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir
from onnx import helper

from onnxslim import PassContext
from onnxslim.passes.quantization import QuantizeWeightsInt4
from onnxslim.passes.quantization._int4_search import promotion_steps
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
