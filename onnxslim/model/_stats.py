"""Model statistics: parameters, MACs of the compute ops (symbolic dims resolved), node count."""

from __future__ import annotations

import dataclasses
import logging
import math

import onnx_ir as ir

from onnxslim.inputs import DimSizes
from onnxslim.model._graph_macs import graph_macs
from onnxslim.model._macs import shape_lookup
from onnxslim.model._shapes import inferred_shapes

__all__ = ["ModelStats", "model_stats", "parameter_count", "PARAMETER_DTYPES"]

logger = logging.getLogger(__name__)

# Weights, float or quantized; int64/int32 tensors are shapes, indices and axes, not parameters.
PARAMETER_DTYPES = frozenset(
    {
        ir.DataType.FLOAT,
        ir.DataType.FLOAT16,
        ir.DataType.BFLOAT16,
        ir.DataType.DOUBLE,
        ir.DataType.INT8,
        ir.DataType.UINT8,
        ir.DataType.INT4,
        ir.DataType.UINT4,
        ir.DataType.FLOAT8E4M3FN,
    }
)


@dataclasses.dataclass
class ModelStats:
    """Size and cost figures of a model for given input sizes."""

    parameters: int
    macs: int
    nodes: int
    macs_per_node: dict[str, int] = dataclasses.field(default_factory=dict)
    unknown_shape_nodes: list[str] = dataclasses.field(default_factory=list)
    # how control-flow bodies were counted, where that is a choice or a guess (see graph_macs)
    mac_notes: list[str] = dataclasses.field(default_factory=list)
    # unknown node -> why (a shape shape inference left open, a negative dim)
    unknown_reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"parameters": self.parameters, "macs": self.macs, "nodes": self.nodes}


def parameter_count(model: ir.Model) -> int:
    """Elements of weight tensors: initializers and Constant nodes, subgraphs (If/Loop/Scan
    bodies) included. Float and int8/int4/fp8 weights count; int64 shape constants do not.
    """
    graphs = [model.graph] + [
        attribute.as_graph()
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        for attribute in node.attributes.values()
        if attribute.type == ir.AttributeType.GRAPH
    ]
    total = 0
    for graph in graphs:
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None and tensor.dtype in PARAMETER_DTYPES:
                total += math.prod(tensor.shape.numpy())
        for node in graph:
            total += _constant_node_parameters(node)
    return total


def _constant_node_parameters(node: ir.Node) -> int:
    """Weight elements a Constant node holds (``value`` tensors, ``value_float(s)``)."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return 0
    value = node.attributes.get("value")
    if value is not None and value.type == ir.AttributeType.TENSOR:
        tensor = value.as_tensor()
        return math.prod(tensor.shape.numpy()) if tensor.dtype in PARAMETER_DTYPES else 0
    floats = node.attributes.get("value_floats")
    if floats is not None:
        return len(floats.as_floats())
    return 1 if node.attributes.get("value_float") is not None else 0


def model_stats(model: ir.Model, sizes: DimSizes | None = None) -> ModelStats:
    """Parameters (float and int8 weights), MACs of Conv/ConvTranspose/Gemm/MatMul and the
    recurrent ops, inside If/Loop/Scan bodies too (:func:`graph_macs`), node count.

    Symbolic input dims are resolved from ``sizes`` as in :func:`onnxslim.resolve_shape`.
    """
    count = graph_macs(model.graph, shape_lookup(inferred_shapes(model, sizes)))
    node_count = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    if count.unknown:
        logger.debug(
            "MACs unknown for %d nodes (unresolved shapes): %s",
            len(count.unknown),
            count.unknown[:5],
        )
    return ModelStats(
        parameters=parameter_count(model),
        macs=count.total,
        nodes=node_count,
        macs_per_node=count.per_node,
        unknown_shape_nodes=count.unknown,
        mac_notes=count.notes,
        unknown_reasons=count.reasons,
    )
