"""Placement search beyond op classes: keep in float exactly the few tensors that break the task
metric in attention blocks (the inputs of Softmax, then score MatMuls and LayerNormalization
inputs), quantize the rest; where those islands do not hold, the weight-MatMul placement
(_matmul_placement: int8 MatMul inputs and weights, MatMul outputs float, the worst inputs float)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import onnx

from onnxslim.passes.quantization._accuracy_guard import Evaluator
from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.passes.quantization._matmul_placement import with_weight_matmuls
from onnxslim.progress import task

__all__ = ["ISLAND_STEPS", "float_islands", "with_float_islands"]

# The ops between a score MatMul and its Softmax (scale, mask, bias, reshape): kept in float
# together, else their quantized outputs feed the Softmax.
_SCORE_CHAIN = ("Add", "Sub", "Mul", "Div", "Where", "Cast", "Reshape", "Transpose", "Clip")
_NORMS = ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")
ISLAND_STEPS = ("Softmax inputs in float", "Softmax/LayerNorm inputs and score MatMuls in float")


def float_islands(graph: onnx.GraphProto) -> list[tuple[str, dict[str, str]]]:
    """(label, node -> reason) per step: step 1 keeps each Softmax and the chain feeding it
    (back to its score MatMul) in float; step 2 adds the score MatMuls and each normalization
    with the node feeding it. Empty when the graph has no Softmax or normalization."""
    producers = {out: node for node in graph.node for out in node.output}
    softmax: dict[str, str] = {}
    scores: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Softmax" or not node.name:
            continue
        softmax[node.name] = f"placement search: Softmax '{node.name}' runs in float"
        pending = list(node.input[:1])
        while pending:
            producer = producers.get(pending.pop())
            if producer is None or not producer.name or producer.name in softmax:
                continue
            if producer.op_type == "MatMul":
                scores[producer.name] = f"placement search: score MatMul of '{node.name}'"
            elif producer.op_type in _SCORE_CHAIN:
                softmax[producer.name] = f"placement search: feeds Softmax '{node.name}'"
                pending.extend(i for i in producer.input[:1] if i)
    norms: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in _NORMS and node.name:
            norms[node.name] = f"placement search: {node.op_type} runs in float"
            feeding = producers.get(node.input[0])
            if feeding is not None and feeding.name and feeding.op_type != "MatMul":
                norms[feeding.name] = f"placement search: feeds {node.op_type} '{node.name}'"
    norms.update(_decomposed_norms(graph, producers))
    steps = []
    if softmax:
        steps.append((ISLAND_STEPS[0], softmax))
    if scores or norms:
        steps.append((ISLAND_STEPS[1], {**softmax, **scores, **norms}))
    return steps


_VARIANCE_CHAIN = ("Add", "ReduceMean", "Pow", "Mul", "Sqrt")


def _decomposed_norms(
    graph: onnx.GraphProto, producers: Mapping[str, onnx.NodeProto]
) -> dict[str, str]:
    """Exported LayerNorms (x - mean) / sqrt(mean((x - mean)^2) + eps): the Div and the
    variance chain back to the centring Sub (a squared, wide-range tensor int8 cannot hold)."""
    found: dict[str, str] = {}
    for node in graph.node:
        sqrt = (
            producers.get(node.input[1]) if node.op_type == "Div" and len(node.input) > 1 else None
        )
        if sqrt is None or sqrt.op_type != "Sqrt" or not node.name:
            continue
        chain, pending, centred = [node.name], [sqrt], False
        while pending:
            current = pending.pop()
            if not current.name or current.name in chain:
                continue
            chain.append(current.name)
            if current.op_type == "Sub":
                centred = True
                continue
            if current.op_type in (*_VARIANCE_CHAIN, "Sqrt"):
                pending.extend(p for i in current.input[:1] if (p := producers.get(i)) is not None)
        if centred:
            why = f"placement search: normalization at '{node.name}'"
            found.update(dict.fromkeys(dict.fromkeys(chain), why))
    return found


def with_float_islands(
    tried: Sequence[Candidate],
    graph: onnx.GraphProto,
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
    skip: Collection[str] = (),
) -> tuple[list[Candidate], set[str]]:
    """After the first static op-class candidate that breaks the bound (not labelled in
    ``skip``), its variants with the float islands (step by step until one holds); also the
    labels of the bases they rescued (no sensitivity search needed for those)."""
    result = list(tried)
    base = next(
        (c for c in tried if not (c.dynamic or c.evaluation.accurate or c.label in skip)), None
    )
    if base is None:
        return result, set()
    position = result.index(base) + 1
    rescued: set[str] = set()
    steps = float_islands(graph)
    with task("quantize: placement search", len(steps), "candidate") as bar:
        for step, nodes in steps:
            extra = {n: why for n, why in nodes.items() if n not in excluded}
            label = f"{base.label}, {step}"
            path = emitter.emit(label, base.op_types, [*excluded, *extra], base.ranges)
            evaluation = evaluator.evaluate(path, stop_early=True)  # pass/fail decides here
            entry = base.replace(label=label, path=path, evaluation=evaluation)
            result.insert(position, entry.replace(excluded=extra))
            position += 1
            bar.advance(candidate=label)
            if entry.evaluation.accurate:
                rescued.add(base.label)
                return result, rescued
    # transformer encoders: only the weight MatMuls int8, their outputs float (_matmul_placement)
    result, held = with_weight_matmuls(result, graph, emitter, evaluator, excluded)
    if held:
        rescued.add(base.label)
    return result, rescued
