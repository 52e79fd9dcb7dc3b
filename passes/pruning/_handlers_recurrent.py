"""Handlers of the recurrent ops (LSTM, GRU, RNN): hidden units, with their gate blocks, as one unit.

A hidden unit ``u`` is row ``g*H + u`` of every gate block ``g`` of W and R, the same rows of
both halves of B (and of P's three peepholes), column ``u`` of R (the recurrence reads it back),
and the last axis of Y, Y_h, Y_c and of the initial states. Removing it is exact: nothing else
reads unit ``u``. Zero initial states (``ConstantOfShape`` of 0, or a zero constant) are dropped
by the rewrite: ONNX's default state is zero, and their shape constants would need cutting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._family import (
    ACTIVATION,
    CONSUMER,
    PARAM,
    PRODUCER,
    Blocked,
    Family,
    HandlerResult,
    identity,
)
from onnxslim.passes.pruning._ir import constant_array, is_constant

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_INITIAL_STATES = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}


def recurrent(view: GraphView, node: ir.Node) -> HandlerResult:
    """Families of an LSTM/GRU/RNN node: hidden units, input features, batch, sequence."""
    x, w, r = node.inputs[0], node.inputs[1], node.inputs[2]
    if not (is_constant(w) and is_constant(r)):
        return Blocked(f"{node.op_type} weights W and R are not constants")
    gates, layout = GATES[node.op_type], node.attributes.get_int("layout", 0)
    hidden = view.shape(r)[2]
    families = [
        _hidden_family(view, node, gates, hidden),
        Family([(x, 2, ACTIVATION), (w, 2, CONSUMER)], [(0, 1, *identity(view.shape(x)[2]))]),
    ]
    seq_axis, batch_axis = (1, 0) if layout else (0, 1)
    state_batch = 0 if layout else 1  # initial states and Y_h/Y_c: [D, B, H] or [B, D, H]
    batch = [(x, batch_axis, ACTIVATION)]
    sequence = [(x, seq_axis, ACTIVATION)]
    outputs = list(node.outputs) + [None] * (3 - len(node.outputs))
    if _known(view, outputs[0]):
        batch.append((outputs[0], 0 if layout else 2, ACTIVATION))
        sequence.append((outputs[0], seq_axis, ACTIVATION))
    for index in (1, 2):
        if _known(view, outputs[index]):
            batch.append((outputs[index], state_batch, ACTIVATION))
    for index in _INITIAL_STATES[node.op_type]:
        state = _input(node, index)
        if state is not None and not _is_zero(state):
            batch.append((state, state_batch, PARAM if is_constant(state) else ACTIVATION))
    families.append(
        Family(batch, [(0, j, *identity(view.shape(x)[batch_axis])) for j in range(1, len(batch))])
    )
    families.append(
        Family(
            sequence, [(0, j, *identity(view.shape(x)[seq_axis])) for j in range(1, len(sequence))]
        )
    )
    return families


def _hidden_family(view: GraphView, node: ir.Node, gates: int, hidden: int) -> Family:
    w, r = node.inputs[1], node.inputs[2]
    assert w is not None and r is not None  # recurrent() checked both are constants
    units = np.arange(hidden)
    # member 0, R's input axis, holds each unit once: every other member links to it
    members: list[tuple[ir.Value, int, str]] = [
        (r, 2, CONSUMER),
        (w, 1, PRODUCER),
        (r, 1, PRODUCER),
    ]
    links = [(0, 1, np.tile(units, gates), np.arange(gates * hidden))]
    links.append((0, 2, np.tile(units, gates), np.arange(gates * hidden)))
    optional = [(3, 2 * gates), (7, 3)] if node.op_type == "LSTM" else [(3, 2 * gates)]
    for index, blocks in optional:  # B: [Wb, Rb] gate blocks; P: the three peepholes
        value = _input(node, index)
        if value is not None:
            members.append((value, 1, PARAM if is_constant(value) else ACTIVATION))
            links.append((0, len(members) - 1, np.tile(units, blocks), np.arange(blocks * hidden)))
    outputs = list(node.outputs)
    for index, value in enumerate(outputs[:3]):
        if _known(view, value):
            members.append((value, 3 if index == 0 else 2, ACTIVATION))
            links.append((0, len(members) - 1, units, units))
    zero_states = []
    for index in _INITIAL_STATES[node.op_type]:
        state = _input(node, index)
        if state is None:
            continue
        if _is_zero(state):
            zero_states.append(index)
            continue
        members.append((state, 2, PARAM if is_constant(state) else ACTIVATION))
        links.append((0, len(members) - 1, units, units))
    return Family(members, links, rewrite=_rewrite_hidden(node, r, zero_states))


def _rewrite_hidden(node: ir.Node, r: ir.Value, zero_states: list[int]) -> Callable[[Any], None]:
    def rewrite(plan: Any) -> None:
        removed = len(plan.removed(r, 2))
        if not removed:
            return
        hidden = node.attributes.get_int("hidden_size", 0)
        node.attributes["hidden_size"] = ir.AttrInt64("hidden_size", hidden - removed)
        for index in zero_states:  # a zero state is ONNX's default: the input can go
            node.replace_input_with(index, None)

    return rewrite


def _input(node: ir.Node, index: int) -> ir.Value | None:
    value = node.inputs[index] if len(node.inputs) > index else None
    return value if value is not None and value.name != "" else None


def _known(view: GraphView, value: ir.Value | None) -> bool:
    return value is not None and value.name != "" and view.shape(value) is not None


# Ops that only move or select data: zeros in, zeros out (torch slices one zero state per layer).
_DATA_MOVES = {
    "Slice",
    "Gather",
    "Squeeze",
    "Unsqueeze",
    "Reshape",
    "Expand",
    "Identity",
    "Transpose",
}


def _is_zero(value: ir.Value | None) -> bool:
    """All zeros: a zero constant, or a ConstantOfShape of 0 (its default), through data moves."""
    for _ in range(8):
        if value is None:
            return False
        array = constant_array(value)
        if array is not None:
            return not np.any(array)
        producer = value.producer()
        if producer is None:
            return False
        if producer.op_type == "ConstantOfShape":
            fill = producer.attributes.get("value")
            return fill is None or not np.any(fill.as_tensor().numpy())
        if producer.op_type not in _DATA_MOVES:
            return False
        value = producer.inputs[0]
    return False


# Layout ops a carried state passes through between the graph boundary and the recurrent op.
_STATE_LAYOUT = {
    "Identity",
    "Squeeze",
    "Unsqueeze",
    "Gather",
    "Slice",
    "Split",
    "Concat",
    "Reshape",
}


def recurrent_state(value: ir.Value) -> bool:
    """``value`` is an LSTM/GRU/RNN initial state or a last state (Y_h, Y_c), through layout ops
    only: at the graph boundary, a streaming model's carried state (fed back as returned)."""
    return _feeds_state(value, 0) or _last_state(value, 0)


def _feeds_state(value: ir.Value, depth: int) -> bool:
    for user, index in value.uses():
        if user.op_type in _INITIAL_STATES and index in _INITIAL_STATES[user.op_type]:
            return True
        if user.op_type in _STATE_LAYOUT and (index == 0 or user.op_type == "Concat"):
            if depth < 4 and any(_feeds_state(o, depth + 1) for o in user.outputs):
                return True
    return False


def _last_state(value: ir.Value, depth: int) -> bool:
    producer = value.producer()
    if producer is None:
        return False
    if producer.op_type in GATES:
        return value in producer.outputs[1:]
    if producer.op_type not in _STATE_LAYOUT or depth >= 4:
        return False
    data = producer.inputs if producer.op_type == "Concat" else producer.inputs[:1]
    return any(v is not None and _last_state(v, depth + 1) for v in data)
