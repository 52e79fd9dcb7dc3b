"""Handlers of ops that reduce or normalize over axes: Reduce*, ArgMax/ArgMin, Softmax."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxslim.passes.pruning._family import ACTIVATION, Blocked, Family, HandlerResult, identity
from onnxslim.passes.pruning._ir import ints, norm_axis

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView


def _reduced_axes(view: GraphView, node: ir.Node, rank: int) -> list[int] | Blocked:
    axes = ints(
        node,
        "axes",
        1 if (view.opset >= 18 or node.op_type == "ReduceSum" and view.opset >= 13) else None,
    )
    if isinstance(axes, Blocked):
        return axes
    if not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(norm_axis(a, rank) for a in axes)


def reduce(view: GraphView, node: ir.Node) -> HandlerResult:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [norm_axis(node.attributes.get_int("axis", 0), rank)]
        keepdims = node.attributes.get_int("keepdims", 1)
    else:
        reduced = _reduced_axes(view, node, rank)
        if isinstance(reduced, Blocked):
            return reduced
        axes = reduced
        keepdims = node.attributes.get_int("keepdims", 1)
    families = []
    for axis in range(rank):
        if axis in axes:
            families.append(
                Family(
                    [(x, axis, ACTIVATION)], [], blocked=f"{node.op_type} reduces over axis {axis}"
                )
            )
            continue
        out_axis = axis if keepdims else axis - sum(1 for a in axes if a < axis)
        families.append(
            Family(
                [(x, axis, ACTIVATION), (y, out_axis, ACTIVATION)],
                [(0, 1, *identity(view.shape(x)[axis]))],
            )
        )
    return families


def softmax(view: GraphView, node: ir.Node) -> HandlerResult:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    axis = norm_axis(node.attributes.get_int("axis", -1 if view.opset >= 13 else 1), rank)
    # Before opset 13 Softmax flattens every axis from `axis` on into one.
    normalized = {axis} if view.opset >= 13 else set(range(axis, rank))
    families = []
    for slot_axis in range(rank):
        if slot_axis in normalized:
            families.append(
                Family(
                    [(x, slot_axis, ACTIVATION)],
                    [],
                    blocked=f"{node.op_type} normalizes over axis {slot_axis}",
                )
            )
        else:
            families.append(
                Family(
                    [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)],
                    [(0, 1, *identity(view.shape(x)[slot_axis]))],
                )
            )
    return families
