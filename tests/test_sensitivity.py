"""Sensitivity-driven allocation of a MACs target, and the latency target's search."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnx_ir as ir
import pytest

from onnxslim import PassContext, SlimError
from onnxslim.passes.pruning import StructuredPrune
from onnxslim.passes.pruning._latency import search_for_latency
from onnxslim.passes.pruning._sensitivity import Sensitivity, output_error


def two_branch_net() -> ir.Model:
    """x(8) -> [Gemm a(8->16) -> Relu -> Gemm(16->8)] + [Gemm b(8->16) -> Relu -> Gemm(16->8)].

    Branch b has 10x larger first weights (the larger L2 score) but its second weights are
    100x smaller: its output is 1/10 of branch a's, so pruning a hurts far more."""
    rng = np.random.default_rng(0)
    arrays = {
        "wa": rng.normal(size=(8, 16)),
        "va": rng.normal(size=(16, 8)),
        "wb": 10 * rng.normal(size=(8, 16)),
        "vb": 0.01 * rng.normal(size=(16, 8)),
    }
    return branches(arrays, pooled=False)


def branches(arrays: dict[str, np.ndarray], pooled: bool) -> ir.Model:
    """y = MLP_a(x) + MLP_b(x), or MLP_b of the mean over x's 4 rows when ``pooled``."""
    b_input = "m" if pooled else "x"
    nodes = [
        oh.make_node("MatMul", ["x", "wa"], ["ha"], name="fc_a"),
        oh.make_node("Relu", ["ha"], ["ra"], name="relu_a"),
        oh.make_node("MatMul", ["ra", "va"], ["oa"], name="out_a"),
        *(
            [oh.make_node("ReduceMean", ["x"], ["m"], name="pool", axes=[0], keepdims=1)]
            if pooled
            else []
        ),
        oh.make_node("MatMul", [b_input, "wb"], ["hb"], name="fc_b"),
        oh.make_node("Relu", ["hb"], ["rb"], name="relu_b"),
        oh.make_node("MatMul", ["rb", "vb"], ["ob"], name="out_b"),
        oh.make_node("Add", ["oa", "ob"], ["y"], name="sum"),
    ]
    graph = oh.make_graph(
        nodes,
        "pooled_branch" if pooled else "two_branch",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 8])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])],
        [onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    return ir.serde.deserialize_model(proto)


def kept(summary: dict) -> dict[str, int]:
    return {name: counts[1] for name, counts in summary["channels_kept"].items()}


def test_sensitivity_allocation_prunes_the_sensitive_group_less_than_score_ranking():
    options = {"target_macs": 0.6, "round_to": 1, "max_ratio": 0.9}
    by_score = StructuredPrune(**options).apply(two_branch_net(), PassContext())
    by_sensitivity = StructuredPrune(**options, allocation="sensitivity").apply(
        two_branch_net(), PassContext()
    )
    # the same MACs (batch 4: 2048 before, 0.6 keeps at most 1228)
    assert by_score.summary["macs"]["after"] == by_sensitivity.summary["macs"]["after"] == 1216
    assert kept(by_score.summary) == {"fc_a": 12, "out_a": 8, "out_b": 8, "fc_b": 7}
    assert kept(by_sensitivity.summary) == {"fc_a": 16, "out_a": 8, "out_b": 8, "fc_b": 3}
    measured = by_sensitivity.summary["sensitivity"]
    assert [m["removed"] for m in measured.values()] == [4, 4]
    errors = [m["error"] for m in measured.values()]
    assert errors[0] > 50 * errors[1]  # branch a's cut moves the output far more


def pooled_branch_net() -> ir.Model:
    """x[4, 8] -> [MatMul(8->16) -> Relu -> MatMul(16->8)] + the same on the mean over the 4
    rows (a squeeze-excite-like branch: its hidden units cost a quarter of the MACs)."""
    rng = np.random.default_rng(0)
    arrays = {n: rng.normal(size=s) for n, s in (("wa", (8, 16)), ("va", (16, 8)))}
    arrays |= {n: rng.normal(size=s) for n, s in (("wb", (8, 16)), ("vb", (16, 8)))}
    return branches(arrays, pooled=True)


def test_score_per_mac_cuts_where_the_macs_are():
    options = {"target_macs": 0.6, "round_to": 1, "max_ratio": 0.9}
    by_score = StructuredPrune(**options).apply(pooled_branch_net(), PassContext())
    per_mac = StructuredPrune(**options, allocation="score_per_mac").apply(
        pooled_branch_net(), PassContext()
    )
    # one ranking cuts both branches alike; per MAC saved, the pooled branch's units cost 4x
    assert kept(by_score.summary) == {"fc_a": 9, "out_a": 8, "out_b": 8, "fc_b": 9}
    assert kept(per_mac.summary) == {"fc_a": 8, "out_a": 8, "out_b": 8, "fc_b": 16}
    assert by_score.summary["macs"]["after"] == 720  # of 1280: overshoots the 768 asked
    assert per_mac.summary["macs"]["after"] == 768


def test_latency_model_scales_each_nodes_time_by_the_work_a_plan_keeps():
    from onnxslim.passes.pruning import Plan, analyze
    from onnxslim.passes.pruning._latency_model import NodeLatency
    from onnxslim.runtime import attribute_kernels

    model = pooled_branch_net()
    analysis = analyze(model, round_to=1)
    # a kernel named after a value goes to its producer (to a Conv behind it: NCHWc fusions);
    # kernels ORT made itself are a fixed cost
    seconds = attribute_kernels(model.graph, {"fc_a": 2.0, "rb": 1.0, "sum": 0.5, "Reorder_1": 9})
    assert seconds == {"fc_a": 2.0, "relu_b": 1.0, "sum": 0.5}
    conv_relu = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[1, 2, 4, 4] x, float[3, 2, 1, 1] w) => (float[1, 3, 4, 4] r) {
            c = Conv <pads = [0, 0, 0, 0]> (x, w)
            r = Relu (c)
        }"""
    )
    for node in conv_relu.graph:
        node.name = node.op_type.lower()
    assert attribute_kernels(conv_relu.graph, {"r": 1.0}) == {"conv": 1.0}
    latency = NodeLatency(analysis.view, seconds)
    assert latency.base == 3.5
    by_group = {g.index: g for g in analysis.groups if g.prunable}
    hidden_a = next(i for i, g in by_group.items() if "fc_a" in {n.name for n in g.nodes})
    half = Plan(analysis.groups, {hidden_a: np.arange(8)})
    # fc_a keeps half its MACs, relu_b and the Add (output elements) all of theirs
    assert latency.predicted(half) == pytest.approx(2.0 * 0.5 + 1.0 + 0.5)


def test_score_per_ms_profiles_the_input_and_meets_the_macs_target():
    options = {"target_macs": 0.6, "round_to": 1, "max_ratio": 0.9}
    result = StructuredPrune(**options, allocation="score_per_ms").apply(
        pooled_branch_net(), PassContext()
    )
    assert result.summary["profiled_ms"] > 0
    assert result.summary["macs"]["after"] <= 768


def test_sensitivity_with_a_ratio_keeps_the_ratios_macs():
    uniform = StructuredPrune(ratio=0.5, round_to=1).apply(two_branch_net(), PassContext())
    shared = StructuredPrune(ratio=0.5, round_to=1, allocation="sensitivity").apply(
        two_branch_net(), PassContext()
    )
    assert kept(uniform.summary) == {"fc_a": 8, "out_a": 8, "out_b": 8, "fc_b": 8}
    assert shared.summary["macs"]["after"] == uniform.summary["macs"]["after"] == 1024
    assert kept(shared.summary) == {"fc_a": 14, "out_a": 8, "out_b": 8, "fc_b": 2}


def test_sensitivity_cost_grows_with_the_fraction_removed():
    measured = Sensitivity(error=0.04, removed=4, size=16, macs_saved=64)
    assert measured.cost(0, 4) == pytest.approx(0.04 / 64)
    assert measured.cost(4, 8) == pytest.approx(3 * 0.04 / 64)
    assert Sensitivity(0.1, 4, 16, 0).cost(0, 4) == float("inf")
    reference = [{"y": np.array([3.0, 4.0], dtype=np.float32)}]
    assert output_error(reference, [{"y": np.array([3.0, 3.0])}]) == pytest.approx(1 / 25)


def test_latency_search_interpolates_to_the_target_on_given_measurements():
    # latency = 0.3 + 0.7 * MACs: a fixed overhead the MACs do not remove
    calls: list[float] = []

    def measure(fraction: float) -> float:
        calls.append(fraction)
        return 0.3 + 0.7 * fraction

    search = search_for_latency(measure, 0.65, tolerance=0.01, trials=5)
    assert search.met
    assert calls[0] == 0.65
    assert search.macs_fraction == pytest.approx(0.5, abs=0.01 / 0.7)
    assert 0.65 - 0.01 <= measure(search.macs_fraction) <= 0.65 + 0.01
    assert len(search.trials) <= 5


def test_latency_search_reports_an_unreachable_target():
    search = search_for_latency(lambda f: 0.5 + 0.5 * f, 0.3, tolerance=0.02, trials=3)
    assert not search.met
    assert len(search.trials) == 3
    assert search.macs_fraction == min(f for f, _ in search.trials)


def conv_net() -> ir.Model:
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(32, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(size=(32, 32, 3, 3)).astype(np.float32) * 0.1
    w3 = rng.normal(size=(8, 32, 1, 1)).astype(np.float32)
    nodes = [
        oh.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("Conv", ["r2", "w3"], ["y"], name="conv3"),
    ]
    graph = oh.make_graph(
        nodes,
        "convs",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 32, 32])],
        [onnx.numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))],
    )
    return ir.serde.deserialize_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]))


def test_target_latency_runs_on_a_small_conv_net_and_keeps_the_block_rounding():
    result = StructuredPrune(
        target_latency=0.6, round_to=8, latency_trials=2, latency_seconds=0.3
    ).apply(conv_net(), PassContext())
    latency = result.summary["latency"]
    assert latency["target"] == 0.6
    assert 1 <= len(latency["trials"]) <= 2
    assert latency["trials"][0]["macs"] == 0.6
    assert result.summary["macs"]["kept_fraction"] <= latency["macs_fraction"] + 1e-9
    assert all(k % 8 == 0 for k in kept(result.summary).values())


def test_target_latency_is_alone_and_allocation_is_checked():
    with pytest.raises(SlimError, match="target_latency"):
        StructuredPrune(target_latency=0.5, target_macs=0.5)
    with pytest.raises(SlimError, match="unknown allocation 'even'"):
        StructuredPrune(target_macs=0.5, allocation="even")
