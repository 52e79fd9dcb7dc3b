"""Model statistics: parameters, MACs of the compute ops (symbolic dims resolved), node count."""

from __future__ import annotations

import dataclasses
import logging
import math

import onnx_ir as ir

from onnxslim.inputs import DimSizes
from onnxslim.model._macs import node_macs, shape_lookup
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

    def to_dict(self) -> dict:
        return {"parameters": self.parameters, "macs": self.macs, "nodes": self.nodes}


def parameter_count(model: ir.Model) -> int:
    """Elements of weight tensors (initializers and Constant nodes of the main graph).

    Float and int8/int4/fp8 weights count; int64 shape constants do not.
    """
    total = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and tensor.dtype in PARAMETER_DTYPES:
            total += math.prod(tensor.shape.numpy())
    for node in model.graph:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attribute = node.attributes.get("value")
            if attribute is not None and attribute.type == ir.AttributeType.TENSOR:
                tensor = attribute.as_tensor()
                if tensor.dtype in PARAMETER_DTYPES:
                    total += math.prod(tensor.shape.numpy())
    return total


def model_stats(model: ir.Model, sizes: DimSizes | None = None) -> ModelStats:
    """Parameters (float and int8 weights), MACs of Conv/ConvTranspose/Gemm/MatMul, node count.

    Symbolic input dims are resolved from ``sizes`` as in :func:`onnxslim.resolve_shape`.
    """
    shape_of = shape_lookup(inferred_shapes(model, sizes))
    macs_per_node: dict[str, int] = {}
    unknown: list[str] = []
    total_macs = 0
    node_count = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        node_count += 1
        macs = node_macs(node, shape_of)
        if macs is None:
            unknown.append(node.name or node.op_type)
            continue
        if macs:
            macs_per_node[node.name or f"{node.op_type}_{node_count}"] = macs
            total_macs += macs
    if unknown:
        logger.debug("MACs unknown for %d nodes (unresolved shapes): %s", len(unknown), unknown[:5])
    return ModelStats(
        parameters=parameter_count(model),
        macs=total_macs,
        nodes=node_count,
        macs_per_node=macs_per_node,
        unknown_shape_nodes=unknown,
    )
