"""What distillation needs from a pruning run: hint points and the teacher channels they kept.

The record lives in the model's metadata (``onnxslim.hints``, small JSON: a handful of value
names, each with its channel axis and the kept indices of the ORIGINAL model's channels), so it
travels with the model file and composes over several pruning steps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._family import ACTIVATION
from onnxslim.passes.pruning._groups import Group
from onnxslim.passes.pruning._importance import probe_points
from onnxslim.passes.pruning._plan import Plan

__all__ = ["HINTS_KEY", "MAX_HINTS", "choose_hint_points", "read_hints", "record_hints"]

HINTS_KEY = "onnxslim.hints"
MAX_HINTS = 8


def _residual_adds(group: Group) -> list[ir.Node]:
    """Add nodes of the group whose two inputs are both activations of it (block outputs)."""
    activations = {id(s.value) for s in group.slots if s.role == ACTIVATION}
    return [
        node
        for node in group.nodes
        if node.op_type == "Add"
        and len(node.inputs) == 2
        and all(id(v) in activations for v in node.inputs)
    ]


def _made_by(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type else None


def _is_normalized(node: ir.Node) -> bool:
    """A LayerNormalization, or the last Add of a decomposed one: (x - mean) / Sqrt(var + eps)
    times gamma plus beta."""
    if node.op_type == "LayerNormalization":
        return True
    if node.op_type != "Add":
        return False
    for mul in filter(None, (_made_by(v, "Mul") for v in node.inputs)):
        for div in filter(None, (_made_by(v, "Div") for v in mul.inputs)):
            if len(div.inputs) == 2 and _made_by(div.inputs[1], "Sqrt") is not None:
                return True
    return False


def choose_hint_points(model: ir.Model, groups: Sequence[Group]) -> list[str]:
    """Block outputs, in graph order: per prunable group with a residual Add, the last value its
    consumers read (what the next block sees); without residual Adds among the pruned units (a
    transformer whose hidden width is kept), the LayerNorm outputs, the residual stream after
    each block (all-MiniLM-L6-v2 at 0.6 of the MACs, 2 epochs: held-out cosine 0.944 against
    0.938 with hints at the pruned activations); else the last value each prunable group's
    consumers read.
    At most ``MAX_HINTS``, evenly spaced."""
    prunable = [g for g in groups if g.prunable]
    chosen = [g for g in prunable if _residual_adds(g)]
    if prunable and not chosen:
        normalized = [n.outputs[0].name for n in model.graph if _is_normalized(n)]
        if normalized:
            return _spaced([name for name in normalized if name])
    position = {id(v): i for i, node in enumerate(model.graph) for v in node.outputs}
    points: dict[str, int] = {}
    for group in chosen or prunable:
        values = {s.value.name: s.value for s in group.slots}
        placed = [(position.get(id(values[n]), -1), n) for n in probe_points([group])]
        if placed:
            where, name = max(placed)
            points.setdefault(name, where)
    return _spaced(sorted(points, key=points.__getitem__))


def _spaced(ranked: list[str]) -> list[str]:
    if len(ranked) > MAX_HINTS:
        picks = np.linspace(0, len(ranked) - 1, MAX_HINTS).round().astype(int)
        ranked = [ranked[i] for i in sorted(set(picks.tolist()))]
    return ranked


def read_hints(model: ir.Model) -> dict[str, Any] | None:
    """The record a pruning run left in ``model`` (``{"points": [...], "kept": {...}}``), or None."""
    text = model.metadata_props.get(HINTS_KEY)
    return json.loads(text) if text else None


def record_hints(model: ir.Model, groups: Sequence[Group], plan: Plan) -> None:
    """Writes the hint points and, for those the plan cuts, the kept ORIGINAL channel indices
    (composed with an earlier step's record). Read before surgery (slot uses change after it)."""
    previous = read_hints(model) or {"points": [], "kept": {}}
    kept: dict[str, dict[str, Any]] = dict(previous["kept"])
    points = choose_hint_points(model, groups)
    wanted = set(points) | set(kept)
    for group in groups:
        if group.index not in plan.removed_units:
            continue
        for slot in group.slots:
            name = slot.value.name
            if name not in wanted or slot.role != ACTIVATION:
                continue
            now = np.setdiff1d(np.arange(slot.size), plan.removed(slot.value, slot.axis))
            before = kept.get(name)
            original = np.asarray(before["kept"])[now] if before else now
            kept[name] = {"axis": slot.axis, "kept": [int(i) for i in original]}
    record = {"points": points, "kept": {n: kept[n] for n in points if n in kept}}
    model.metadata_props[HINTS_KEY] = json.dumps(record, separators=(",", ":"))
