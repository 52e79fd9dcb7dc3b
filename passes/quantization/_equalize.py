"""Cross-layer equalization (Nagel et al. 2019): Conv -> ReLU/Identity -> Conv pairs (depthwise
included) get per-channel scales s = sqrt(r1 / r2) moved between the two weights, exact in float
because ReLU(x / s) = ReLU(x) / s for s > 0. Both convolutions then span the same per-channel
range, so per-tensor or per-channel int8 loses less on the weaker channels."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["Pair", "GraphTensors", "equalization_pairs", "equalize"]

# scale-equivariant activations between the two convolutions (ReLU6/Clip are not)
_EQUIVARIANT = ("Relu",)


class GraphTensors:
    """Initializers of a proto by name (read as arrays, written back in place) and consumers."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def array(self, name: str) -> np.ndarray | None:
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def write(self, name: str, array: np.ndarray) -> None:
        """Writes ``array`` as initializer ``name``; a shape that changes (SmoothQuant turning a
        scalar Mul constant into per-channel scales) drops the stale ``value_info`` entry."""
        tensor = self.initializers[name]
        if tuple(tensor.dims) != array.shape:
            stale = [v for v in self.graph.value_info if v.name == name]
            for entry in stale:
                self.graph.value_info.remove(entry)
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))

    def add(self, name: str, array: np.ndarray) -> str:
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = self.graph.initializer[-1]
        return name

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


@dataclasses.dataclass(frozen=True)
class Pair:
    """Conv ``first`` whose output channels feed (through ``activation``) ``second``'s input
    channels; ``depthwise`` when ``second`` has one input channel per group."""

    first: onnx.NodeProto
    second: onnx.NodeProto
    depthwise: bool


def _float_conv(tensors: GraphTensors, node: onnx.NodeProto) -> bool:
    """A Conv with float weights (and bias) of its own: editing them changes no other node."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    weight = tensors.array(node.input[1])
    own = all(
        len(tensors.consumers.get(name, [])) == 1 and name in tensors.initializers
        for name in node.input[1:]
        if name
    )
    return own and weight is not None and weight.dtype == np.float32


def equalization_pairs(proto: onnx.ModelProto) -> list[Pair]:
    """Conv -> (ReLU) -> Conv chains where equalization is exact: each output consumed once,
    weights as float initializers, the second conv ungrouped or depthwise."""
    tensors = GraphTensors(proto)
    pairs = []
    for node in proto.graph.node:
        if not _float_conv(tensors, node) or _attribute(node, "group", 1) != 1:
            continue
        following = tensors.only_consumer(node.output[0])
        if following is not None and following.op_type in _EQUIVARIANT:
            following = tensors.only_consumer(following.output[0])
        if following is None or not _float_conv(tensors, following):
            continue
        channels = tensors.array(node.input[1]).shape[0]  # type: ignore[union-attr]
        group = _attribute(following, "group", 1)
        weight = tensors.array(following.input[1])
        assert weight is not None
        if group == 1 and weight.shape[1] == channels:
            pairs.append(Pair(node, following, False))
        elif group == channels and weight.shape[1] == 1 and weight.shape[0] == channels:
            pairs.append(Pair(node, following, True))
    return pairs


def _ranges(tensors: GraphTensors, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    first = tensors.array(pair.first.input[1])
    second = tensors.array(pair.second.input[1])
    assert first is not None and second is not None
    r1 = np.abs(first).reshape(first.shape[0], -1).max(axis=1)
    axis = 0 if pair.depthwise else 1
    r2 = np.abs(np.moveaxis(second, axis, 0)).reshape(second.shape[axis], -1).max(axis=1)
    return r1, r2


def _scale_pair(tensors: GraphTensors, pair: Pair) -> float:
    """Equalizes one pair in place; returns the largest relative change of a scale from 1."""
    r1, r2 = _ranges(tensors, pair)
    live = (r1 > 0) & (r2 > 0)
    scale = np.ones_like(r1)
    scale[live] = np.sqrt(r1[live] / r2[live])
    shape = (-1,) + (1,) * (tensors.array(pair.first.input[1]).ndim - 1)  # type: ignore[union-attr]
    first = tensors.array(pair.first.input[1])
    tensors.write(pair.first.input[1], (first / scale.reshape(shape)).astype(np.float32))  # type: ignore[operator]
    if len(pair.first.input) > 2 and pair.first.input[2] in tensors.initializers:
        bias = tensors.array(pair.first.input[2])
        tensors.write(pair.first.input[2], (bias / scale).astype(np.float32))  # type: ignore[operator]
    second = tensors.array(pair.second.input[1])
    assert second is not None
    along = (-1, 1) if pair.depthwise else (1, -1)
    view = (*along, *(1,) * (second.ndim - 2))
    tensors.write(pair.second.input[1], (second * scale.reshape(view)).astype(np.float32))
    return float(np.max(np.abs(scale - 1.0))) if scale.size else 0.0


def equalize(proto: onnx.ModelProto, *, sweeps: int = 20, tolerance: float = 1e-4) -> int:
    """Equalizes every pair of ``proto`` in place (chains sweep until the scales settle);
    returns the number of pairs equalized."""
    pairs = equalization_pairs(proto)
    if not pairs:
        return 0
    tensors = GraphTensors(proto)
    for _ in range(sweeps):
        change = max(_scale_pair(tensors, pair) for pair in pairs)
        if change < tolerance:
            break
    return len(pairs)
