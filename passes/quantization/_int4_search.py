"""Per-MatMul fallback of the int4 guard: when 4-bit blocks everywhere break the bound, measure
what restoring each MatMul alone to float gains on the guard's metric (all-but-one, on the
guard samples), then give the most sensitive ones 8-bit blocks (1, 2, 4, ... then all) until the
bound holds. Per node, not per op class: on all-MiniLM-L6-v2 no single MatMul breaks int4, the
damage is spread over the late value/FFN projections, and 16 of 36 at 8-bit restore it
(4-bit blocks of 128)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

from onnxslim.progress import task

__all__ = ["float_restored", "promotion_steps", "restore_gains"]

Score = Callable[[Path], float]


def float_restored(
    quantized: onnx.ModelProto, original: onnx.ModelProto, name: str
) -> onnx.ModelProto:
    """``quantized`` with the MatMulNBits made from MatMul ``name`` swapped back to that float
    MatMul (its weight restored, the packed tensors dropped)."""
    node = next(n for n in original.graph.node if n.name == name)
    weight = next(i for i in original.graph.initializer if i.name == node.input[1])
    result = copy.copy(quantized)
    result.graph.CopyFrom(quantized.graph)
    graph = result.graph
    index, packed = next(
        (i, n)
        for i, n in enumerate(graph.node)
        if n.op_type == "MatMulNBits" and list(n.output) == list(node.output)
    )
    del graph.node[index]
    graph.node.insert(index, node)
    dropped = set(packed.input[1:])
    still_used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, weight])
    return result


def restore_gains(
    quantized: onnx.ModelProto,
    original: onnx.ModelProto,
    names: Sequence[str],
    score: Score,
    folder: Path,
    saved: Callable[[onnx.ModelProto, Path], Path],
) -> dict[str, float]:
    """Each MatMul -> the guard score with it alone back in float (higher: more sensitive)."""
    gains: dict[str, float] = {}
    with task("quantize_int4: per-MatMul sensitivity", len(names), "MatMul") as bar:
        for name in names:
            path = saved(float_restored(quantized, original, name), folder / "restored.onnx")
            gains[name] = score(path)
            bar.advance(MatMul=name)
    return gains


def promotion_steps(gains: dict[str, float]) -> list[list[str]]:
    """The MatMuls to give 8-bit blocks, most sensitive first: the top 1, 2, 4, ... then all."""
    ranked = sorted(gains, key=lambda name: -gains[name])
    steps, count = [], 1
    while count < len(ranked):
        steps.append(ranked[:count])
        count *= 2
    if ranked:
        steps.append(ranked)
    return steps
