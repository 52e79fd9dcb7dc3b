"""Bias correction (Nagel et al. 2019, empirical): each Conv/Gemm/MatMul+Add whose int8 weights
shift its output mean gets that shift, measured on the calibration samples, folded into its bias.

The shift of a layer is E[(W - W_int8) x] over the inputs x the int8 model feeds it: one extra
node per layer (the layer's op on the weight error, no bias) in one ORT run of the QDQ model.
Correcting by it makes the layer's int8 output mean equal its float output mean on those inputs
(exactly for a float bias; within half a step of the int32 bias otherwise).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxslim.passes.quantization._equalize import GraphTensors
from onnxslim.runtime import create_session

__all__ = ["bias_shifts", "fold_bias_shifts", "shifted_means"]

_LAYERS = ("Conv", "Gemm", "MatMul")


def _dequantized_weight(tensors: GraphTensors, producers: Mapping[str, onnx.NodeProto], name: str):
    """The int8 weight as float, where ``name`` is a DequantizeLinear of an initializer."""
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    codes = tensors.array(node.input[0])
    scale = tensors.array(node.input[1])
    if codes is None or scale is None or codes.dtype not in (np.int8, np.uint8):
        return None
    zero = tensors.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * codes.ndim
    if scale.ndim:
        shape[axis % codes.ndim] = scale.size
    zero_point = 0 if zero is None else zero.astype(np.float32).reshape(shape)
    return (codes.astype(np.float32) - zero_point) * scale.astype(np.float32).reshape(shape)


def _channel_axis(node: onnx.NodeProto) -> int:
    return 1 if node.op_type == "Conv" else -1


def _error_nodes(
    qdq: onnx.ModelProto, float_proto: onnx.ModelProto
) -> dict[str, tuple[onnx.NodeProto, str]]:
    """Layer name -> (its weight-error node, added to ``qdq`` in place, and that node's output)."""
    tensors = GraphTensors(qdq)
    floats = GraphTensors(float_proto)
    float_nodes = {n.name: n for n in float_proto.graph.node if n.name}
    producers = {out: n for n in qdq.graph.node for out in n.output}
    added: dict[str, tuple[onnx.NodeProto, str]] = {}
    for node in list(qdq.graph.node):
        source = float_nodes.get(node.name)
        if node.op_type not in _LAYERS or source is None or source.op_type != node.op_type:
            continue
        quantized = _dequantized_weight(tensors, producers, node.input[1])
        weight = floats.array(source.input[1])
        if quantized is None or weight is None or weight.shape != quantized.shape:
            continue
        if _bias_slot(floats, source) is None:
            continue
        error = tensors.add(f"{node.name}_weight_error", (weight - quantized).astype(np.float32))
        output = f"{node.name}_weight_error_out"
        extra = helper.make_node(node.op_type, [node.input[0], error], [output])
        extra.attribute.extend(a for a in node.attribute if a.name not in ("beta",))
        qdq.graph.node.append(extra)
        qdq.graph.output.append(helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
        added[node.name] = (node, output)
    return added


def bias_shifts(
    qdq_path: Path, float_proto: onnx.ModelProto, batches: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Layer name -> per-output-channel E[(W - W_int8) x] on ``batches``, for each layer whose
    bias can take a correction (Conv, Gemm, MatMul followed by Add of a constant)."""
    qdq = onnx.load(str(qdq_path))
    added = _error_nodes(qdq, float_proto)
    if not added:
        return {}
    session = create_session(qdq.SerializeToString())
    inputs = {i.name for i in session.get_inputs()}
    names = [output for _, output in added.values()]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        results = session.run(names, {k: v for k, v in batch.items() if k in inputs})
        for (layer, (node, _)), value in zip(added.items(), results, strict=True):
            moved = np.moveaxis(np.asarray(value, dtype=np.float64), _channel_axis(node), -1)
            flat = moved.reshape(-1, moved.shape[-1])
            sums[layer] = sums.get(layer, 0.0) + flat.sum(axis=0)
            counts[layer] = counts.get(layer, 0) + flat.shape[0]
    return {layer: (sums[layer] / counts[layer]).astype(np.float32) for layer in sums}


def _bias_slot(tensors: GraphTensors, node: onnx.NodeProto) -> tuple[str, str | None] | None:
    """Where ``node``'s bias lives: ("input", name or None to add one) for Conv/Gemm, ("add",
    name) for a MatMul whose only consumer adds a constant of one value per output channel."""
    if node.op_type in ("Conv", "Gemm"):
        name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if name is not None and (
            name not in tensors.initializers or len(tensors.consumers.get(name, [])) != 1
        ):
            return None
        return ("input", name)
    add = tensors.only_consumer(node.output[0])
    if add is None or add.op_type != "Add":
        return None
    other = next((n for n in add.input if n != node.output[0]), None)
    bias = tensors.array(other) if other else None
    if bias is None or bias.dtype != np.float32 or len(tensors.consumers.get(other, [])) != 1:
        return None
    weight = tensors.array(node.input[1])
    if weight is None or bias.size != weight.shape[-1] or bias.shape[-1] != weight.shape[-1]:
        return None
    return ("add", other)


def _beta(node: onnx.NodeProto) -> float:
    return next((a.f for a in node.attribute if a.name == "beta"), 1.0)


def fold_bias_shifts(
    float_proto: onnx.ModelProto, shifts: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of ``float_proto`` with each layer's shift added to its bias (a bias is added to
    a Conv or Gemm without one)."""
    proto = copy.deepcopy(float_proto)
    tensors = GraphTensors(proto)
    for node in proto.graph.node:
        shift = shifts.get(node.name)
        slot = _bias_slot(tensors, node) if shift is not None else None
        if slot is None or shift is None:
            continue
        kind, name = slot
        step = shift / _beta(node) if node.op_type == "Gemm" else shift
        if name is None:
            name = tensors.add(f"{node.name}_bias", step.astype(np.float32))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
            continue
        bias = tensors.array(name)
        assert bias is not None
        corrected = (bias.astype(np.float64) + np.broadcast_to(step, bias.shape[-1:])).astype(
            np.float32
        )
        tensors.write(name, corrected.reshape(bias.shape))
    return proto


def shifted_means(values: Iterable[np.ndarray], axis: int) -> np.ndarray:
    """Per-channel mean of arrays over every axis but ``axis`` (tests and reports)."""
    total, count = 0.0, 0
    for value in values:
        moved = np.moveaxis(np.asarray(value, dtype=np.float64), axis, -1)
        flat = moved.reshape(-1, moved.shape[-1])
        total, count = total + flat.sum(axis=0), count + flat.shape[0]
    return np.asarray(total) / max(count, 1)
