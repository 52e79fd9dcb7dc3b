"""Neural-network layer kernels: MatMul/Gemm/Einsum, Conv/ConvTranspose, normalizations, pools."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxslim.torch_bridge._registry import (
    UnsupportedKernelError,
    _kernel,
    _torch_pad_order,
)

# ----------------------------------------------------------------------------- linear algebra


@_kernel("MatMul")
def _matmul(node: ir.Node, opset: int):
    return torch.matmul


@_kernel("Gemm")
def _gemm(node: ir.Node, opset: int):
    alpha = node.attributes.get_float("alpha", 1.0)
    beta = node.attributes.get_float("beta", 1.0)
    trans_a = node.attributes.get_int("transA", 0)
    trans_b = node.attributes.get_int("transB", 0)

    def run(a, b, c=None):
        if trans_a:
            a = a.t()
        if trans_b:
            b = b.t()
        y = a @ b
        if alpha != 1.0:
            y = y * alpha
        if c is not None:
            y = y + (c * beta if beta != 1.0 else c)
        return y

    return run


@_kernel("Einsum")
def _einsum(node: ir.Node, opset: int):
    equation = node.attributes.get_string("equation")
    return lambda *inputs: torch.einsum(equation, *inputs)


# ----------------------------------------------------------------------------- convolution


def _explicit_pads(node: ir.Node, spatial: int) -> tuple[str, list[int]]:
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    pads = list(node.attributes.get_ints("pads", [0] * (2 * spatial)))
    return auto_pad, pads


def _same_pads(
    in_sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    upper: bool,
) -> list[int]:
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if upper else total - small)
        ends.append(total - small if upper else small)
    return begins + ends


def _resolve_pads(auto_pad, pads, x, kernel, strides, dilations):
    spatial = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    return pads


def _conv_kernel(node: ir.Node, op: str) -> Sequence[int]:
    """``kernel_shape``, or the weight's spatial dims when the attribute is left out."""
    kernel: Sequence[int] | None = node.attributes.get_ints("kernel_shape", None)
    if kernel is not None:
        return kernel
    weight_shape = node.inputs[1].shape if node.inputs[1] is not None else None
    if weight_shape is None or not weight_shape.is_static():
        raise UnsupportedKernelError(
            f"{op} without kernel_shape and with a weight of unknown shape"
        )
    return list(weight_shape.numpy())[2:]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_kernel("Conv")
def _conv(node: ir.Node, opset: int):
    kernel = _conv_kernel(node, "Conv")
    spatial = len(kernel)
    if spatial not in _CONV:
        raise UnsupportedKernelError(f"Conv with {spatial} spatial dims")
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    group = node.attributes.get_int("group", 1)
    auto_pad, pads = _explicit_pads(node, spatial)
    conv = _CONV[spatial]

    def run(x, w, b=None):
        p = _resolve_pads(auto_pad, pads, x, kernel, strides, dilations)
        if p[:spatial] == p[spatial:]:
            return conv(x, w, b, strides, p[:spatial], dilations, group)
        x = F.pad(x, _torch_pad_order(p))
        return conv(x, w, b, strides, 0, dilations, group)

    return run


@_kernel("ConvTranspose")
def _conv_transpose(node: ir.Node, opset: int):
    kernel = _conv_kernel(node, "ConvTranspose")
    spatial = len(kernel)
    if spatial not in _CONV_T:
        raise UnsupportedKernelError(f"ConvTranspose with {spatial} spatial dims")
    if node.attributes.get("output_shape") is not None:
        raise UnsupportedKernelError("ConvTranspose with an output_shape attribute")
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedKernelError(f"ConvTranspose with auto_pad={auto_pad}")
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    output_padding = list(node.attributes.get_ints("output_padding", [0] * spatial))
    group = node.attributes.get_int("group", 1)
    pads = list(node.attributes.get_ints("pads", [0] * (2 * spatial)))
    conv_t = _CONV_T[spatial]

    def run(x, w, b=None):
        if pads[:spatial] == pads[spatial:]:
            return conv_t(x, w, b, strides, pads[:spatial], output_padding, group, dilations)
        # Asymmetric pads: transpose without padding, then crop each side.
        y = conv_t(x, w, b, strides, 0, output_padding, group, dilations)
        index = [slice(None), slice(None)]
        for axis in range(spatial):
            index.append(slice(pads[axis], y.shape[axis + 2] - pads[axis + spatial]))
        return y[tuple(index)]

    return run


# ----------------------------------------------------------------------------- normalization


@_kernel("BatchNormalization")
def _batch_norm(node: ir.Node, opset: int):
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    momentum = node.attributes.get_float("momentum", 0.9)
    if node.attributes.get_int("training_mode", 0):
        raise UnsupportedKernelError("BatchNormalization with training_mode=1")

    # ``update_stats`` is bound by OnnxModule: True only while training with train_bn_stats.
    def run(x, scale, bias, mean, var, update_stats=False):
        return F.batch_norm(x, mean, var, scale, bias, update_stats, 1.0 - momentum, epsilon)

    run.batch_norm = True  # type: ignore[attr-defined]
    return run


