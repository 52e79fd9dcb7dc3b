"""Placement search per tensor on the task metric: which activation tensors' int8 breaks the
bound, found by removing their Quantize/Dequantize pair from the failing candidate (all but
those tensors quantized) and re-scoring on the guard's samples; then the candidate that keeps
exactly the worst tensors' nodes (producer and quantized consumers) in float.

Group testing keeps it cheap: the tensors, in graph order, are split in ``GROUPS`` chunks, the
chunk whose release gains most is split again, down to single tensors (about GROUPS x log
evaluations, not one per tensor).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import onnx
import onnx.numpy_helper

from onnxslim import model_file_size
from onnxslim.model import proto_graphs
from onnxslim.passes.quantization._accuracy_guard import Evaluator
from onnxslim.passes.quantization._candidates import Candidate, Evaluation
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.progress import task

__all__ = [
    "GROUPS",
    "activation_pairs",
    "released",
    "task_score",
    "tensor_gains",
    "with_sensitive_tensors",
]

GROUPS = 8
_STEPS = (1, 2, 4)  # the worst tensors kept float per candidate
_MAX_BYTES = 1 << 30


def task_score(evaluation: Evaluation) -> float:
    """The guard's score: the worst task metric where one judges, else the (logits) SQNR."""
    if evaluation.task_scores:
        return min(evaluation.task_scores.values())
    return evaluation.score


