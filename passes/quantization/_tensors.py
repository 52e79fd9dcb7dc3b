"""Choose the tensors to calibrate: float activations around the nodes that may be quantized."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

__all__ = ["tensors_to_calibrate"]


def tensors_to_calibrate(proto: onnx.ModelProto, op_types: Sequence[str]) -> list[str]:
    """The float, non-initializer inputs and outputs of nodes of ``op_types``, in graph order."""
    value_types = {}
    for info in [*proto.graph.value_info, *proto.graph.output, *proto.graph.input]:
        if info.type.HasField("tensor_type"):
            value_types[info.name] = info.type.tensor_type.elem_type
    initializers = {i.name for i in proto.graph.initializer}
    wanted = set(op_types)
    names: list[str] = []
    seen: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in wanted:
            continue
        for name in [*node.input, *node.output]:
            if (
                name
                and name not in seen
                and name not in initializers
                and value_types.get(name) == onnx.TensorProto.FLOAT
            ):
                seen.add(name)
                names.append(name)
    return names
