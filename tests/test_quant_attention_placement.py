"""The weight-MatMul placement for transformer encoders (issue 17, _matmul_placement): int8 on the
weight MatMuls' inputs and weights, the MatMul outputs, attention products, Softmax and the
decomposed LayerNorms in float; then the worst MatMul inputs back in float while the bound fails.

Built on a BERT-style encoder with random weights (as tests/test_int4_transformer.py), run in
real ONNX Runtime sessions; the MiniLM figures live in benchmarks/quant_vs_peers.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import onnxslim
from onnxslim.fidelity import FidelityBounds, TaskMetric
from onnxslim.passes.quantization._accuracy_guard import Evaluator
from onnxslim.passes.quantization._calibrate import CalibrationSettings, collect_ranges
from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.passes.quantization._fusion import fuse_for_quantization
from onnxslim.passes.quantization._matmul_placement import (
    FLOAT_STEPS,
    WEIGHT_MATMULS_LABEL,
    matmul_roles,
    with_weight_matmuls,
)
from onnxslim.passes.quantization._prepare import prepare
from onnxslim.passes.quantization._profiles import target_profile
from onnxslim.passes.quantization._summary import optimized_graph
from onnxslim.passes.quantization._tensors import tensors_to_calibrate

torch = pytest.importorskip("torch")

from onnxslim.testing import bert_style_encoder, export_torch  # noqa: E402

LAYERS, SEQUENCE = 2, 12
ALL_OPS = ("MatMul", "Add", "Mul", "Softmax")


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "input_ids": rng.integers(0, 100, (1, SEQUENCE)).astype(np.int64),
            "attention_mask": np.ones((1, SEQUENCE), np.int64),
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """The prepared encoder, its calibrated MatMul ranges, an emitter (VNNI profile settings:
    full-range weights) and the all-ops int8 candidate the placement starts from."""
    folder = tmp_path_factory.mktemp("bert-placement")
    torch.manual_seed(0)
    module = bert_style_encoder(vocab_size=100, hidden=64, heads=4, layers=LAYERS, intermediate=256)
    ids = torch.randint(0, 100, (1, SEQUENCE))
    mask = torch.ones(1, SEQUENCE, dtype=torch.int64)
    path = export_torch(
        module, (ids, mask), folder / "bert.onnx", input_names=["input_ids", "attention_mask"]
    )
    prepared = prepare(onnxslim.load(path), folder)
    names = tensors_to_calibrate(prepared.proto, list(ALL_OPS))
    settings = CalibrationSettings("percentile", 99.999, False, 2048, 1, None)
    ranges = collect_ranges(prepared.model, names, _feeds(16, 0), settings).ranges
    profile = dataclasses.replace(target_profile("cpu"), reduce_range=False)
    emitter = Emitter(prepared.path, folder, profile, ranges)
    all_ops = emitter.emit("all ops", ALL_OPS, [])
    return path, prepared, emitter, all_ops


def _evaluator(stage, floor: float) -> Evaluator:
    path, prepared, _, _ = stage
    metric = TaskMetric.parse("cosine", floor)
    return Evaluator(path, prepared, _feeds(4, 1), FidelityBounds.off(), metric)


def _base(stage, evaluator: Evaluator) -> Candidate:
    *_, all_ops = stage
    return Candidate("all ops", ALL_OPS, all_ops, evaluator.evaluate(all_ops))


def test_weight_matmuls_int8_their_outputs_attention_and_softmax_float(stage):
    _, prepared, emitter, _ = stage
    evaluator = _evaluator(stage, 0.99)
    tried, held = with_weight_matmuls(
        [_base(stage, evaluator)], prepared.proto.graph, emitter, evaluator, {}
    )
    assert held
    placement = next(c for c in tried if c.label == WEIGHT_MATMULS_LABEL)
    assert placement.evaluation.accurate and placement.op_types == ("MatMul",)
    assert min(placement.evaluation.task_scores.values()) >= 0.99
    weight, activation = matmul_roles(prepared.proto.graph)
    assert len(weight) == 6 * LAYERS and len(activation) == 2 * LAYERS
    proto = onnx.load(str(placement.path))
    produced_by = {out: node for node in proto.graph.node for out in node.output}
    nodes = {node.name: node for node in proto.graph.node}
    for name in weight:  # both operands dequantized int8; the output stays float
        operands = [produced_by.get(i) for i in nodes[name].input]
        assert all(p is not None and p.op_type == "DequantizeLinear" for p in operands)
        consumers = [n for n in proto.graph.node if nodes[name].output[0] in n.input]
        assert consumers and all(n.op_type != "QuantizeLinear" for n in consumers)
    for name in activation:  # attention products read float tensors
        assert all(
            produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear"
            for i in nodes[name].input
        )
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            assert produced_by[node.input[0]].op_type != "DequantizeLinear"
    # ORT runs each weight MatMul on its integer kernel (u8 activations x s8 weights)
    ran = optimized_graph(placement.path, placement.path.parent)
    integer = [n for n in ran.node if n.op_type in ("MatMulIntegerToFloat", "MatMulInteger")]
    assert len(integer) == len(weight)
    assert not [n for n in ran.node if n.op_type == "QLinearMatMul"]


def test_a_bound_the_placement_cannot_meet_adds_failing_candidates_only(stage):
    _, prepared, emitter, _ = stage
    evaluator = _evaluator(stage, 0.9999999)
    tried, held = with_weight_matmuls(
        [_base(stage, evaluator)], prepared.proto.graph, emitter, evaluator, {}
    )
    assert not held
    added = tried[1:]
    assert added[0].label == WEIGHT_MATMULS_LABEL
    assert 1 < len(added) <= 1 + len(FLOAT_STEPS)
    assert not any(c.evaluation.accurate for c in added)
    # each step keeps more weight MatMuls float than the one before
    kept = [sum(r.startswith("placement: int8 on") for r in c.excluded.values()) for c in added]
    assert kept == sorted(kept) and kept[-1] > kept[0] == 0


def test_no_softmax_no_placement(tmp_path):
    weights = [
        helper.make_tensor(f"w{i}", onnx.TensorProto.FLOAT, [8, 8], np.eye(8).ravel().tolist())
        for i in range(4)
    ]
    nodes = [
        helper.make_node(
            "MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}"], name=f"m{i}"
        )
        for i in range(4)
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("h4", onnx.TensorProto.FLOAT, [1, 8])],
        weights,
    )
    base = Candidate("all", ("MatMul",), tmp_path / "unused.onnx", None)  # type: ignore[arg-type]
    tried, held = with_weight_matmuls([base], graph, None, None, {})  # type: ignore[arg-type]
    assert tried == [base] and not held
    assert matmul_roles(graph) == (["m0", "m1", "m2", "m3"], [])


def test_layer_norm_fuses_when_reducemean_leaves_keepdims_implicit():
    """torch's opset-14 export writes ReduceMean without its default keepdims=1 (MiniLM's 13
    LayerNorms fused none), and the rule's check needs the rank of its input, an intermediate
    value without a shape before inference: the fusion now writes the default out, infers shapes
    on its copy and fuses, exactly."""
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 14]>
        ln (float[2, 5, 8] x) => (float[2, 5, 8] y)
        <float[8] scale = {1.0, 2.0, 0.5, 1.0, 1.5, 1.0, 0.25, 1.0},
         float[8] bias = {0.1, 0.0, -0.2, 0.0, 0.3, 0.0, 0.0, 0.5},
         float two = {2.0}, float eps = {1e-5}> {
            h = Add (x, x)
            mean = ReduceMean <axes = [-1]> (h)
            dev = Sub (h, mean)
            sq = Pow (dev, two)
            var = ReduceMean <axes = [-1]> (sq)
            veps = Add (var, eps)
            std = Sqrt (veps)
            norm = Div (dev, std)
            scaled = Mul (norm, scale)
            y = Add (scaled, bias)
        }
        """
    )
    fused, report = fuse_for_quantization(model)
    assert report.applied.get("layer_norm", 0) >= 1, report.to_dict()
    assert [n.op_type for n in fused.graph].count("LayerNormalization") == 1
    assert not [n for n in fused.graph if n.op_type == "ReduceMean"]
    assert [n.op_type for n in model.graph].count("ReduceMean") == 2  # input model untouched