def activation_pairs(proto: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Activation tensor -> (its QuantizeLinear's output, the DequantizeLinear's output) in a QDQ
    model; weights (initializers) and pairs that write a graph output are left out."""
    constants = {i.name for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    dequantized = {
        n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"
    }
    return {
        n.input[0]: (n.output[0], dequantized[n.output[0]])
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear"
        and n.input[0] not in constants
        and n.output[0] in dequantized
        and dequantized[n.output[0]] not in outputs
    }


def released(proto: onnx.ModelProto, tensors: Collection[str]) -> onnx.ModelProto:
    """``proto`` with the Quantize/Dequantize pairs of ``tensors`` removed: their consumers read
    the float tensor again. A pair whose zero point is the type's minimum clamps at 0, which is
    what ORT's quantizer leaves of a Relu it removed: that clamp stays, as a Relu (on a tensor
    that is non-negative anyway it changes nothing)."""
    pairs = {t: p for t, p in activation_pairs(proto).items() if t in tensors}
    clamped = _clamped_at_zero(proto, pairs)
    back = {
        dq: f"{tensor}_released_relu" if tensor in clamped else tensor
        for tensor, (_, dq) in pairs.items()
    }
    dropped = {name for pair in pairs.values() for name in pair}
    result = onnx.ModelProto()
    result.CopyFrom(proto)  # one copy (copy.copy of a message is already deep)
    kept = [n for n in result.graph.node if not (n.output and n.output[0] in dropped)]
    for tensor in sorted(clamped):
        relu = onnx.helper.make_node(
            "Relu", [tensor], [f"{tensor}_released_relu"], name=f"{tensor}_released_relu"
        )
        kept.insert(next(i for i, n in enumerate(kept) if tensor in n.output) + 1, relu)
    for node in kept:
        for index, name in enumerate(node.input):
            if name in back:
                node.input[index] = back[name]
    del result.graph.node[:]
    result.graph.node.extend(kept)
    # the removed pairs' scales and zero points, unless another node still reads them (ORT
    # warns about every unused initializer a session finds)
    freed = {
        name
        for node in proto.graph.node
        if node.output and node.output[0] in dropped
        for name in node.input[1:]
    }
    read = {name for graph in proto_graphs(result.graph) for n in graph.node for name in n.input}
    unused = freed - read - {o.name for o in result.graph.output}
    initializers = result.graph.initializer
    for index in reversed(range(len(initializers)) if unused else ()):
        if initializers[index].name in unused:
            del initializers[index]
    return result


_QMIN = {onnx.TensorProto.UINT8: 0, onnx.TensorProto.INT8: -128}


def _clamped_at_zero(proto: onnx.ModelProto, pairs: Mapping[str, tuple[str, str]]) -> set[str]:
    """The tensors among ``pairs`` whose QuantizeLinear has a scalar zero point at its type's
    minimum (its range starts at 0) and a producer node (a graph input has no removed Relu)."""
    zero_points = {i.name: i for i in proto.graph.initializer}
    produced = {out for node in proto.graph.node for out in node.output}
    found = set()
    for node in proto.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in pairs or len(node.input) < 3:
            continue
        point = zero_points.get(node.input[2])
        if point is None or node.input[0] not in produced:
            continue
        values = onnx.numpy_helper.to_array(point)
        if values.size == 1 and int(values.ravel()[0]) == _QMIN.get(point.data_type):
            found.add(node.input[0])
    return found


def tensor_gains(
    qdq_path: Path,
    evaluator: Evaluator,
    base: float,
    folder: Path,
    descent: list[tuple[list[str], float]] | None = None,
    tensors: Collection[str] | None = None,
    scored: list[tuple[list[str], float]] | None = None,
    until_unfixed: bool = False,
) -> dict[str, float]:
    """Tensor (or chunk head) -> score gained by releasing it alone, by bisection into GROUPS;
    ``descent`` (when given) receives each chunk the bisection went into, with its gain, and
    ``scored`` every chunk scored. ``tensors``: only these activation pairs (default: all).
    ``until_unfixed``: the bisection ends (no gains returned) at the first split none of whose
    chunks' release meets the bound alone: releasing a part of a chunk that does not fix it
    does not either, so no smaller set below it can (PP-OCR det: 5 of 31 evaluations)."""
    proto = onnx.load(str(qdq_path))
    pending = [t for t in activation_pairs(proto) if tensors is None or t in tensors]
    gains: dict[str, float] = {}
    with task("quantize: tensor sensitivity", None, "evaluation") as bar:
        while pending:
            size = -(-len(pending) // GROUPS)
            chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
            found: list[float] = []
            fixed = False
            for chunk in chunks:
                path = folder / "released.onnx"
                onnx.save(released(proto, chunk), str(path))
                evaluation = evaluator.evaluate(path, stop_below=_to_beat(found, base, size))
                found.append(task_score(evaluation) - base)
                fixed = fixed or evaluation.accurate
                if scored is not None:
                    scored.append((chunk, found[-1]))
                bar.advance(1, tensors=len(chunk))
            if size == 1:
                gains.update({c[0]: g for c, g in zip(chunks, found)})
                break
            if until_unfixed and not fixed:
                break
            best = max(range(len(chunks)), key=found.__getitem__)
            pending = chunks[best]
            if descent is not None:
                descent.append((pending, found[best]))
    return gains


def _to_beat(found: Sequence[float], base: float, size: int) -> float | None:
    """The score a chunk's release must reach to matter (its evaluation may stop once it cannot;
    the gain it then records is the most it could reach, still under that): in a bisection
    step, the best gain so far (only the best chunk is split again, the first of equals); among
    single tensors, a gain over 0 (only those are ranked) and, once 4 have one, over the 4th
    best (only the worst _STEPS[-1] are kept float). None: the first chunk, scored in full."""
    if not found:
        return None
    if size > 1:
        return base + max(found)
    positive = sorted((g for g in found if g > 0), reverse=True)
    return base + (positive[_STEPS[-1] - 1] if len(positive) >= _STEPS[-1] else 0.0)


def tensor_nodes(graph: onnx.GraphProto, tensor: str, quantized: Collection[str]) -> list[str]:
    """The named nodes to keep float so ``tensor`` is not quantized: its producer and its
    consumers among the quantized op types."""
    return [
        n.name
        for n in graph.node
        if n.name and n.op_type in quantized and (tensor in n.output or tensor in n.input)
    ]


def with_sensitive_tensors(
    tried: Sequence[Candidate],
    graph: onnx.GraphProto,
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
    skip: Collection[str] = (),
) -> tuple[list[Candidate], set[str]]:
    """After the first (most int8) failing static candidate, its variant keeping the fewest
    worst tensors (1, 2 or 4, by gain on the guard's score; else the smallest chunk on the
    bisection's path) in float whose release fixes the bound; also the labels it rescued.
    Nothing is emitted when releasing them does not fix it."""
    result = list(tried)
    failing = [c for c in tried if not (c.dynamic or c.evaluation.accurate or c.label in skip)]
    if not failing:
        return result, set()
    # the most int8 failing set (the first): on PP-OCR det all ops run 1.39x, only Conv 1.13x
    base = failing[0]
    if model_file_size(base.path) > _MAX_BYTES:  # one protobuf per released variant
        return result, set()
    folder = base.path.parent
    score = task_score(base.evaluation)
    descent: list[tuple[list[str], float]] = []
    gains = tensor_gains(base.path, evaluator, score, folder, descent, until_unfixed=True)
    ranked = [t for t, g in sorted(gains.items(), key=lambda kv: -kv[1]) if g > 0]
    count = _fixing_count(base.path, ranked, evaluator, folder) if ranked else None
    if count is None:  # the error is spread over a region: the smallest chunk that fixes it
        chunk = _fixing_chunk(base.path, descent, evaluator, folder)
        if chunk is None:  # releasing the worst tensors does not fix it: no emission can
            return result, set()
        ranked, count = chunk, len(chunk)
        gains.update(dict.fromkeys(chunk, next(g for c, g in descent if c is chunk)))
    extra = dict(base.excluded)
    for tensor in ranked[:count]:
        why = f"placement search: int8 on tensor '{tensor}' costs {gains[tensor]:.3g} of the score"
        if count > _STEPS[-1]:
            why = (
                f"placement search: int8 on the {count} tensors from '{ranked[0]}' costs "
                f"{gains[tensor]:.3g} of the score"
            )
        for name in tensor_nodes(graph, tensor, base.op_types or ()):
            if name not in excluded:
                extra.setdefault(name, why)
    label = f"{base.label}, {count} sensitive tensor(s) in float"
    path = emitter.emit(label, base.op_types, [*excluded, *extra], base.ranges)
    evaluation = evaluator.evaluate(path, stop_early=True)
    entry = base.replace(label=label, path=path, evaluation=evaluation)
    result.insert(result.index(base) + 1, entry.replace(excluded=extra))
    return result, {base.label} if entry.evaluation.accurate else set()


def _fixing_count(
    qdq_path: Path, ranked: Sequence[str], evaluator: Evaluator, folder: Path
) -> int | None:
    """The fewest of the worst tensors (1, 2, 4) whose release alone makes the QDQ model hold
    the bound (checked without re-quantizing); None when none does."""
    proto = onnx.load(str(qdq_path))
    for count in _STEPS:
        if count > 1 and count // 2 >= len(ranked):
            break
        path = folder / "released.onnx"
        onnx.save(released(proto, ranked[:count]), str(path))
        if evaluator.evaluate(path, stop_early=True).accurate:
            return count
    return None


def _fixing_chunk(
    qdq_path: Path, descent: Sequence[tuple[list[str], float]], evaluator: Evaluator, folder: Path
) -> list[str] | None:
    """The smallest chunk on the bisection's path (more than the single tensors tried) whose
    release makes the QDQ model hold the bound; None when none does. Each gained score."""
    proto = onnx.load(str(qdq_path))
    for chunk, gain in reversed(descent):
        if len(chunk) <= _STEPS[-1] or gain <= 0:
            continue
        released_path = folder / "released.onnx"
        onnx.save(released(proto, chunk), str(released_path))
        if evaluator.evaluate(released_path, stop_early=True).accurate:
            return chunk
    return None
