"""Choosing what to remove (ratio, MACs target, rounding) and cutting it out of the graph."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from onnxslim.passes.pruning._graph import (
    CONSUMER,
    GraphView,
    constant_array,
    is_stored_constant,
    macs_of_node,
    new_constant,
    set_constant,
)
from onnxslim.passes.pruning._groups import Group

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """Removed units per group, and the per-slot view of it that rewrites read."""

    groups: Sequence[Group]
    removed_units: dict[int, np.ndarray]

    def __post_init__(self) -> None:
        self._removed: dict[tuple[int, int], np.ndarray] = {}
        self._sizes: dict[tuple[int, int], int] = {}
        for group in self.groups:
            units = self.removed_units.get(group.index)
            if units is None or len(units) == 0:
                continue
            for slot, unit_of in zip(group.slots, group.unit_of):
                removed = np.flatnonzero(np.isin(unit_of, units))
                self._removed[(id(slot.value), slot.axis)] = removed
                self._sizes[(id(slot.value), slot.axis)] = slot.size

    def removed(self, value: ir.Value, axis: int) -> np.ndarray:
        return self._removed.get((id(value), axis), np.zeros(0, dtype=np.int64))

    def fraction(self, value: ir.Value | None, axis: int) -> float:
        key = (id(value), axis)
        if value is None or key not in self._removed:
            return 1.0
        return 1.0 - len(self._removed[key]) / self._sizes[key]

    def new_size(self, value: ir.Value, axis: int) -> int:
        key = (id(value), axis)
        return self._sizes[key] - len(self._removed[key])

    @property
    def empty(self) -> bool:
        return not self._removed


def select(
    groups: Sequence[Group],
    scores: Mapping[int, np.ndarray],
    ratio: float,
    *,
    global_ranking: bool = False,
    max_ratio: float = 0.9,
    min_kept: int = 1,
) -> dict[int, np.ndarray]:
    """Units to remove per group: lowest scores first, per segment, kept counts rounded up."""
    threshold = None
    if global_ranking and ratio > 0:
        normalized = [
            scores[g.index] / (np.mean(scores[g.index]) or 1.0) for g in groups if g.index in scores
        ]
        if normalized:
            threshold = np.quantile(np.concatenate(normalized), ratio)
    removed: dict[int, np.ndarray] = {}
    for group in groups:
        if group.index not in scores:
            continue
        group_scores = scores[group.index]
        normalized_scores = group_scores / (np.mean(group_scores) or 1.0)
        chosen = []
        for segment in group.segments:
            size = len(segment.units)
            if threshold is not None:
                to_remove = int(np.sum(normalized_scores[segment.units] < threshold))
            else:
                to_remove = int(math.floor(ratio * size + 1e-9))
            to_remove = min(to_remove, int(math.floor(max_ratio * size + 1e-9)))
            kept = max(size - to_remove, min_kept, 1)
            kept = min(size, math.ceil(kept / segment.step) * segment.step)
            if kept >= size:
                continue
            order = np.lexsort((segment.units, group_scores[segment.units]))
            chosen.append(segment.units[order[: size - kept]])
        if chosen:
            removed[group.index] = np.sort(np.concatenate(chosen))
    return removed


def node_macs(view: GraphView) -> dict[str, int]:
    return {node.name or f"#{i}": macs_of_node(view, node) for i, node in enumerate(view.graph)}


def predicted_macs(view: GraphView, plan: Plan) -> int:
    """MACs after the plan, from kept fractions of the axes each op multiplies over."""
    total = 0.0
    for node in view.graph:
        macs = macs_of_node(view, node)
        if not macs:
            continue
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        rank = len(view.shape(y))
        if node.op_type == "Conv":
            fraction = plan.fraction(y, 1) * plan.fraction(w, 1)
        elif node.op_type == "ConvTranspose":
            fraction = plan.fraction(x, 1) * plan.fraction(w, 1)
        elif node.op_type == "Gemm":
            k_axis = 0 if node.attributes.get_int("transA", 0) else 1
            fraction = plan.fraction(y, 0) * plan.fraction(y, 1) * plan.fraction(x, k_axis)
        else:
            fraction = math.prod(plan.fraction(y, a) for a in range(rank))
            fraction *= plan.fraction(x, len(view.shape(x)) - 1)
        total += macs * fraction
    return int(round(total))


def count_parameters(model: ir.Model) -> int:
    """Elements of initializers and Constant nodes (Paddle exports keep weights in Constant nodes)."""
    total = sum(
        v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None
    )
    for node in model.graph:
        if node.op_type == "Constant" and "value" in node.attributes:
            total += node.attributes["value"].as_tensor().size
    return int(total)


def apply_plan(view: GraphView, plan: Plan) -> None:
    """Cuts constants along pruned axes, runs the rewrites, and re-infers shapes."""
    cuts: dict[int, tuple[ir.Value, list[tuple[int, np.ndarray]]]] = {}
    for group in plan.groups:
        if group.index not in plan.removed_units:
            continue
        for slot in group.slots:
            if slot.users:
                _cut_param_copy(view, slot, plan)
            elif is_stored_constant(slot.value):
                cuts.setdefault(id(slot.value), (slot.value, []))[1].append(
                    (slot.axis, plan.removed(slot.value, slot.axis))
                )
    for value, axis_cuts in cuts.values():
        array = constant_array(value)
        for axis, indices in axis_cuts:
            array = np.delete(array, indices, axis=axis)
        set_constant(value, array)
    for group in plan.groups:
        if group.index in plan.removed_units:
            for rewrite in group.rewrites:
                rewrite(plan)
    reinfer_shapes(view.model)


def _cut_param_copy(view: GraphView, slot, plan: Plan) -> None:
    array = np.delete(
        constant_array(slot.value), plan.removed(slot.value, slot.axis), axis=slot.axis
    )
    copy = new_constant(view.graph, array, slot.value.name or "param")
    for node in slot.users:
        for index, value in enumerate(node.inputs):
            if value is slot.value:
                node.replace_input_with(index, copy)


def reinfer_shapes(model: ir.Model) -> None:
    keep = set(model.graph.inputs) | set(model.graph.outputs)
    for node in model.graph:
        for value in node.outputs:
            if value is not None and value not in keep and not is_stored_constant(value):
                value.shape = None
    ir.passes.common.RemoveUnusedNodesPass()(model)
    try:
        ir.passes.common.ShapeInferencePass()(model)
    except Exception as error:  # noqa: BLE001 - ORT verification is the authority on validity
        logger.warning("shape inference after pruning failed: %s", error)
    # Some exporters write -1 for a dynamic input dim; inference copies it literally into value_info.
    for node in model.graph:
        for value in node.outputs:
            if value is not None and value not in keep and value.shape is not None:
                if any(isinstance(d, int) and d < 0 for d in value.shape):
                    value.shape = ir.Shape(
                        [None if isinstance(d, int) and d < 0 else d for d in value.shape]
                    )


def zero_consumers(groups: Sequence[Group], plan: Plan) -> None:
    """Zeroes, in place, the consumer-side weight slices of removed units (the oracle's reference)."""
    for group in groups:
        if group.index not in plan.removed_units:
            continue
        for slot in group.slots:
            if slot.role == CONSUMER and is_stored_constant(slot.value):
                array = constant_array(slot.value).copy()
                index = [slice(None)] * array.ndim
                index[slot.axis] = plan.removed(slot.value, slot.axis)
                array[tuple(index)] = 0
                set_constant(slot.value, array)
