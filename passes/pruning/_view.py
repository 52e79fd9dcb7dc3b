"""The view handlers read: the graph, its observed shapes, the options, and each node's families."""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir

from onnxslim.model import inferred_shapes, onnx_opset
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
        # id(subgraph) -> "its owner node (If/Loop/Scan) and attribute", for reasons
        self.subgraph_labels: dict[int, str] = {}
        for node in ir.traversal.RecursiveGraphIterator(self.graph):
            for name, attribute in node.attributes.items():
                inner = (
                    [attribute.as_graph()]
                    if attribute.type == ir.AttributeType.GRAPH
                    else list(attribute.as_graphs())
                    if attribute.type == ir.AttributeType.GRAPHS
                    else []
                )
                for graph in inner:
                    self.subgraph_labels[id(graph)] = (
                        f"{node.name or '<unnamed>'} ({node.op_type}) {name}"
                    )
        if self.subgraph_labels:
            self._add_subgraph_shapes()

    def _add_subgraph_shapes(self) -> None:
        """ORT cannot expose values inside If/Loop/Scan bodies: shape inference at the observed
        input sizes gives theirs (main-graph values keep their observed shapes)."""
        sizes = {
            str(v.name): self.shapes[str(v.name)]
            for v in self.graph_inputs
            if v.name in self.shapes
        }
        try:
            inferred = inferred_shapes(self.model, sizes)
        except Exception:  # noqa: BLE001 - unknown body shapes block the groups that reach them
            return
        for name, shape in inferred.items():
            self.shapes.setdefault(name, shape)

    def subgraph_label(self, graph: ir.Graph | None) -> str | None:
        """``"If_0 (If) then_branch"`` for a body, None for the main graph."""
        return None if graph is None else self.subgraph_labels.get(id(graph))

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
