"""``OnnxModule``: a ``torch.nn.Module`` that executes an ONNX graph (onnx_ir) with torch kernels."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from onnxslim._errors import SlimError, UnsupportedModelError
from onnxslim.model import WEIGHT_INPUTS, onnx_opset
from onnxslim.torch_bridge._kernels import KERNELS, UnsupportedKernelError, constant_value
from onnxslim.torch_bridge._kernels_control import all_initializers
from onnxslim.torch_bridge._registry import Step, run_step

__all__ = ["OnnxModule"]

logger = logging.getLogger(__name__)

# Inputs that are never trained: statistics, shapes, resampling factors, clip bounds, pad values.
_FROZEN_SLOTS: dict[str, set[int]] = {
    "BatchNormalization": {3, 4},
    "Resize": {1, 2, 3},
    "Upsample": {1},
    "Clip": {1, 2},
    "Pad": {1, 2, 3},
    "Dropout": {1, 2},
    "ConstantOfShape": {0},
    "Range": {0, 1, 2},
}


def _is_float(dtype: ir.DataType | None) -> bool:
    return dtype in (
        ir.DataType.FLOAT,
        ir.DataType.DOUBLE,
        ir.DataType.FLOAT16,
        ir.DataType.BFLOAT16,
    )


def _sanitize(name: str, taken: set[str]) -> str:
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "_"
    if key[0].isdigit():
        key = "_" + key
    candidate, suffix = key, 1
    while candidate in taken:
        candidate, suffix = f"{key}_{suffix}", suffix + 1
    taken.add(candidate)
    return candidate


def _slot_of(slots: dict[int, int], value: ir.Value) -> int:
    """The slot of ``value`` in the execution plan, numbered in first-seen order."""
    return slots.setdefault(id(value), len(slots))


def _opset(model: ir.Model) -> int:
    return onnx_opset(model.graph) or onnx_opset(model) or 1


class OnnxModule(nn.Module):
    """Executes an ONNX graph with torch ops so that its weights can be trained.

    Float initializers used as weights become ``nn.Parameter``s (one per initializer, so shared
    initializers stay shared), other initializers and Constant nodes become buffers, BatchNorm
    running statistics become buffers that stay frozen unless ``train_bn_stats`` is set.

    Args:
        model: The ONNX model (onnx_ir). It is read, never modified.
        train_bn_stats: Update BatchNorm running statistics while the module is in training mode.
        outputs: Names of intermediate values to return after the graph outputs (hint losses).
        return_dict: Return ``{name: tensor}``; otherwise a tuple in output order.

    Raises:
        UnsupportedModelError: the graph has ops (or attribute combinations) without a torch kernel.
    """

    def __init__(
        self,
        model: ir.Model,
        train_bn_stats: bool = False,
        outputs: Sequence[str] | None = None,
        *,
        return_dict: bool = True,
    ) -> None:
        super().__init__()
        graph = model.graph
        self.opset = _opset(model)
        self.train_bn_stats = train_bn_stats
        self.return_dict = return_dict
        self.input_names = [str(v.name) for v in graph.inputs if not v.is_initializer()]
        self.output_names = [v.name for v in graph.outputs]
        self._check_supported(graph)
        taken: set[str] = set()  # module keys, shared by initializers and Constant buffers
        self._register_initializers(graph, taken)
        slots: dict[int, int] = {}
        values_by_name = self._plan_steps(graph, taken, slots)
        self._plan_results(graph, outputs, values_by_name, slots)
        self._plan_frees()

    # ----------------------------------------------------------------------------- construction

    def _register_initializers(self, graph: ir.Graph, taken: set[str]) -> None:
        """Each initializer becomes a Parameter (trainable), a BN statistic buffer or a constant
        buffer; one tensor per initializer so tied weights stay tied."""
        trainable = self._trainable_initializers(graph)
        bn_statistics = {
            statistic.name
            for node in ir.traversal.RecursiveGraphIterator(graph)
            if node.op_type == "BatchNormalization"
            for index in (3, 4)
            if (statistic := node.inputs[index]) is not None and statistic.is_initializer()
        }
        self.weights = nn.ParameterDict()
        self.constants = nn.Module()
        self.statistics = nn.Module()
        # ONNX initializer name -> (container attribute, key in it)
        self.tensor_keys: dict[str, tuple[str, str]] = {}
        self.initializer_dtypes: dict[str, np.dtype] = {}
        for name, value in all_initializers(graph):  # subgraphs' too: one Parameter each
            if value.const_value is None:
                continue
            if name in self.tensor_keys:
                raise UnsupportedModelError(
                    f"initializer name '{name}' is used by two graphs of this model; "
                    "give the subgraph initializers unique names."
                )
            array = np.array(value.const_value.numpy())
            self.initializer_dtypes[name] = array.dtype
            tensor = torch.from_numpy(array.copy())
            key = _sanitize(name, taken)
            if name in trainable:
                self.weights[key] = nn.Parameter(tensor)
                self.tensor_keys[name] = ("weights", key)
            elif name in bn_statistics:
                self.statistics.register_buffer(key, tensor)
                self.tensor_keys[name] = ("statistics", key)
            else:
                self.constants.register_buffer(key, tensor)
                self.tensor_keys[name] = ("constants", key)

    def _plan_steps(
        self, graph: ir.Graph, taken: set[str], slots: dict[int, int]
    ) -> dict[str, ir.Value]:
        """The execution plan over integer slots: input, tensor and constant slots, one step
        (kernel, input slots, output slots, is BatchNorm, node label) per node. Returns every
        named value of the graph by name."""
        self._input_slots = [
            (_slot_of(slots, v), v.name) for v in graph.inputs if not v.is_initializer()
        ]
        self._tensor_slots = [
            (_slot_of(slots, value), self.tensor_keys[name])
            for name, value in all_initializers(graph)
            if name in self.tensor_keys
        ]
        self._steps: list[Step] = []
        self.control_flow = nn.ModuleList()  # If/Loop/Scan kernels: their bodies' constants
        constant_keys: list[tuple[int, str]] = []
        values_by_name: dict[str, ir.Value] = {str(v.name): v for v in graph.inputs}
        values_by_name.update(graph.initializers)
        for node in graph:
            for output in node.outputs:
                if output.name:
                    values_by_name[output.name] = output
            if node.op_type == "Constant":
                key = _sanitize(f"constant_{node.outputs[0].name}", taken)
                self.constants.register_buffer(
                    key, torch.from_numpy(constant_value(node).copy()), persistent=False
                )
                constant_keys.append((_slot_of(slots, node.outputs[0]), key))
                continue
            kernel = KERNELS[node.op_type](node, self.opset)
            if isinstance(kernel, nn.Module):
                self.control_flow.append(kernel)
            input_slots = tuple(
                -1 if v is None or not v.name and v.producer() is None else _slot_of(slots, v)
                for v in node.inputs
            ) + tuple(_slot_of(slots, v) for v in getattr(kernel, "captured", ()))
            output_slots = tuple(_slot_of(slots, v) for v in node.outputs)
            is_bn = bool(getattr(kernel, "batch_norm", False))
            self._steps.append(
                (kernel, input_slots, output_slots, is_bn, node.name or node.op_type)
            )
        self._constant_slots = constant_keys
        return values_by_name

    def _plan_results(
        self,
        graph: ir.Graph,
        outputs: Sequence[str] | None,
        values_by_name: dict[str, ir.Value],
        slots: dict[int, int],
    ) -> None:
        """Result slots: the graph outputs, then the requested intermediate values."""
        extra = list(outputs or [])
        unknown = [name for name in extra if name not in values_by_name]
        if unknown:
            raise SlimError(
                f"intermediate value(s) {', '.join(repr(n) for n in unknown)} are not in the graph; "
                "name values produced by its nodes."
            )
        self.intermediate_names = extra
        self._result_slots = [(str(v.name), _slot_of(slots, v)) for v in graph.outputs] + [
            (name, _slot_of(slots, values_by_name[name])) for name in extra
        ]
        self._slot_count = len(slots)

    def _plan_frees(self) -> None:
        """After which step each slot's value is dropped: its last use, unless it is a result."""
        keep = {slot for _, slot in self._result_slots}
        last_use: dict[int, int] = {}
        for index, (_, input_slots, _, _, _) in enumerate(self._steps):
            for slot in input_slots:
                if slot >= 0:
                    last_use[slot] = index
        self._free_after: list[tuple[int, ...]] = [() for _ in self._steps]
        for slot, index in last_use.items():
            if slot not in keep:
                self._free_after[index] += (slot,)

    @staticmethod
    def _check_supported(graph: ir.Graph) -> None:
        problems = []
        opset = int(graph.opset_imports.get("", 1))
        for node in graph:
            label = f"{node.op_type} ('{node.name}')"
            if node.domain not in ("", "ai.onnx"):
                problems.append(f"{node.domain}::{label}")
            elif node.op_type not in KERNELS:
                problems.append(label)
            elif node.op_type != "Constant":
                try:
                    KERNELS[node.op_type](node, opset)
                except UnsupportedKernelError as error:
                    problems.append(f"{label}: {error}")
        if problems:
            shown = "; ".join(problems[:10]) + (
                f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
            )
            raise UnsupportedModelError(
                f"the torch student cannot run {len(problems)} node(s) of this graph: {shown}; "
                "run Cleanup first or pass your own nn.Module as the student."
            )

    @staticmethod
    def _trainable_initializers(graph: ir.Graph) -> set[str]:
        trainable = set()
        for name, value in all_initializers(graph):
            if value.const_value is None or not _is_float(value.const_value.dtype):
                continue
            uses = list(value.uses())
            weight_use = any(index in WEIGHT_INPUTS.get(node.op_type, ()) for node, index in uses)
            frozen_only = all(index in _FROZEN_SLOTS.get(node.op_type, ()) for node, index in uses)
            if weight_use or (uses and not frozen_only and value.const_value.size > 1):
                trainable.add(name)
        return trainable

    # ----------------------------------------------------------------------------- access

    def onnx_tensor(self, name: str) -> torch.Tensor:
        """The parameter or buffer holding initializer ``name``."""
        container, key = self.tensor_keys[name]
        module_or_dict = getattr(self, container)
        return module_or_dict[key] if container == "weights" else getattr(module_or_dict, key)

    def parameter_names(self) -> dict[str, str]:
        """ONNX initializer name -> key in ``self.weights`` for every trainable initializer."""
        return {
            name: key
            for name, (container, key) in self.tensor_keys.items()
            if container == "weights"
        }

    # ----------------------------------------------------------------------------- execution

    def _to_tensor(self, name: str, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, np.ndarray | np.generic | list | tuple | int | float):
            return torch.from_numpy(np.ascontiguousarray(value))
        raise TypeError(
            f"input '{name}' must be a torch.Tensor or numpy array, not {type(value).__name__}"
        )

    def forward(
        self, *args: Any, **inputs: Any
    ) -> dict[str, torch.Tensor] | tuple[torch.Tensor, ...]:
        if args:
            if len(args) == 1 and isinstance(args[0], Mapping):
                inputs = {**args[0], **inputs}
            else:
                inputs = {**dict(zip(self.input_names, args, strict=False)), **inputs}
        env: list[Any] = [None] * self._slot_count
        device = None
        for slot, name in self._input_slots:
            if name not in inputs:
                raise SlimError(
                    f"missing model input '{name}'; the graph takes {', '.join(self.input_names)}."
                )
            tensor = self._to_tensor(name, inputs[name])
            env[slot] = tensor
            device = device or tensor.device
        for slot, (container, key) in self._tensor_slots:
            env[slot] = (
                self.weights[key]
                if container == "weights"
                else getattr(getattr(self, container), key)
            )
        for slot, key in self._constant_slots:
            env[slot] = getattr(self.constants, key)
        update_stats = self.training and self.train_bn_stats
        for index, step in enumerate(self._steps):
            run_step(step, env, update_stats)
            for slot in self._free_after[index]:
                env[slot] = None
        if self.return_dict:
            return {name: env[slot] for name, slot in self._result_slots}
        return tuple(env[slot] for _, slot in self._result_slots)

    def extra_repr(self) -> str:
        return (
            f"nodes={len(self._steps) + len(self._constant_slots)}, opset={self.opset}, "
            f"parameters={len(self.weights)}, train_bn_stats={self.train_bn_stats}"
        )
