"""The view handlers read: the graph, its observed shapes, the options, and each node's families."""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir

from onnxslim.model import onnx_opset
from onnxslim.passes.pruning._family import Blocked, Family
from onnxslim.passes.pruning._handlers import HANDLERS
from onnxslim.passes.pruning._ir import constant_array, is_constant


class GraphView:
    """The graph, its concrete shapes and options that handlers read."""

    def __init__(
        self, model: ir.Model, shapes: Mapping[str, tuple[int, ...]], prune_hidden: bool = False
    ):
        self.model = model
        self.graph = model.graph
        self.shapes = dict(shapes)
        self.prune_hidden = prune_hidden
        self.opset = onnx_opset(model) or 13
        self.graph_inputs = {v for v in self.graph.inputs if not v.is_initializer()}
        self.graph_outputs = set(self.graph.outputs)
        self._families: dict[int, list[Family] | str] = {}

    def shape(self, value: ir.Value | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        array = None
        if is_constant(value):
            array = constant_array(value)
        if array is not None:
            return tuple(array.shape)
        return None if value.name is None else self.shapes.get(value.name)

    def families(self, node: ir.Node) -> list[Family] | str:
        """All families of ``node``, or a reason string when the node blocks every slot."""
        key = id(node)
        if key not in self._families:
            self._families[key] = self._families_of(node)
        return self._families[key]

    def _families_of(self, node: ir.Node) -> list[Family] | str:
        handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if handler is None:
            domain = f" in domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
            return f"op {node.op_type}{domain} has no pruning handler"
        if any(self.shape(v) is None for v in node.inputs if v is not None) or any(
            self.shape(v) is None
            for v in node.outputs
            if v is not None and v.uses() or v in self.graph_outputs
        ):
            return "shapes unknown"
        result = handler(self, node)
        return result.reason if isinstance(result, Blocked) else result