@_kernel("InstanceNormalization")
def _instance_norm(node: ir.Node, opset: int):
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


@_kernel("LayerNormalization")
def _layer_norm(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis", -1)
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    extra_outputs = len(node.outputs) > 1

    def run(x, scale, bias=None):
        start = axis + x.dim() if axis < 0 else axis
        shape = x.shape[start:]
        if not extra_outputs and scale.shape == shape and (bias is None or bias.shape == shape):
            return F.layer_norm(x, shape, scale, bias, epsilon)
        dims = tuple(range(start, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)
        inv_std = torch.rsqrt(var + epsilon)
        y = (x - mean) * inv_std * scale
        if bias is not None:
            y = y + bias
        return (y, mean, inv_std) if extra_outputs else y

    return run


# ----------------------------------------------------------------------------- pooling


def _pool_geometry(node: ir.Node):
    kernel = list(node.attributes.get_ints("kernel_shape"))
    spatial = len(kernel)
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    auto_pad, pads = _explicit_pads(node, spatial)
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    return kernel, spatial, strides, dilations, auto_pad, pads, ceil_mode


def _crop_pooled(
    y: torch.Tensor, x: torch.Tensor, kernel, strides, dilations, pads, ceil_mode
) -> torch.Tensor:
    """Crops a pool over explicitly padded input to ONNX's output size (ceil_mode drops windows
    that start in the end padding)."""
    spatial = len(kernel)
    index = [slice(None), slice(None)]
    for axis in range(spatial):
        size = x.shape[axis + 2]
        span = size + pads[axis] + pads[axis + spatial] - ((kernel[axis] - 1) * dilations[axis] + 1)
        if ceil_mode:
            out = -(-span // strides[axis]) + 1
            if (out - 1) * strides[axis] >= size + pads[axis]:
                out -= 1
        else:
            out = span // strides[axis] + 1
        index.append(slice(0, out))
    return y[tuple(index)]


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@_kernel("MaxPool")
def _max_pool(node: ir.Node, opset: int):
    kernel, spatial, strides, dilations, auto_pad, pads, ceil_mode = _pool_geometry(node)
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].name:
        raise UnsupportedKernelError("MaxPool with an Indices output")
    pool = _MAX_POOL[spatial]

    def run(x):
        p = _resolve_pads(auto_pad, pads, x, kernel, strides, dilations)
        symmetric = p[:spatial] == p[spatial:]
        if symmetric and all(pad * 2 <= k for pad, k in zip(p[:spatial], kernel, strict=True)):
            return pool(x, kernel, strides, p[:spatial], dilations, ceil_mode)
        y = pool(
            F.pad(x, _torch_pad_order(p), value=float("-inf")),
            kernel,
            strides,
            0,
            dilations,
            ceil_mode,
        )
        return _crop_pooled(y, x, kernel, strides, dilations, p, ceil_mode)

    return run


@_kernel("AveragePool")
def _average_pool(node: ir.Node, opset: int):
    kernel, spatial, strides, dilations, auto_pad, pads, ceil_mode = _pool_geometry(node)
    if any(d != 1 for d in dilations):
        raise UnsupportedKernelError("AveragePool with dilations")
    count_include_pad = bool(node.attributes.get_int("count_include_pad", 0))
    pool = _AVG_POOL[spatial]

    def run(x):
        p = _resolve_pads(auto_pad, pads, x, kernel, strides, dilations)
        symmetric = p[:spatial] == p[spatial:]
        if symmetric and all(pad * 2 <= k for pad, k in zip(p[:spatial], kernel, strict=True)):
            return pool(x, kernel, strides, p[:spatial], ceil_mode, count_include_pad)
        torch_pads = _torch_pad_order(p)
        total = pool(F.pad(x, torch_pads), kernel, strides, 0, ceil_mode, True)
        total = _crop_pooled(total, x, kernel, strides, dilations, p, ceil_mode)
        if count_include_pad:
            return total
        # Divide by the count of real (unpadded) elements in each window.
        ones = F.pad(torch.ones_like(x[:1, :1]), torch_pads)
        count = _crop_pooled(
            pool(ones, kernel, strides, 0, ceil_mode, True),
            x,
            kernel,
            strides,
            dilations,
            p,
            ceil_mode,
        )
        return total / count

    return run


@_kernel("GlobalAveragePool")
def _global_average_pool(node: ir.Node, opset: int):
    return lambda x: x.mean(tuple(range(2, x.dim())), keepdim=True)


@_kernel("GlobalMaxPool")
def _global_max_pool(node: ir.Node, opset: int):
    return lambda x: x.amax(tuple(range(2, x.dim())), keepdim=True)
