"""Model statistics: parameters, MACs of the compute ops (symbolic dims resolved), node count."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim._inputs import DimSizes, input_specs, resolve_shape

__all__ = ["ModelStats", "model_stats", "infer_value_shapes"]

logger = logging.getLogger(__name__)

# Initializers above this size are hidden from onnx's shape inference (it copies protos).
_INLINE_LIMIT_BYTES = 1024
_PARAMETER_DTYPES = {
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


def infer_value_shapes(
    model: ir.Model, sizes: DimSizes | None = None
) -> dict[str, tuple[int, ...]]:
    """Static shapes of every value ONNX shape inference can resolve, with inputs made concrete.

    The model is left exactly as it was (initializer order, input shapes, tensors).
    """
    graph = model.graph
    original_inputs = list(graph.inputs)
    original_shapes = {value: value.shape for value in original_inputs}
    initializers = list(graph.initializers.values())
    tensors = {value: value.const_value for value in initializers}
    try:
        for spec in input_specs(model):
            value = next(v for v in original_inputs if v.name == spec.name)
            value.shape = ir.Shape(resolve_shape(spec, sizes))
        for value in initializers:
            tensor = value.const_value
            if tensor is None:
                continue
            if value.shape is None:
                value.shape = tensor.shape
            if value.dtype is None:
                value.dtype = tensor.dtype
            if tensor.nbytes > _INLINE_LIMIT_BYTES:
                if value not in graph.inputs:
                    graph.inputs.append(value)
                graph.initializers.pop(value.name)
                value.const_value = None
        proto = ir.serde.serialize_model(model)
    finally:
        for value in initializers:
            value.const_value = tensors[value]
        graph.initializers.clear()
        for value in initializers:
            graph.initializers.add(value)
        graph.inputs.clear()
        graph.inputs.extend(original_inputs)
        for value, shape in original_shapes.items():
            value.shape = shape
    inferred = _infer(proto)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(info: onnx.ValueInfoProto) -> None:
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            return
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)

    def walk(graph_proto: onnx.GraphProto) -> None:
        for info in [*graph_proto.input, *graph_proto.value_info, *graph_proto.output]:
            record(info)
        for tensor in graph_proto.initializer:
            shapes.setdefault(tensor.name, tuple(tensor.dims))
        for node in graph_proto.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)
                elif attribute.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                    shapes.setdefault(node.output[0], tuple(attribute.t.dims))

    walk(inferred.graph)
    return shapes


def _symbolic_infer(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """ORT's symbolic shape inference, keeping partial results.

    Its public ``infer_shapes`` raises on an incomplete result and first writes
    ``sym_shape_infer_temp.onnx`` into the working directory; the same steps without that.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    opset = get_opset(proto)
    if not opset or opset < 7:
        return None
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)
    inference._preprocess(proto)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ORT's symbolic shape inference (follows Range, Shape arithmetic into Reshape), then onnx's."""
    try:
        inferred = _symbolic_infer(proto)
        if inferred is not None:
            return inferred
    except Exception as error:  # unsupported op or failed merge: fall back to onnx's inference
        logger.debug("symbolic shape inference failed: %s", error)
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as error:  # inference failures leave shapes unknown, never abort stats
        logger.debug("shape inference failed: %s", error)
        return proto


def _shape(value: ir.Value | None, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    if value is None:
        return None
    if value.name in shapes:
        return shapes[value.name]
    if value.shape is not None and value.shape.is_static():
        return tuple(int(d) for d in value.shape)
    if value.const_value is not None:
        return tuple(value.const_value.shape)
    return None


def _matmul_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    a2 = a if len(a) >= 2 else (1, *a)
    b2 = b if len(b) >= 2 else (*b, 1)
    batch = np.broadcast_shapes(a2[:-2], b2[:-2]) if (len(a2) > 2 or len(b2) > 2) else ()
    return math.prod(batch) * a2[-2] * a2[-1] * b2[-1]


def _node_macs(node: ir.Node, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """MACs of one compute node, None when a needed shape is unknown, 0 for other ops."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx", "com.microsoft"):
        return 0
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        weight_index = 3 if op == "QLinearConv" else 1
        weight = _shape(node.inputs[weight_index], shapes)
        output = _shape(node.outputs[0], shapes)
        if weight is None or output is None:
            return None
        # per output element: (C_in / group) * prod(kernel) multiply-adds
        return math.prod(output) * math.prod(weight[1:])
    if op == "ConvTranspose":
        weight = _shape(node.inputs[1], shapes)
        data = _shape(node.inputs[0], shapes)
        if weight is None or data is None:
            return None
        # every input element scatters into (C_out / group) * prod(kernel) outputs
        return math.prod(data) * math.prod(weight[1:])
    if op in ("Gemm", "QGemm"):
        a = _shape(node.inputs[0], shapes)
        b_index = 3 if op == "QGemm" else 1
        b = _shape(node.inputs[b_index], shapes)
        if a is None or b is None:
            return None
        trans_a = node.attributes.get_int("transA", 0)
        trans_b = node.attributes.get_int("transB", 0)
        m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
        n = b[0] if trans_b else b[1]
        return m * k * n
    if op in (
        "MatMul",
        "MatMulInteger",
        "QLinearMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    ):
        b_index = 3 if op == "QLinearMatMul" else 1
        a = _shape(node.inputs[0], shapes)
        b = _shape(node.inputs[b_index], shapes)
        if a is None or b is None:
            return None
        return _matmul_macs(a, b)
    return 0


def _parameter_count(model: ir.Model) -> int:
    total = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and tensor.dtype in _PARAMETER_DTYPES:
            total += math.prod(tensor.shape)
    for node in model.graph:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attribute = node.attributes.get("value")
            if attribute is not None and attribute.type == ir.AttributeType.TENSOR:
                tensor = attribute.as_tensor()
                if tensor.dtype in _PARAMETER_DTYPES:
                    total += math.prod(tensor.shape)
    return total


def model_stats(model: ir.Model, sizes: DimSizes | None = None) -> ModelStats:
    """Parameters (float and int8 weights), MACs of Conv/ConvTranspose/Gemm/MatMul, node count.

    Symbolic input dims are resolved from ``sizes`` as in :func:`onnxslim.resolve_shape`.
    """
    shapes = infer_value_shapes(model, sizes)
    macs_per_node: dict[str, int] = {}
    unknown: list[str] = []
    total_macs = 0
    node_count = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        node_count += 1
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown.append(node.name or node.op_type)
            continue
        if macs:
            macs_per_node[node.name or f"{node.op_type}_{node_count}"] = macs
            total_macs += macs
    if unknown:
        logger.debug("MACs unknown for %d nodes (unresolved shapes): %s", len(unknown), unknown[:5])
    return ModelStats(
        parameters=_parameter_count(model),
        macs=total_macs,
        nodes=node_count,
        macs_per_node=macs_per_node,
        unknown_shape_nodes=unknown,
    )
