"""Handlers of ops that move axes: concat, split, slice, transpose, (un)squeeze, reshape, shape, tile."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._family import ACTIVATION, Blocked, Family, HandlerResult, identity
from onnxslim.passes.pruning._handlers_dims import entry_source, targets_follow, tie_source
from onnxslim.passes.pruning._ir import constant_array, ints, new_constant, norm_axis

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView


def concat(view: GraphView, node: ir.Node) -> HandlerResult:
    out = node.outputs[0]
    out_shape = view.shape(out)
    axis = norm_axis(node.attributes.get_int("axis", 0), len(out_shape))
    families = []
    for slot_axis in range(len(out_shape)):
        members = [(out, slot_axis, ACTIVATION)]
        links = []
        offset = 0
        for operand in node.inputs:
            if operand is None:
                continue
            size = view.shape(operand)[slot_axis]
            index = len(members)
            # The same tensor twice is one member linked at two offsets.
            existing = next(
                (i for i, (v, a, _) in enumerate(members) if v is operand and a == slot_axis), None
            )
            if existing is None:
                members.append((operand, slot_axis, ACTIVATION))
            else:
                index = existing
            if slot_axis == axis:
                links.append((0, index, np.arange(offset, offset + size), np.arange(size)))
                offset += size
            else:
                links.append((0, index, *identity(size)))
        families.append(Family(members, links))
    return families


def split(view: GraphView, node: ir.Node) -> HandlerResult:
    x = node.inputs[0]
    in_shape = view.shape(x)
    axis = norm_axis(node.attributes.get_int("axis", 0), len(in_shape))
    outputs = [o for o in node.outputs]
    families = []
    for slot_axis in range(len(in_shape)):
        members = [(x, slot_axis, ACTIVATION)] + [(o, slot_axis, ACTIVATION) for o in outputs]
        links = []
        offset = 0
        for j, o in enumerate(outputs, start=1):
            size = view.shape(o)[slot_axis]
            if slot_axis == axis:
                links.append((0, j, np.arange(offset, offset + size), np.arange(size)))
                offset += size
            else:
                links.append((0, j, *identity(size)))
        family = Family(members, links)
        if slot_axis == axis:
            family.rewrite = _rewrite_split(view, node, axis)
            if node.attributes.get("num_outputs") is not None:
                family.blocked = "Split uses num_outputs (equal parts)"
            if (
                len(node.inputs) > 1
                and node.inputs[1] is not None
                and constant_array(node.inputs[1]) is None
            ):
                family.blocked = "its split sizes are computed, not constant"
        families.append(family)
    return families


def _rewrite_split(view: GraphView, node: ir.Node, axis: int) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        sizes = np.array([plan.new_size(o, axis) for o in node.outputs], dtype=np.int64)
        if node.attributes.get("split") is not None:
            node.attributes["split"] = ir.AttrInt64s("split", [int(s) for s in sizes])
        elif len(node.inputs) > 1 and node.inputs[1] is not None:
            node.replace_input_with(
                1, new_constant(view.graph, sizes, node.inputs[1].name or "split")
            )
        else:
            sizes_value = new_constant(view.graph, sizes, f"{node.name}_split")
            if view.opset >= 13:
                node.resize_inputs(2)
                node.replace_input_with(1, sizes_value)
            else:
                node.attributes["split"] = ir.AttrInt64s("split", [int(s) for s in sizes])

    return rewrite


def _slice_bounds(view: GraphView, node: ir.Node) -> list[list[int] | None] | Blocked:
    """starts, ends, axes, steps: attributes before opset 10, constant inputs after."""
    names = ("starts", "ends", "axes", "steps")
    if view.opset < 10 or node.attributes.get("starts") is not None:
        return [list(node.attributes[k].as_ints()) if k in node.attributes else None for k in names]
    bounds = []
    for input_index, name in enumerate(names, start=1):
        read = ints(node, name, input_index)
        if isinstance(read, Blocked):
            return read
        bounds.append(read)
    return bounds


def slice_(view: GraphView, node: ir.Node) -> HandlerResult:
    x, y = node.inputs[0], node.outputs[0]
    in_shape = view.shape(x)
    rank = len(in_shape)
    bounds = _slice_bounds(view, node)
    if isinstance(bounds, Blocked):
        return _computed_slice(view, node, bounds)
    starts, ends, axes, steps = bounds
    if starts is None or ends is None:
        return Blocked("Slice without starts or ends")
    axes = [norm_axis(a, rank) for a in (axes or range(len(starts)))]
    steps = steps or [1] * len(starts)
    families = []
    for slot_axis in range(rank):
        if slot_axis not in axes:
            families.append(
                Family(
                    [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)],
                    [(0, 1, *identity(in_shape[slot_axis]))],
                )
            )
            continue
        position = axes.index(slot_axis)
        selected = np.arange(in_shape[slot_axis])[
            slice(starts[position], ends[position], steps[position])
        ]
        family = Family(
            [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)],
            [(0, 1, selected, np.arange(len(selected)))],
        )
        if steps[position] != 1:
            family.blocked = f"Slice with step {steps[position]} on axis {slot_axis}"
        elif view.opset < 10 or node.attributes.get("starts") is not None:
            family.blocked = "Slice bounds given as attributes are not rewritten"
        else:
            family.rewrite = _rewrite_slice(
                view,
                node,
                x,
                slot_axis,
                position,
                int(selected[0]) if len(selected) else 0,
                len(selected),
            )
        families.append(family)
    return families


def _computed_slice(view: GraphView, node: ir.Node, reason: Blocked) -> HandlerResult:
    """Bounds computed at run time (rotary's ``x[..., : d // 2]``): the axes it does not slice
    pass through when ``axes`` is constant; the sliced ones block."""
    x, y = node.inputs[0], node.outputs[0]
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    axes = constant_array(axes_value)
    if axes is None:
        return reason
    in_shape = view.shape(x)
    sliced = {norm_axis(int(a), len(in_shape)) for a in np.atleast_1d(axes)}
    return [
        Family([(x, axis, ACTIVATION)], [], blocked=f"{reason} (axis {axis})")
        if axis in sliced
        else Family([(x, axis, ACTIVATION), (y, axis, ACTIVATION)], [(0, 1, *identity(size))])
        for axis, size in enumerate(in_shape)
    ]


def _rewrite_slice(view, node, x, axis, position, start, length) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        removed = plan.removed(x, axis)
        new_start = start - int(np.sum(removed < start))
        new_end = new_start + length - int(np.sum((removed >= start) & (removed < start + length)))
        for input_index, new_value in ((1, new_start), (2, new_end)):
            array = constant_array(node.inputs[input_index]).copy()
            array[position] = new_value
            node.replace_input_with(
                input_index,
                new_constant(view.graph, array, node.inputs[input_index].name or "slice"),
            )

    return rewrite


def transpose(view: GraphView, node: ir.Node) -> HandlerResult:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    perm = (
        list(node.attributes["perm"].as_ints())
        if "perm" in node.attributes
        else list(reversed(range(rank)))
    )
    return [
        Family(
            [(x, perm[out_axis], ACTIVATION), (y, out_axis, ACTIVATION)],
            [(0, 1, *identity(view.shape(y)[out_axis]))],
        )
        for out_axis in range(rank)
    ]


def squeeze_unsqueeze(view: GraphView, node: ir.Node) -> HandlerResult:
    # Size-1 axes appear or vanish; the other axes keep their order, so pair them by position.
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    in_axes = [a for a, d in enumerate(in_shape) if d != 1]
    out_axes = [a for a, d in enumerate(out_shape) if d != 1]
    if len(in_axes) != len(out_axes):
        return Blocked("axes could not be paired")
    return [
        Family([(x, i, ACTIVATION), (y, o, ACTIVATION)], [(0, 1, *identity(in_shape[i]))])
        for i, o in zip(in_axes, out_axes)
    ]


def reshape(view: GraphView, node: ir.Node) -> HandlerResult:
    """Follows an axis through Reshape/Flatten: identity, merge (c -> [c*k,(c+1)*k)) or split (heads)."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    families = []
    in_prefix = np.cumprod([1, *in_shape])
    out_prefix = np.cumprod([1, *out_shape])
    for in_axis, size in enumerate(in_shape):
        if size == 1:
            continue
        candidates = [
            b
            for b in range(len(out_shape))
            if out_prefix[b] == in_prefix[in_axis] and out_shape[b] != 1
        ]
        if not candidates:
            families.append(_inner_merge(view, node, in_axis, in_prefix, out_prefix))
            continue
        out_axis = candidates[0]
        out_size = out_shape[out_axis]
        members = [(x, in_axis, ACTIVATION), (y, out_axis, ACTIVATION)]
        if out_size == size:
            links = [(0, 1, *identity(size))]
        elif (
            out_size % size == 0
            and int(np.prod(in_shape[in_axis:])) % out_size == 0
            and in_prefix[in_axis] * out_size in in_prefix
        ):
            inner = out_size // size
            links = [(0, 1, np.repeat(np.arange(size), inner), np.arange(out_size))]
        elif size % out_size == 0 and out_prefix[out_axis] * size in out_prefix:
            inner = size // out_size
            links = [(0, 1, np.arange(size), np.arange(size) // inner)]
        else:
            families.append(
                Family(
                    [(x, in_axis, ACTIVATION)],
                    [],
                    blocked=f"cannot follow axis {in_axis} from {list(in_shape)} to {list(out_shape)}",
                )
            )
            continue
        family = Family(members, links)
        if node.op_type == "Reshape":
            _follow_target(view, node, family, out_axis)
        families.append(family)
    return families


def _follow_target(view: GraphView, node: ir.Node, family: Family, out_axis: int) -> None:
    """A constant target entry is rewritten; one computed as ``Shape(v)[a] * k`` ties ``(v, a)``."""
    source = entry_source(view, node.inputs[1], out_axis)
    if isinstance(source, tuple):
        family.blocked = tie_source(view, family, 1, source, view.shape(node.outputs[0])[out_axis])
        return
    reason = _target_entry_problem(view, node, out_axis)
    if reason:
        family.blocked = reason
    else:
        family.rewrite = _rewrite_reshape(view, node, out_axis)


def _inner_merge(
    view: GraphView, node: ir.Node, in_axis: int, in_prefix: np.ndarray, out_prefix: np.ndarray
) -> Family:
    """Axis ``in_axis`` as the innermost part of a merged output axis ([.., D, H] -> [.., D*H]):
    output element ``d*H + u`` is unit ``u``. Only for a bidirectional RNN's directions (Y): in
    general the outer axis may be cut by another group (a channel shuffle), which stays blocked."""
    x, y = node.inputs[0], node.outputs[0]
    size = int(view.shape(x)[in_axis])
    ends = [b for b in range(len(out_prefix) - 1) if out_prefix[b + 1] == in_prefix[in_axis + 1]]
    if not ends or out_prefix[ends[0]] >= in_prefix[in_axis] or not _from_recurrent(x):
        return Family(
            [(x, in_axis, ACTIVATION)],
            [],
            blocked=f"{node.op_type} merges axis {in_axis} into a preceding axis (channel shuffle or flatten of a leading axis)",
        )
    out_axis = ends[0]
    outer = int(view.shape(y)[out_axis]) // size
    family = Family(
        [(x, in_axis, ACTIVATION), (y, out_axis, ACTIVATION)],
        [(0, 1, np.tile(np.arange(size), outer), np.arange(outer * size))],
    )
    if node.op_type == "Reshape":
        _follow_target(view, node, family, out_axis)
    return family


def _from_recurrent(value: ir.Value | None) -> bool:
    """``value`` is an LSTM/GRU/RNN's Y, through layout ops only (Transpose, Squeeze, Identity)."""
    for _ in range(4):
        producer = None if value is None else value.producer()
        if producer is None:
            return False
        if producer.op_type in ("LSTM", "GRU", "RNN"):
            return producer.outputs[0] is value
        if producer.op_type not in ("Transpose", "Squeeze", "Identity"):
            return False
        value = producer.inputs[0]
    return False


def _shape_pieces(view: GraphView, value: ir.Value | None) -> list[tuple[ir.Node, int, int]] | None:
    """For a Concat-built shape: (concat node, input index, position) per target entry."""
    producer = None if value is None else value.producer()
    if producer is None or producer.op_type != "Concat":
        return None
    pieces = []
    for input_index, piece in enumerate(producer.inputs):
        shape = view.shape(piece)
        if shape is None or len(shape) != 1:
            return None
        for offset in range(shape[0]):
            pieces.append((producer, input_index, offset))
    return pieces


def _target_entry_problem(view: GraphView, node: ir.Node, out_axis: int) -> str | None:
    target = node.inputs[1]
    array = constant_array(target)
    if array is not None:
        return None
    pieces = _shape_pieces(view, target)
    if pieces is None or out_axis >= len(pieces):
        return "Reshape target is computed in a way not understood"
    concat_node, input_index, _ = pieces[out_axis]
    piece = concat_node.inputs[input_index]
    piece_array = constant_array(piece)
    if piece_array is None:
        return f"Reshape target entry {out_axis} is computed from shapes"
    return None


def _hint(value: ir.Value | None, default: str) -> str:
    return value.name if value is not None and value.name else default


def _rewrite_reshape(view: GraphView, node: ir.Node, out_axis: int) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        y = node.outputs[0]
        new_size = plan.new_size(y, out_axis)
        target = node.inputs[1]
        array = constant_array(target)
        if array is not None:
            if array[out_axis] in (0, -1):
                return
            array = array.copy()
            array[out_axis] = new_size
            node.replace_input_with(1, new_constant(view.graph, array, _hint(target, "shape")))
            return
        pieces = _shape_pieces(view, target)
        if pieces is None:  # _target_entry_problem vetted the target before this rewrite was made
            return
        concat_node, input_index, offset = pieces[out_axis]
        piece = concat_node.inputs[input_index]
        piece_array = constant_array(piece).copy()
        if piece_array.reshape(-1)[offset] == -1:
            return
        piece_array.reshape(-1)[offset] = new_size
        concat_node.replace_input_with(
            input_index, new_constant(view.graph, piece_array, _hint(piece, "shape"))
        )

    return rewrite


def flatten(view: GraphView, node: ir.Node) -> HandlerResult:
    return reshape(view, node)


def shape_op(view: GraphView, node: ir.Node) -> HandlerResult:
    """Shape is harmless when every reader picks entries other than the slot's axis."""
    x = node.inputs[0]
    rank = len(view.shape(x))
    start = norm_axis(node.attributes.get_int("start", 0), rank)
    end_attr = node.attributes.get("end")
    end = norm_axis(end_attr.as_int(), rank) if end_attr is not None else rank
    read: set[int] = set()
    for user, _ in node.outputs[0].uses():
        if user.op_type == "Gather" and constant_array(user.inputs[1]) is not None:
            axes = {
                start + norm_axis(int(i), end - start)
                for i in np.atleast_1d(constant_array(user.inputs[1]))
            }
        elif user.op_type == "Slice" and all(
            constant_array(v) is not None for v in user.inputs[1:3]
        ):
            begin, stop = (
                int(constant_array(user.inputs[1])[0]),
                int(constant_array(user.inputs[2])[0]),
            )
            axes = {start + a for a in range(end - start)[slice(begin, stop)]}
        else:
            axes, user = set(range(start, end)), node
        # An entry that only sizes Reshape/Expand targets which tie (x, axis) follows the cut.
        read.update(a for a in axes if not targets_follow(view, x, a, user.outputs[0]))
    return [
        Family([(x, axis, ACTIVATION)], [], blocked=f"Shape reads axis {axis}")
        if axis in read
        else Family([(x, axis, ACTIVATION)], [])
        for axis in range(rank)
    ]


def tile(view: GraphView, node: ir.Node) -> HandlerResult:
    """Axes repeated once pass through; a repeated size-1 axis (GQA's repeat_interleave) is no slot."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    families = []
    for axis, size in enumerate(in_shape):
        if size == out_shape[axis]:
            families.append(
                Family([(x, axis, ACTIVATION), (y, axis, ACTIVATION)], [(0, 1, *identity(size))])
            )
        elif size != 1:
            families.append(
                Family([(x, axis, ACTIVATION)], [], blocked=f"Tile repeats axis {axis}")
            )
    return families
