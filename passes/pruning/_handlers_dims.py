"""Shape arithmetic that follows a cut: targets computed from ``Shape`` of a tied value, and Expand.

Exporters compute Reshape/Expand targets from the runtime shape (``x.view(b, s, n * h, d)``,
GQA's ``expand`` of the KV heads). An entry that is ``Shape(v)[axis] * k`` recomputes itself
after pruning when ``(v, axis)`` is cut with the group, so the handler ties ``(v, axis)`` in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._family import ACTIVATION, Family, HandlerResult, identity
from onnxslim.passes.pruning._ir import constant_array, norm_axis

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView

Source = tuple[ir.Value, int, int]  # Shape(value)[axis] * factor
# Int ops a shape expression flows through before it reaches a Reshape/Expand target.
_SHAPE_OPS = {
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Identity",
    "Mul",
    "Where",
    "Equal",
    "Slice",
    "Reshape",  # of the shape vector itself (input 0); input 1 is a target
}
_TARGETS = {"Reshape": 1, "Expand": 1}


def _const(value: ir.Value | None) -> np.ndarray | None:
    """Constant content, also through Mul/Neg of constants (torch's ``-1 * ones(n)``)."""
    array = constant_array(value)
    producer = None if value is None else value.producer()
    if array is not None or producer is None or producer.op_type not in ("Mul", "Neg"):
        return array
    parts = [_const(v) for v in producer.inputs]
    if any(p is None for p in parts):
        return None
    return -parts[0] if producer.op_type == "Neg" else parts[0] * parts[1]  # type: ignore[operator]


def entry_source(
    view: GraphView, value: ir.Value | None, position: int, depth: int = 0
) -> Source | int | None:
    """Where entry ``position`` of a 1-D int tensor (or a scalar, position 0) comes from."""
    array = _const(value)
    if array is not None:
        flat = array.reshape(-1)
        return int(flat[position]) if 0 <= position < flat.size else None
    producer = None if value is None else value.producer()
    if producer is None or depth > 12 or producer.domain not in ("", "ai.onnx"):
        return None
    op, inputs = producer.op_type, producer.inputs
    if op == "Shape" and inputs[0] is not None:
        rank = len(view.shape(inputs[0]) or ())
        start = norm_axis(producer.attributes.get_int("start", 0), rank)
        return (inputs[0], start + position, 1)
    if op in ("Unsqueeze", "Squeeze", "Cast", "Identity") or (
        op == "Reshape" and len(view.shape(inputs[0]) or ()) <= 1
    ):
        return entry_source(view, inputs[0], position, depth + 1)
    if op == "Gather" and producer.attributes.get_int("axis", 0) == 0:
        indices = constant_array(inputs[1])
        data_shape = view.shape(inputs[0])
        if indices is None or data_shape is None or len(data_shape) != 1:
            return None
        flat = np.atleast_1d(indices).reshape(-1)
        if position >= flat.size:
            return None
        return entry_source(
            view, inputs[0], norm_axis(int(flat[position]), data_shape[0]), depth + 1
        )
    if op == "Slice" and len(inputs) >= 3:
        starts, data_shape = constant_array(inputs[1]), view.shape(inputs[0])
        steps = constant_array(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
        if starts is None or data_shape is None or len(data_shape) != 1:
            return None
        if steps is not None and int(steps.reshape(-1)[0]) != 1:
            return None
        start = int(np.clip(norm_axis(int(starts.reshape(-1)[0]), data_shape[0]), 0, data_shape[0]))
        return entry_source(view, inputs[0], start + position, depth + 1)
    if op == "Concat":
        offset = 0
        for piece in inputs:
            shape = view.shape(piece)
            if shape is None or len(shape) != 1:
                return None
            if position < offset + shape[0]:
                return entry_source(view, piece, position - offset, depth + 1)
            offset += shape[0]
        return None
    if op == "Mul":
        return _scaled(view, producer, position, depth)
    if op == "Where":
        return _where_source(view, producer, position, depth)
    return None


def _scaled(view: GraphView, node: ir.Node, position: int, depth: int) -> Source | int | None:
    for index in (0, 1):
        factor = _const(node.inputs[1 - index])
        if factor is None or factor.size != 1:
            continue
        source = entry_source(view, node.inputs[index], position, depth + 1)
        if isinstance(source, int):
            return source * int(factor.reshape(-1)[0])
        if source is not None:
            return (source[0], source[1], source[2] * int(factor.reshape(-1)[0]))
    return None


def _where_source(view: GraphView, node: ir.Node, position: int, depth: int) -> Source | None:
    """torch's ``Where(Equal(t, -1), 1, t)``: a shape-derived ``t`` is never -1, so it is ``t``."""
    condition, _, otherwise = node.inputs
    equal = None if condition is None else condition.producer()
    if equal is None or equal.op_type != "Equal" or otherwise not in equal.inputs:
        return None
    other = equal.inputs[1] if equal.inputs[0] is otherwise else equal.inputs[0]
    minus = _const(other)
    if minus is None or not np.all(minus == -1):
        return None
    source = entry_source(view, otherwise, position, depth + 1)
    return source if isinstance(source, tuple) and source[2] > 0 else None


def shape_targets(value: ir.Value, depth: int = 0) -> list[ir.Node] | None:
    """The Reshape/Expand nodes whose target ``value`` (a shape expression) flows into; None when
    it also reaches anything else (a Range, a Slice bound...)."""
    found: list[ir.Node] = []
    for user, index in value.uses():
        if _TARGETS.get(user.op_type) == index:
            found.append(user)
            continue
        if user.op_type not in _SHAPE_OPS or depth > 12:
            return None
        for output in user.outputs:
            below = shape_targets(output, depth + 1)
            if below is None:
                return None
            found += below
    return found


def targets_follow(view: GraphView, x: ir.Value, axis: int, entry: ir.Value) -> bool:
    """Every use of ``entry`` (read from ``Shape(x)``) ends in a Reshape/Expand target with an
    entry that is ``Shape(x)[axis] * k``: that handler ties ``(x, axis)``, so the cut follows."""
    targets = shape_targets(entry)
    if not targets:
        return False
    for node in targets:
        length = (view.shape(node.inputs[1]) or (0,))[0]
        sources = [entry_source(view, node.inputs[1], p) for p in range(length)]
        if not any(isinstance(s, tuple) and s[0] is x and s[1] == axis for s in sources):
            return False
    return True


def tie_source(
    view: GraphView, family: Family, out_index: int, source: Source, out_size: int
) -> str | None:
    """Adds ``Shape(v)[axis]`` of a computed target entry to ``family`` (tied to its member
    ``out_index``, ``k`` output elements per element of v); a reason when sizes disagree."""
    v, axis, factor = source
    shape = view.shape(v)
    if shape is None or axis >= len(shape) or shape[axis] * factor != out_size or factor <= 0:
        return "its target entry is computed from a shape that does not match"
    index = next((i for i, (m, a, _) in enumerate(family.members) if m is v and a == axis), None)
    if index is None:
        family.members.append((v, axis, ACTIVATION))
        index = len(family.members) - 1
    family.links.append((out_index, index, np.arange(out_size), np.arange(out_size) // factor))
    return None


def expand(view: GraphView, node: ir.Node) -> HandlerResult:
    """Axes Expand keeps pass through when their target entry is 1 or follows the input's shape;
    an axis broadcast from 1 (GQA's repeat of the KV heads) is no slot."""
    x, target, y = node.inputs[0], node.inputs[1], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    lead = len(out_shape) - len(in_shape)
    families = []
    for axis, size in enumerate(in_shape):
        out_axis = axis + lead
        if size != out_shape[out_axis]:
            if size != 1:
                families.append(
                    Family([(x, axis, ACTIVATION)], [], blocked=f"Expand repeats axis {axis}")
                )
            continue
        family = Family(
            [(x, axis, ACTIVATION), (y, out_axis, ACTIVATION)], [(0, 1, *identity(size))]
        )
        source = entry_source(view, target, out_axis)
        if isinstance(source, tuple):
            family.blocked = tie_source(view, family, 1, source, size)
        elif source != 1 and size > 1:
            family.blocked = f"Expand target entry {out_axis} is {'computed' if source is None else 'a constant'}"
        families.append(family)
    return families
