"""SmoothQuant (Xiao et al. 2023): a MatMul whose input X has outlier channels gets per-channel
scales s_j = max|X_j|^a / max|W_j|^(1-a); X / s goes into the producing LayerNorm or Mul (or an
explicit Mul), diag(s) W into the weight. Exact in float; int8 then spends its levels on the
ordinary channels instead of the outliers."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslim.passes.quantization._equalize import GraphTensors

__all__ = ["OUTLIER_RATIO", "smooth", "smoothing_targets"]

# a channel whose max |x| exceeds the median channel's by this factor is an outlier
OUTLIER_RATIO = 4.0


def smoothing_targets(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the MatMuls taking it as X with a float 2-D weight of their own."""
    tensors = GraphTensors(proto)
    targets: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        if node.op_type != "MatMul" or node.input[0] in tensors.initializers:
            continue
        weight = tensors.array(node.input[1])
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
            continue
        if len(tensors.consumers.get(node.input[1], [])) == 1:
            targets.setdefault(node.input[0], []).append(node)
    # X must reach only these MatMuls, or dividing it by s would change other consumers
    return {
        name: nodes
        for name, nodes in targets.items()
        if len(tensors.consumers.get(name, [])) == len(nodes) and name not in tensors.outputs
    }


def _has_outliers(channel_max: np.ndarray) -> bool:
    median = float(np.median(channel_max))
    return median > 0 and float(channel_max.max()) >= OUTLIER_RATIO * median


def _scales(channel_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scale = np.ones_like(channel_max, dtype=np.float64)
    live = (channel_max > 0) & (weight_max > 0)
    scale[live] = channel_max[live] ** alpha / weight_max[live] ** (1.0 - alpha)
    return np.clip(scale, 1e-5, 1e5)


def _fold_into_producer(tensors: GraphTensors, name: str, inverse: np.ndarray) -> bool:
    """X / s folded into X's LayerNormalization or Mul-by-constant; False when neither fits."""
    producer = next((n for n in tensors.graph.node if name in n.output), None)
    if producer is None:
        return False
    if producer.op_type == "LayerNormalization":
        slots = [1, 2] if len(producer.input) > 2 and producer.input[2] else [1]
    elif producer.op_type == "Mul":
        slots = [i for i in (0, 1) if producer.input[i] in tensors.initializers][:1]
    else:
        return False
    params = [producer.input[i] for i in slots]
    if not params or not all(
        p in tensors.initializers and len(tensors.consumers.get(p, [])) == 1 for p in params
    ):
        return False
    arrays = [tensors.array(p) for p in params]
    channels = inverse.size
    if any(
        a is None or a.dtype != np.float32 or (a.size != 1 and a.shape[-1] != channels)
        for a in arrays
    ):
        return False
    for param, array in zip(params, arrays, strict=True):
        assert array is not None
        shape = array.shape if array.size == channels else (channels,)
        tensors.write(
            param,
            (np.broadcast_to(array.reshape(-1), channels) * inverse)
            .reshape(shape)
            .astype(np.float32),
        )
    return True


def _explicit_mul(tensors: GraphTensors, name: str, inverse: np.ndarray, nodes: list) -> None:
    scale = tensors.add(f"{name}_smooth_scale", inverse.astype(np.float32))
    smoothed = f"{name}_smoothed"
    mul = onnx.helper.make_node("Mul", [name, scale], [smoothed], name=f"{name}_smooth")
    graph = tensors.graph
    first = min(list(graph.node).index(n) for n in nodes)
    graph.node.insert(first, mul)
    for node in nodes:
        node.input[0] = smoothed


def smooth(
    proto: onnx.ModelProto, channel_max: dict[str, np.ndarray], alpha: float = 0.5
) -> list[str]:
    """Smooths, in place, each target whose X (``channel_max``: per-channel max |X| on the
    calibration data) has outlier channels; returns the activation tensors smoothed."""
    targets = smoothing_targets(proto)
    tensors = GraphTensors(proto)
    smoothed = []
    for name, nodes in targets.items():
        maxima = channel_max.get(name)
        weights = [tensors.array(n.input[1]) for n in nodes]
        if maxima is None or not _has_outliers(maxima):
            continue
        if any(w is None or w.shape[0] != maxima.size for w in weights):
            continue
        scale = _scales(maxima.astype(np.float64), weights, alpha)  # type: ignore[arg-type]
        inverse = 1.0 / scale
        if not _fold_into_producer(tensors, name, inverse):
            _explicit_mul(tensors, name, inverse, nodes)
        for node, weight in zip(nodes, weights, strict=True):
            tensors.write(node.input[1], (weight * scale[:, None]).astype(np.float32))
        smoothed.append(name)
    return smoothed
