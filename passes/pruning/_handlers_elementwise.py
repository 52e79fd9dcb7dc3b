"""Handlers of ops that keep their axes: unary, broadcasting n-ary, norms, pools, resize, pad."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxslim.passes.pruning._family import (
    ACTIVATION,
    PARAM,
    STAT,
    Blocked,
    Family,
    HandlerResult,
    identity,
)
from onnxslim.passes.pruning._ir import constant_array, ints, is_constant, new_constant, norm_axis

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView


def _same_axes(
    view: GraphView, node: ir.Node, inputs: list[int], outputs: list[int], skip=()
) -> list[Family]:
    """Identity families axis by axis across the given inputs/outputs (same rank)."""
    x = node.inputs[inputs[0]]
    rank = len(view.shape(x))
    families = []
    for axis in range(rank):
        if axis in skip:
            continue
        members = [(node.inputs[i], axis, ACTIVATION) for i in inputs if node.inputs[i] is not None]
        members += [
            (node.outputs[o], axis, ACTIVATION) for o in outputs if node.outputs[o] is not None
        ]
        size = view.shape(x)[axis]
        families.append(Family(members, [(0, j, *identity(size)) for j in range(1, len(members))]))
    return families


def unary(view: GraphView, node: ir.Node) -> HandlerResult:
    # Extra inputs (Clip min/max, Dropout ratio) are scalars and do not couple.
    return _same_axes(view, node, [0], [0])


def elementwise(view: GraphView, node: ir.Node) -> HandlerResult:
    """Broadcasting n-ary op: operands of size 1 on an axis do not couple; constants are params."""
    out = node.outputs[0]
    out_shape = view.shape(out)
    rank = len(out_shape)
    families = []
    for axis in range(rank):
        members = [(out, axis, ACTIVATION)]
        for operand in node.inputs:
            shape = view.shape(operand)
            if operand is None or shape is None:  # an omitted optional input couples nothing
                continue
            operand_axis = axis - (rank - len(shape))
            if operand_axis < 0 or (shape[operand_axis] == 1 and out_shape[axis] != 1):
                continue
            role = PARAM if is_constant(operand) else ACTIVATION
            members.append((operand, operand_axis, role))
        families.append(
            Family(members, [(0, j, *identity(out_shape[axis])) for j in range(1, len(members))])
        )
    return families


def batch_norm(view: GraphView, node: ir.Node) -> HandlerResult:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    families = []
    for axis in range(rank):
        members = [(x, axis, ACTIVATION), (y, axis, ACTIVATION)]
        if axis == 1:
            roles = (
                [PARAM, PARAM, STAT, STAT]
                if node.op_type == "BatchNormalization"
                else [PARAM, PARAM]
            )
            members += [(v, 0, role) for v, role in zip(node.inputs[1:], roles) if v is not None]
        families.append(
            Family(
                members, [(0, j, *identity(view.shape(x)[axis])) for j in range(1, len(members))]
            )
        )
    return families


def layer_norm(view: GraphView, node: ir.Node) -> HandlerResult:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    axis = norm_axis(node.attributes.get_int("axis", -1), rank)
    families = []
    for slot_axis in range(rank):
        members = [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)]
        size = view.shape(x)[slot_axis]
        if slot_axis < axis:
            families.append(Family(members, [(0, 1, *identity(size))]))
            continue
        param_axis = slot_axis - axis
        for param, role in zip(node.inputs[1:], (PARAM, PARAM)):
            if (
                param is not None
                and view.shape(param)[param_axis - (rank - axis - len(view.shape(param)))] != 1
            ):
                members.append((param, len(view.shape(param)) - (rank - slot_axis), role))
        family = Family(
            members,
            [(0, j, *identity(size)) for j in range(1, len(members))],
            lossy="LayerNormalization normalizes over it",
        )
        if not view.prune_hidden:
            family.blocked = f"LayerNormalization normalizes over axis {slot_axis} (hidden-size pruning is off: prune_hidden=True)"
        families.append(family)
    return families


def _spatial_preserving(view: GraphView, node: ir.Node, reason: str) -> list[Family]:
    """Batch and channel axes pass through; spatial axes are not slots."""
    families = _same_axes(view, node, [0], [0], skip=range(2, len(view.shape(node.inputs[0]))))
    for axis in range(2, len(view.shape(node.inputs[0]))):
        families.append(
            Family([(node.inputs[0], axis, ACTIVATION)], [], blocked=f"{reason} axis {axis}")
        )
    return families


def pool(view: GraphView, node: ir.Node) -> HandlerResult:
    return _spatial_preserving(view, node, "pooling over")


def resize(view: GraphView, node: ir.Node) -> HandlerResult:
    in_shape, out_shape = view.shape(node.inputs[0]), view.shape(node.outputs[0])
    families = []
    for axis in range(len(in_shape)):
        if in_shape[axis] != out_shape[axis]:
            families.append(
                Family([(node.inputs[0], axis, ACTIVATION)], [], blocked=f"resizes axis {axis}")
            )
            continue
        family = Family(
            [(node.inputs[0], axis, ACTIVATION), (node.outputs[0], axis, ACTIVATION)],
            [(0, 1, *identity(in_shape[axis]))],
        )
        sizes = node.inputs[3] if len(node.inputs) > 3 else None
        if sizes is not None:
            if constant_array(sizes) is None:
                family.blocked = "its 'sizes' input is computed, not constant"
            else:
                family.rewrite = _rewrite_vector_entry(view, node, 3, axis, node.outputs[0])
        families.append(family)
    return families


def _rewrite_vector_entry(
    view: GraphView, node: ir.Node, input_index: int, position: int, value: ir.Value
):
    def rewrite(plan) -> None:
        source = node.inputs[input_index]
        array = constant_array(source).copy()
        array[position] = plan.new_size(value, position)
        hint = source.name if source is not None and source.name else "sizes"
        node.replace_input_with(input_index, new_constant(view.graph, array, hint))

    return rewrite


def pad(view: GraphView, node: ir.Node) -> HandlerResult:
    pads = ints(node, "pads", 1)
    if isinstance(pads, Blocked):
        return pads
    rank = len(view.shape(node.inputs[0]))
    families = []
    for axis in range(rank):
        if pads and (pads[axis] != 0 or pads[axis + rank] != 0):
            families.append(
                Family([(node.inputs[0], axis, ACTIVATION)], [], blocked=f"pads axis {axis}")
            )
            continue
        families.append(
            Family(
                [(node.inputs[0], axis, ACTIVATION), (node.outputs[0], axis, ACTIVATION)],
                [(0, 1, *identity(view.shape(node.inputs[0])[axis]))],
            )
        )
    return families
