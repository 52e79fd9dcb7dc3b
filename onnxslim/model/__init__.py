"""Facts of a model, one home each: node MACs, parameter count, static shapes, the value probe."""

from onnxslim.model._graph_macs import MacCount, graph_macs
from onnxslim.model._macs import ShapeOf, node_macs, shape_lookup
from onnxslim.model._ops import INTEGER_OPS, MAC_OPS, RECURRENT_OPS, WEIGHT_INPUTS, onnx_opset
from onnxslim.model._probe import ValueProbe, expose_values, probe_values
from onnxslim.model._segments import (
    SEGMENT_BYTES,
    SEGMENT_THRESHOLD_BYTES,
    can_segment,
    proto_graphs,
    proto_weight_bytes,
    segment_nodes,
)
from onnxslim.model._shapes import inferred_shapes, observed_shapes
from onnxslim.model._stats import PARAMETER_DTYPES, ModelStats, model_stats, parameter_count

__all__ = [
    "node_macs",
    "graph_macs",
    "MacCount",
    "RECURRENT_OPS",
    "shape_lookup",
    "ShapeOf",
    "parameter_count",
    "PARAMETER_DTYPES",
    "ModelStats",
    "model_stats",
    "inferred_shapes",
    "observed_shapes",
    "ValueProbe",
    "probe_values",
    "expose_values",
    "WEIGHT_INPUTS",
    "INTEGER_OPS",
    "MAC_OPS",
    "onnx_opset",
    "SEGMENT_BYTES",
    "SEGMENT_THRESHOLD_BYTES",
    "can_segment",
    "proto_graphs",
    "proto_weight_bytes",
    "segment_nodes",
]
