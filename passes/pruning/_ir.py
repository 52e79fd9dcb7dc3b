"""IR helpers the handlers and the surgery share: constant contents, fresh constants, int inputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._family import Blocked


def _through_identity(value: ir.Value | None) -> ir.Value | None:
    # Exporters share one initializer between layers through Identity nodes.
    while value is not None:
        producer = value.producer()
        if producer is None or producer.op_type != "Identity":
            break
        value = producer.inputs[0]
    return value


def _filled(value: ir.Value) -> tuple[tuple[int, ...], np.ndarray] | None:
    """(shape, fill) of a ConstantOfShape with a constant shape: a uniform weight (light models)."""
    producer = value.producer()
    if (
        producer is None
        or producer.op_type != "ConstantOfShape"
        or producer.domain not in ("", "ai.onnx")
    ):
        return None
    shape_value = producer.inputs[0] if producer.inputs else None
    shape = None if shape_value is None else ir.convenience.get_const_tensor(shape_value)
    if shape is None:
        return None
    fill = producer.attributes.get("value")
    scalar = np.zeros(1, np.float32) if fill is None else fill.as_tensor().numpy().reshape(-1)[:1]
    return tuple(int(d) for d in shape.numpy().reshape(-1)), scalar


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant content (initializer, Constant node, ConstantOfShape of a constant
    shape, or Identity of one), else None."""
    value = _through_identity(value)
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is not None:
        return tensor.numpy()
    filled = _filled(value)
    return None if filled is None else np.full(filled[0], filled[1][0], dtype=filled[1].dtype)


def is_stored_constant(value: ir.Value | None) -> bool:
    """An initializer, a Constant node's output or a constant-shape ConstantOfShape: content that
    can be cut."""
    if value is None:
        return False
    if value.const_value is not None or value.is_initializer():
        return True
    producer = value.producer()
    if producer is None or producer.domain not in ("", "ai.onnx"):
        return False
    return producer.op_type == "Constant" or _filled(value) is not None


def is_constant(value: ir.Value | None) -> bool:
    return is_stored_constant(_through_identity(value))


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """Replaces a constant's content in place (initializer or Constant node)."""
    tensor = ir.tensor(np.ascontiguousarray(array), name=value.name)
    producer = value.producer()
    filled = _filled(value)
    if producer is not None and filled is not None:
        if array.size and not np.all(array == array.reshape(-1)[0]):
            raise ValueError(f"'{value.name}' is a ConstantOfShape: only uniform content fits it")
        graph = producer.graph
        assert graph is not None
        shape = np.array(array.shape, dtype=np.int64)  # a cut of a uniform tensor: a new shape
        producer.replace_input_with(0, new_constant(graph, shape, value.name or "shape"))
    elif producer is not None and producer.op_type == "Constant":
        for key in list(producer.attributes):
            del producer.attributes[key]
        producer.attributes["value"] = ir.AttrTensor("value", tensor)
    else:
        value.const_value = tensor
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.DataType.from_numpy(array.dtype)


def new_constant(graph: ir.Graph, array: np.ndarray, hint: str) -> ir.Value:
    """A fresh initializer with a unique name (shape constants are never edited in place)."""
    names = {v.name for v in graph.initializers.values()}
    index, name = 0, f"{hint}_pruned"
    while name in names:
        index += 1
        name = f"{hint}_pruned_{index}"
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
    )
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def ints(node: ir.Node, attribute: str, input_index: int | None) -> list[int] | None | Blocked:
    """An int list given as an attribute (old opsets) or as a constant input (new opsets)."""
    attr = node.attributes.get(attribute)
    if attr is not None:
        return list(attr.as_ints())
    if (
        input_index is not None
        and len(node.inputs) > input_index
        and node.inputs[input_index] is not None
    ):
        array = constant_array(node.inputs[input_index])
        if array is None:
            return Blocked(f"its '{attribute}' input is not a constant")
        return [int(a) for a in np.atleast_1d(array)]
    return None
