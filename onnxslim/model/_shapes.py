"""Static shapes (shape inference) and observed shapes (one ORT run) of a model's values."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim._inputs import DimSizes, input_specs, resolve_shape
from onnxslim.model._macs import static_shape
from onnxslim.model._probe import ValueProbe

__all__ = ["inferred_shapes", "observed_shapes"]

logger = logging.getLogger(__name__)

# Initializers above this size are hidden from onnx's shape inference (it copies protos).
_INLINE_LIMIT_BYTES = 1024


def inferred_shapes(model: ir.Model, sizes: DimSizes | None = None) -> dict[str, tuple[int, ...]]:
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
                value.shape = ir.Shape(tensor.shape.numpy())
            if value.dtype is None:
                value.dtype = tensor.dtype
            if tensor.nbytes > _INLINE_LIMIT_BYTES:
                if value not in graph.inputs:
                    graph.inputs.append(value)
                graph.initializers.pop(str(value.name))
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


def observed_shapes(
    model: ir.Model | str,
    feeds: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    **probe_options: Any,
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of the values ``names`` (None: every main-graph value) from one ORT run.

    Static shapes the graph declares come first; the run overrides them; feeds give the
    inputs'. When ORT cannot run the model (a custom op), shape inference fills in what it can.
    ``probe_options`` go to :class:`ValueProbe` (providers, options, provider_options).
    """
    if not isinstance(model, ir.Model):
        model = ir.load(str(model))
    shapes: dict[str, tuple[int, ...]] = {}
    graph = model.graph
    values = [*graph.inputs, *graph.initializers.values()]
    values += [v for node in graph for v in node.outputs]
    for value in values:
        shape = static_shape(value)
        if shape is not None and value.name:
            shapes[value.name] = shape
    try:
        results = ValueProbe(model, names, **probe_options).run(feeds)
    except Exception as error:  # noqa: BLE001 - custom ops ORT lacks: inferred shapes below
        logger.warning(
            "could not run the model to observe shapes (%s); using inferred shapes", error
        )
        results = {}
        sizes = {name: list(np.shape(array)) for name, array in feeds.items()}
        try:
            for name, shape in inferred_shapes(model, sizes).items():
                shapes.setdefault(name, shape)
        except Exception as inference_error:  # noqa: BLE001 - best effort after a failed run
            logger.debug("shape inference failed too: %s", inference_error)
    for name, array in results.items():
        if isinstance(array, np.ndarray):  # sequence/map values (lists, dicts) have no shape
            shapes[name] = tuple(array.shape)
    for name, array in feeds.items():
        shapes[name] = tuple(np.shape(array))
    return shapes
