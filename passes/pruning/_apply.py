"""Graph surgery: cut the planned units out of constants, run the rewrites, re-infer shapes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from onnxslim.passes.pruning._family import CONSUMER
from onnxslim.passes.pruning._groups import Group, Slot
from onnxslim.passes.pruning._ir import (
    constant_array,
    is_stored_constant,
    new_constant,
    set_constant,
)
from onnxslim.passes.pruning._plan import Plan
from onnxslim.passes.pruning._view import GraphView

logger = logging.getLogger(__name__)


def apply_plan(view: GraphView, plan: Plan) -> None:
    """Cuts constants along pruned axes, runs the rewrites, and re-infers shapes."""
    cuts: dict[int, tuple[ir.Value, list[tuple[int, np.ndarray]]]] = {}
    for group in plan.groups:
        if group.index not in plan.removed_units:
            continue
        for slot in group.slots:
            if slot.users:
                _cut_param_copy(view, slot, plan, group.index)
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


def _cut_param_copy(view: GraphView, slot: Slot, plan: Plan, group: int) -> None:
    array = np.delete(
        constant_array(slot.value), plan.removed(slot.value, slot.axis, group), axis=slot.axis
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