def test_the_worst_matmul_input_found_by_group_testing_is_the_brute_force_worst(stage):
    from onnxslim.passes.quantization._node_search import activation_pairs, released, task_score

    _, prepared, emitter, _ = stage
    graph = prepared.proto.graph
    weight, _ = matmul_roles(graph)
    strict = _evaluator(stage, 0.9999999)
    tried, _ = with_weight_matmuls([_base(stage, strict)], graph, emitter, strict, {})
    placement = next(c for c in tried if c.label == WEIGHT_MATMULS_LABEL)
    # brute force: each weight MatMul input's Quantize/Dequantize pair released alone
    proto = onnx.load(str(placement.path))
    inputs = {n.input[0] for n in graph.node if n.name in weight}
    scores = {}
    for tensor in [t for t in activation_pairs(proto) if t in inputs]:
        path = placement.path.parent / "brute-force.onnx"
        onnx.save(released(proto, [tensor]), str(path))
        scores[tensor] = task_score(strict.evaluate(path))
    ranked = sorted(scores, key=scores.get, reverse=True)
    assert len(ranked) >= 8 and scores[ranked[0]] > scores[ranked[1]]
    # a bound only the worst input's release reaches: the first step keeps exactly its MatMuls
    floor = (scores[ranked[0]] + scores[ranked[1]]) / 2
    evaluator = _evaluator(stage, floor)
    tried, held = with_weight_matmuls([_base(stage, evaluator)], graph, emitter, evaluator, {})
    assert held
    chosen = tried[-1]
    assert chosen.label == f"{WEIGHT_MATMULS_LABEL}, 1 sensitive MatMul input(s) in float"
    kept = {n for n, why in chosen.excluded.items() if why.startswith("placement: int8 on its")}
    assert kept == {n.name for n in graph.node if n.name in weight and n.input[0] == ranked[0]}
    assert all(f"'{ranked[0]}' costs " in chosen.excluded[n] for n in kept)  # measured alone
    # the base, the placement, one per input (8 inputs: GROUPS chunks of one), the step
    assert evaluator.evaluations == 2 + len(scores) + 1
