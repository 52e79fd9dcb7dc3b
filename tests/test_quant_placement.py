"""Placement search beyond op classes (issue 17): an attention block whose Softmax input breaks
under int8 comes back with exactly that tensor chain in float, the rest quantized."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim import PassContext
from onnxslim.passes.quantization import QuantizeStatic
from onnxslim.passes.quantization._placement import ISLAND_STEPS, float_islands

D, T = 16, 8


def _attention(path) -> str:
    """x [N, T, D] and a 0/1 mask [N, 1, T]: scores Q K^T / 4 plus (mask - 1) * 10000, Softmax,
    times V, out-projection. The -10000 of the mask dominates the Softmax input's int8 range."""
    rng = np.random.default_rng(0)
    weights = {
        name: numpy_helper.from_array((rng.normal(size=(D, D)) / 4).astype(np.float32), name)
        for name in ("wq", "wk", "wv", "wo")
    }
    consts = [
        numpy_helper.from_array(np.array(4.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(10000.0, np.float32), "big"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Div", ["s", "scale"], ["s_scaled"], name="scale_scores"),
        helper.make_node("Sub", ["mask", "one"], ["m1"], name="mask_minus_one"),
        helper.make_node("Mul", ["m1", "big"], ["bias"], name="mask_bias"),
        helper.make_node("Add", ["s_scaled", "bias"], ["logits"], name="add_mask"),
        helper.make_node("Softmax", ["logits"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["ctx"], name="context"),
        helper.make_node("MatMul", ["ctx", "wo"], ["y"], name="out_proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, D]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, T]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", T, D])],
        [*weights.values(), *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _data(count: int) -> list[dict]:
    rng = np.random.default_rng(1)
    data = []
    for _ in range(count):
        mask = np.ones((1, 1, T), np.float32)
        mask[..., rng.integers(4, T) :] = 0.0  # padded tail
        data.append({"x": rng.normal(size=(1, T, D)).astype(np.float32), "mask": mask})
    return data


def test_float_islands_follow_the_chain_from_softmax_back_to_its_score_matmul(tmp_path):
    graph = onnx.load(_attention(tmp_path / "a.onnx")).graph
    (first, softmax_nodes), (second, with_scores) = float_islands(graph)
    assert (first, second) == ISLAND_STEPS
    assert sorted(softmax_nodes) == ["add_mask", "scale_scores", "softmax"]
    assert sorted(with_scores) == ["add_mask", "scale_scores", "scores", "softmax"]
    assert softmax_nodes["add_mask"] == "placement search: feeds Softmax 'softmax'"


def test_attention_block_keeps_softmax_inputs_float_and_quantizes_the_rest(tmp_path):
    path = _attention(tmp_path / "attention.onnx")
    model = onnxslim.load(path)
    result = QuantizeStatic(_data(48), method="minmax", latency_guard=False, metric="cosine").apply(
        model, PassContext(workdir=tmp_path)
    )
    summary = result.summary
    by_label = {c["label"]: c for c in summary["candidates"]}
    assert by_label["all quantizable ops"]["rejected"].startswith("accuracy: cosine")
    assert summary["chosen"] == "all quantizable ops, Softmax inputs in float"
    assert {
        n: why for n, why in summary["nodes_excluded"].items() if why.startswith("placement")
    } == {
        "softmax": "placement search: Softmax 'softmax' runs in float",
        "scale_scores": "placement search: feeds Softmax 'softmax'",
        "add_mask": "placement search: feeds Softmax 'softmax'",
    }
    assert set(summary["nodes_quantized"]) >= {"q_proj", "k_proj", "v_proj", "scores", "out_proj"}
    softmax = next(n for n in model.graph if n.op_type == "Softmax")
    assert softmax.inputs[0].producer().op_type == "Add"  # no DequantizeLinear: float logits
    assert result.modified and summary["judged_on"]["source"] == "held-out calibration data"


def test_an_exported_layernorm_is_a_float_island_down_to_its_centring_sub():
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["d"], name="centre"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="square"),
        helper.make_node("ReduceMean", ["d2"], ["var"], name="variance", axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="add_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
        helper.make_node("Div", ["d", "std"], ["n"], name="normalize"),
        helper.make_node("Mul", ["n", "two"], ["y"], name="gamma"),
    ]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        ],
    )
    ((label, nodes_in_float),) = float_islands(graph)
    assert label == ISLAND_STEPS[1]
    assert sorted(nodes_in_float) == ["add_eps", "centre", "normalize", "square", "std", "variance"]
    assert set(nodes_in_float.values()) == {"placement search: normalization at 'normalize'"}
