"""Graph surgery: cut the planned units out of constants, run the rewrites, re-infer shapes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

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

_ALIGNMENT = 1 << 16
_SPILL_MIN_BYTES = 1 << 20  # smaller cuts stay in memory


def release_mapped(value: ir.Value | None) -> None:
    """Closes the memory map of a value's external tensor (reopened lazily on the next read)."""
    tensor = value.const_value if value is not None else None
    if isinstance(tensor, ir.ExternalTensor):
        with contextlib.suppress(BufferError):  # an array still views it: it stays mapped
            tensor.release()


class _Spill:
    """Cut weights of memory-mapped models go to a scratch file, one at a time, and are mapped
    back: the pruned model never holds its weights in memory (the file goes with the model)."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.file: Any = None
        self.folder = ""

    def put(self, value: ir.Value, array: np.ndarray) -> None:
        if self.file is None:
            self.folder = tempfile.mkdtemp(prefix="onnxslim-pruned-")
            weakref.finalize(self.model, shutil.rmtree, self.folder, True)
            self.file = open(os.path.join(self.folder, "pruned.bin"), "wb")  # noqa: SIM115
        array = np.ascontiguousarray(array)
        offset = -(-self.file.tell() // _ALIGNMENT) * _ALIGNMENT  # ORT maps aligned offsets
        self.file.seek(offset)
        self.file.write(array.data)
        self.file.flush()
        value.const_value = ir.ExternalTensor(
            "pruned.bin",
            offset,
            array.nbytes,
            ir.DataType.from_numpy(array.dtype),
            shape=ir.Shape(array.shape),
            name=value.name or "",
            base_dir=self.folder,
        )
        value.shape = ir.Shape(array.shape)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


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
    spill = _Spill(view.model)
    for value, axis_cuts in cuts.values():
        mapped = isinstance(value.const_value, ir.ExternalTensor)
        array = constant_array(value)
        for axis, indices in axis_cuts:
            array = np.delete(array, indices, axis=axis)
        if mapped and array.nbytes > _SPILL_MIN_BYTES:
            old = value.const_value
            spill.put(value, array)
            del array
            if isinstance(old, ir.ExternalTensor):
                old.release()
        else:
            set_constant(value, array)
    spill.close()
    for group in plan.groups:
        if group.index in plan.removed_units:
            for rewrite in group.rewrites:
                rewrite(plan)
    reinfer_shapes(view.model)


def _cut_param_copy(view: GraphView, slot: Slot, plan: Plan, group: int) -> None:
    array = np.delete(
        constant_array(slot.value), plan.removed(slot.value, slot.axis, group), axis=slot.axis
    )
    # in the users' own graph (a body's parameter stays in the body)
    graph = slot.users[0].graph if slot.users and slot.users[0].graph else view.graph
    copy = new_constant(graph, array, slot.value.name or "param")
    for node in slot.users:
        for index, value in enumerate(node.inputs):
            if value is slot.value:
                node.replace_input_with(index, copy)


def reinfer_shapes(model: ir.Model) -> None:
    keep = set(model.graph.inputs) | set(model.graph.outputs)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.graph is not model.graph and node.graph is not None:
            keep |= set(node.graph.inputs) | set(node.graph.outputs)  # bodies' edges keep sizes
    for node in ir.traversal.RecursiveGraphIterator(model.graph):  # bodies' values too
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
