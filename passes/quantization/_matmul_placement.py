"""Placement for transformer encoders: int8 on the weight MatMuls' inputs and weights only, their
outputs and everything else in float, then the few MatMuls whose int8 input breaks the task
metric back in float, found per node.

Measured on all-MiniLM-L6-v2 (issue 17, mean cosine vs fp32 on held-out sentences): ORT's QDQ
quantizer also quantizes each MatMul's output, and the FFN-down output carries the encoder's
outlier values (range [-3, 195] in layer 0), so one per-tensor scale rounds the ordinary values
away: the 36 weight MatMuls all int8 keep 0.946, their outputs in float 0.990 (weights alone:
0.9994). With float outputs ORT fuses DequantizeLinear + MatMul into MatMulIntegerToFloat (the
U8 x S8 kernel), so nothing is lost in speed. What remains is spread over the MatMul inputs;
each one's cost is measured by releasing its Quantize/Dequantize pair alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import onnx

from onnxslim.passes.quantization._accuracy_guard import Evaluator
from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.passes.quantization._node_search import (
    activation_pairs,
    released,
    task_score,
    tensor_gains,
)

__all__ = [
    "FLOAT_STEPS",
    "MIN_WEIGHT_MATMULS",
    "WEIGHT_MATMULS_LABEL",
    "matmul_roles",
    "with_weight_matmuls",
]

WEIGHT_MATMULS_LABEL = "weight MatMuls int8, outputs in float"
MIN_WEIGHT_MATMULS = 4  # below this it is not an encoder worth a placement of its own
FLOAT_STEPS = (1, 2, 4, 8)  # the worst MatMul inputs kept float per candidate


def matmul_roles(graph: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """The named MatMuls with a constant 2-D weight, and the other MatMuls (attention products
    Q.K^T and attn.V: both operands are activations, they stay float)."""
    constants = {i.name: i for i in graph.initializer}
    weight, activation = [], []
    for node in graph.node:
        if node.op_type != "MatMul" or not node.name:
            continue
        tensor = constants.get(node.input[1])
        if tensor is not None and len(tensor.dims) == 2 and node.input[0] not in constants:
            weight.append(node.name)
        else:
            activation.append(node.name)
    return weight, activation


def _outputs_in_float(path: Path, weight_matmuls: Collection[str], graph: onnx.GraphProto) -> None:
    """Rewrites the QDQ file at ``path`` with the Q/DQ pairs on the weight MatMuls' outputs
    removed (their consumers, all float here, read the float tensor)."""
    outputs = {out for n in graph.node if n.name in weight_matmuls for out in n.output}
    proto = onnx.load(str(path))
    pairs = [t for t in activation_pairs(proto) if t in outputs]
    if pairs:
        onnx.save(released(proto, pairs), str(path))


def _emit(
    emitter: Emitter,
    label: str,
    graph: onnx.GraphProto,
    floats: Collection[str],
    weight_matmuls: Collection[str],
    ranges,
) -> Path:
    path = emitter.emit(label, ("MatMul",), list(floats), ranges)
    _outputs_in_float(path, weight_matmuls, graph)
    return path


def _input_costs(
    path: Path, graph: onnx.GraphProto, weight_matmuls: Sequence[str], evaluator: Evaluator, base
) -> tuple[dict[str, float], set[str]]:
    """Activation tensor -> the score releasing it gains (its MatMuls' inputs float), by group
    testing (_node_search.tensor_gains: GROUPS chunks, the best one split down to single
    tensors, about GROUPS x log evaluations instead of one per input). Ordered worst first:
    the single tensors by their own gain, then the others by the gain of the smallest chunk
    holding them that was scored (the most its release can gain); also the tensors whose gain
    was measured alone."""
    inputs = {n.input[0] for n in graph.node if n.name in weight_matmuls}
    scored: list[tuple[list[str], float]] = []
    singles = tensor_gains(path, evaluator, base, path.parent, tensors=inputs, scored=scored)
    gains = dict(sorted(singles.items(), key=lambda kv: -kv[1]))
    for chunk, gain in sorted(scored, key=lambda cg: (len(cg[0]), -cg[1])):
        for tensor in chunk:
            gains.setdefault(tensor, gain)
    return gains, set(singles)


def with_weight_matmuls(
    tried: Sequence[Candidate],
    graph: onnx.GraphProto,
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
) -> tuple[list[Candidate], bool]:
    """``tried`` plus the weight-MatMul placement (and, while it fails, variants with the 1, 2,
    4, 8 worst MatMul inputs in float); True when one of them meets the bound. Nothing is added
    to a graph without a Softmax or with fewer than MIN_WEIGHT_MATMULS weight MatMuls, nor when
    no static candidate quantizing MatMul was tried."""
    result = list(tried)
    weight, activation = matmul_roles(graph)
    base = next((c for c in tried if not c.dynamic and c.op_types and "MatMul" in c.op_types), None)
    has_softmax = any(n.op_type == "Softmax" for n in graph.node)
    if base is None or len(weight) < MIN_WEIGHT_MATMULS or not has_softmax:
        return result, False
    others = [n.name for n in graph.node if n.name and n.op_type != "MatMul"]
    reasons = dict.fromkeys(activation, "placement: attention product (both operands activations)")
    floats = {**dict.fromkeys(others, "placement: only weight MatMuls are int8"), **reasons}
    floats = {n: why for n, why in floats.items() if n not in excluded}
    label = WEIGHT_MATMULS_LABEL
    path = _emit(emitter, label, graph, [*excluded, *floats], weight, base.ranges)
    evaluation = evaluator.evaluate(path)
    entry = base.replace(
        label=label, op_types=("MatMul",), path=path, evaluation=evaluation, excluded=floats
    )
    result.append(entry)
    if evaluation.accurate:
        return result, True
    gains, measured = _input_costs(path, graph, weight, evaluator, task_score(evaluation))
    ranked = [t for t, g in gains.items() if g > 0]  # worst first (group testing's order)
    for count in FLOAT_STEPS:
        if count > 1 and count // 2 >= len(ranked):
            break
        worst = set(ranked[:count])
        kept = {
            n.name: f"placement: int8 on its input '{n.input[0]}' costs "
            + ("" if n.input[0] in measured else "up to ")
            + f"{gains[n.input[0]]:.3g}"
            for n in graph.node
            if n.name in weight and n.input[0] in worst and n.name not in excluded
        }
        step = f"{label}, {count} sensitive MatMul input(s) in float"
        extra = {**floats, **kept}
        path = _emit(emitter, step, graph, [*excluded, *extra], weight, base.ranges)
        evaluation = evaluator.evaluate(path, stop_early=True)
        result.append(entry.replace(label=step, path=path, evaluation=evaluation, excluded=extra))
        if evaluation.accurate:
            return result, True
    return result, False
