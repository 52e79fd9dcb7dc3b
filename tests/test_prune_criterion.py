"""The ``auto`` criterion: taylor for attention models given real data and torch, else l2."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim.inputs import open_samples
from onnxslim.passes.pruning import StructuredPrune
from onnxslim.passes.pruning._criterion import choose_criterion, has_attention
from onnxslim.testing import with_random_weights

pytest.importorskip("torch")

# Two heads of width 4 over a hidden size of 8, scores scaled then Softmax, as exporters write it.
ATTENTION = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,4,8] x) => (float[1,4,8] y)
   <float[8,8] wq, float[8,8] wk, float[8,8] wv, float[8,8] wo,
    int64[4] heads = {1, 4, 2, 4}, int64[3] merged = {1, 4, 8}, float scale = {2.0}> {
    q0 = MatMul (x, wq)
    q1 = Reshape (q0, heads)
    q = Transpose <perm = [0, 2, 1, 3]> (q1)
    k0 = MatMul (x, wk)
    k1 = Reshape (k0, heads)
    k = Transpose <perm = [0, 2, 3, 1]> (k1)
    v0 = MatMul (x, wv)
    v1 = Reshape (v0, heads)
    v = Transpose <perm = [0, 2, 1, 3]> (v1)
    s = MatMul (q, k)
    scaled = Div (s, scale)
    p = Softmax <axis = -1> (scaled)
    o0 = MatMul (p, v)
    o1 = Transpose <perm = [0, 2, 1, 3]> (o0)
    o = Reshape (o1, merged)
    y = MatMul (o, wo)
}
"""

CONVS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) <float[16,3,3,3] w1, float[16] b1, float[4,16,1,1] w2> {
    h = Conv <pads = [1,1,1,1]> (x, w1, b1)
    r = Relu (h)
    y = Conv (r, w2)
}
"""


_model = with_random_weights


def _data(model: ir.Model, count: int = 4):
    spec = model.graph.inputs[0]
    rng = np.random.default_rng(1)
    shape = [int(d) for d in spec.shape]
    return open_samples(
        feeds=[{spec.name: rng.normal(size=shape).astype(np.float32)} for _ in range(count)]
    )


def _context(model: ir.Model, tmp_path, data) -> onnxslim.PassContext:
    path = tmp_path / "reference.onnx"
    onnxslim.save(model, path)
    return onnxslim.PassContext(reference_path=path, data=data, workdir=tmp_path)


def test_attention_is_found_in_the_score_product_and_not_in_a_conv_net():
    assert has_attention(_model(ATTENTION))
    assert not has_attention(_model(CONVS))
    # a Softmax over a weight product (a classifier head) is no attention block
    head = _model(
        CONVS.replace("y = Conv (r, w2)", "c = Conv (r, w2)\n    y = Softmax <axis = 1> (c)")
    )
    assert not has_attention(head)


def test_the_choice_and_its_reason_per_case():
    attention, convs = _model(ATTENTION), _model(CONVS)
    assert choose_criterion(attention, _data(attention)) == (
        "taylor",
        "attention model with data: taylor (measured best on MiniLM)",
    )
    criterion, because = choose_criterion(attention, None)
    assert criterion == "l2" and "needs the user's data (--data)" in because
    smoke = open_samples("random:4", attention)
    assert choose_criterion(attention, smoke)[0] == "l2"
    assert choose_criterion(convs, _data(convs)) == (
        "l2",
        "no attention block: l2 (measured best on conv nets)",
    )


def test_auto_prunes_an_attention_model_exactly_as_taylor_does(tmp_path):
    auto_model, taylor_model = _model(ATTENTION), _model(ATTENTION)
    auto = StructuredPrune(ratio=0.5, round_to=1).apply(
        auto_model, _context(auto_model, tmp_path, _data(auto_model))
    )
    taylor = StructuredPrune(ratio=0.5, round_to=1, criterion="taylor").apply(
        taylor_model, _context(taylor_model, tmp_path, _data(taylor_model))
    )
    assert auto.summary["criterion"] == "taylor"
    assert auto.summary["pruned_groups"] >= 1
    assert auto.summary["channels_kept"] == taylor.summary["channels_kept"]
    for name, value in taylor_model.graph.initializers.items():
        np.testing.assert_array_equal(
            auto_model.graph.initializers[name].const_value.numpy(), value.const_value.numpy()
        )


def test_auto_prunes_a_conv_net_exactly_as_l2_does(tmp_path):
    auto_model, l2_model = _model(CONVS), _model(CONVS)
    auto = StructuredPrune(ratio=0.5, round_to=1).apply(
        auto_model, _context(auto_model, tmp_path, _data(auto_model))
    )
    l2 = StructuredPrune(ratio=0.5, round_to=1, criterion="l2").apply(
        l2_model, _context(l2_model, tmp_path, _data(l2_model))
    )
    assert (auto.summary["criterion"], l2.summary.get("criterion")) == ("l2", None)
    assert auto.summary["channels_kept"] == l2.summary["channels_kept"]
    np.testing.assert_array_equal(
        auto_model.graph.initializers["w1"].const_value.numpy(),
        l2_model.graph.initializers["w1"].const_value.numpy(),
    )
