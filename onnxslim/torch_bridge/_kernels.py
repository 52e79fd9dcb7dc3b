"""Registry of torch kernels for ONNX ops: ``(op_type) -> builder(node, opset) -> callable(*inputs)``.

A builder reads the node's attributes once (at module construction) and returns a callable
that takes the node's inputs as tensors (``None`` for omitted optional inputs) and returns a
tensor or a tuple of tensors. Attribute combinations a kernel cannot honour raise
:class:`UnsupportedKernelError` at construction time, never mid-training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

__all__ = [
    "KERNELS",
    "Builder",
    "UnsupportedKernelError",
    "constant_value",
    "supported_ops",
    "torch_dtype",
]

Builder = Callable[[ir.Node, int], Callable[..., Any]]
KERNELS: dict[str, Builder] = {}


class UnsupportedKernelError(Exception):
    """An op/attribute combination this registry cannot execute (reason in the message)."""


_DTYPES = {
    ir.DataType.FLOAT: torch.float32,
    ir.DataType.DOUBLE: torch.float64,
    ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.INT8: torch.int8,
    ir.DataType.UINT8: torch.uint8,
    ir.DataType.INT16: torch.int16,
    ir.DataType.INT32: torch.int32,
    ir.DataType.INT64: torch.int64,
    ir.DataType.BOOL: torch.bool,
}


def torch_dtype(dtype: ir.DataType | int) -> torch.dtype:
    dtype = ir.DataType(dtype)
    if dtype not in _DTYPES:
        raise UnsupportedKernelError(f"element type {dtype.name} has no torch equivalent here")
    return _DTYPES[dtype]


def supported_ops() -> list[str]:
    return sorted(KERNELS)


def _kernel(*op_types: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        for op_type in op_types:
            KERNELS[op_type] = builder
        return builder

    return register


def _ints(tensor: torch.Tensor | None) -> list[int] | None:
    return None if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]


def _attr_tensor(node: ir.Node, name: str) -> torch.Tensor | None:
    attribute = node.attributes.get(name)
    if attribute is None:
        return None
    return torch.from_numpy(np.array(attribute.as_tensor().numpy()))


def _norm_axes(axes: Sequence[int], rank: int) -> list[int]:
    return [a + rank if a < 0 else a for a in axes]


# ----------------------------------------------------------------------------- elementwise


def _unary(fn: Callable[..., Any]) -> Builder:
    return lambda node, opset: fn


_UNARY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Not": torch.logical_not,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "Mish": F.mish,
    "IsNaN": torch.isnan,
}
for _op, _fn in _UNARY_FUNCTIONS.items():
    KERNELS[_op] = _unary(_fn)


def _binary(fn: Callable[..., Any]) -> Builder:
    return lambda node, opset: fn


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b).to(a.dtype)


_BINARY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _div,
    "Pow": _pow,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "PRelu": lambda x, slope: torch.where(x < 0, x * slope, x),
}
for _op, _fn in _BINARY_FUNCTIONS.items():
    KERNELS[_op] = _binary(_fn)


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Builder:
    def build(node: ir.Node, opset: int) -> Callable[..., torch.Tensor]:
        def run(*inputs: torch.Tensor) -> torch.Tensor:
            result = inputs[0]
            for operand in inputs[1:]:
                result = fn(result, operand)
            return result

        return run

    return build


KERNELS["Min"] = _variadic(torch.minimum)
KERNELS["Max"] = _variadic(torch.maximum)
KERNELS["Sum"] = _variadic(torch.add)


@_kernel("Mean")
def _mean(node: ir.Node, opset: int):
    add = _variadic(torch.add)(node, opset)
    return lambda *inputs: add(*inputs) / len(inputs)


@_kernel("Mod")
def _mod(node: ir.Node, opset: int):
    if node.attributes.get_int("fmod", 0):
        return torch.fmod
    return torch.remainder


@_kernel("Where")
def _where(node: ir.Node, opset: int):
    return torch.where


@_kernel("LeakyRelu")
def _leaky_relu(node: ir.Node, opset: int):
    slope = node.attributes.get_float("alpha", 0.01)
    return lambda x: F.leaky_relu(x, slope)


@_kernel("Elu")
def _elu(node: ir.Node, opset: int):
    alpha = node.attributes.get_float("alpha", 1.0)
    return lambda x: F.elu(x, alpha)


@_kernel("Selu")
def _selu(node: ir.Node, opset: int):
    alpha = node.attributes.get_float("alpha", 1.67326319217681884765625)
    gamma = node.attributes.get_float("gamma", 1.05070102214813232421875)
    return lambda x: gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@_kernel("HardSigmoid")
def _hard_sigmoid(node: ir.Node, opset: int):
    alpha = node.attributes.get_float("alpha", 0.2)
    beta = node.attributes.get_float("beta", 0.5)
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@_kernel("HardSwish")
def _hard_swish(node: ir.Node, opset: int):
    return lambda x: x * torch.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


@_kernel("Gelu")
def _gelu(node: ir.Node, opset: int):
    approximate = node.attributes.get_string("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@_kernel("Clip")
def _clip(node: ir.Node, opset: int):
    if opset < 11:
        low = node.attributes.get_float("min", None)
        high = node.attributes.get_float("max", None)
        return lambda x: torch.clamp(x, low, high)

    def run(x, low=None, high=None):
        if low is not None:
            x = torch.maximum(x, low.to(x.dtype))
        if high is not None:
            x = torch.minimum(x, high.to(x.dtype))
        return x

    return run


@_kernel("Softmax", "LogSoftmax")
def _softmax(node: ir.Node, opset: int):
    fn = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    if opset >= 13:
        axis = node.attributes.get_int("axis", -1)
        return lambda x: fn(x, axis)
    axis = node.attributes.get_int("axis", 1)

    def run(x):
        # Before opset 13 the input is coerced to 2-D at ``axis``.
        rank_axis = axis + x.dim() if axis < 0 else axis
        flat = x.reshape(int(np.prod(x.shape[:rank_axis])), -1)
        return fn(flat, 1).reshape(x.shape)

    return run


@_kernel("Identity")
def _identity(node: ir.Node, opset: int):
    return lambda x: x


@_kernel("Dropout")
def _dropout(node: ir.Node, opset: int):
    # Inference semantics: the student is fine-tuned as deployed, without dropout.
    def run(x, ratio=None, training_mode=None):
        if len(node.outputs) > 1:
            return x, torch.ones_like(x, dtype=torch.bool)
        return x

    return run


@_kernel("Cast")
def _cast(node: ir.Node, opset: int):
    dtype = torch_dtype(node.attributes.get_int("to"))
    return lambda x: x.to(dtype)


@_kernel("CastLike")
def _cast_like(node: ir.Node, opset: int):
    return lambda x, like: x.to(like.dtype)


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


def _torch_pad_order(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1, b2, .., e1, e2, ..]`` -> torch ``[b_last, e_last, .., b1, e1]``."""
    half = len(pads) // 2
    order = []
    for axis in reversed(range(half)):
        order += [pads[axis], pads[axis + half]]
    return order


def _resolve_pads(node, auto_pad, pads, x, kernel, strides, dilations):
    spatial = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    return pads


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_kernel("Conv")
def _conv(node: ir.Node, opset: int):
    weight_shape = node.inputs[1].shape if node.inputs[1] is not None else None
    kernel: Sequence[int] | None = node.attributes.get_ints("kernel_shape", None)
    if kernel is None:
        if weight_shape is None or not weight_shape.is_static():
            raise UnsupportedKernelError(
                "Conv without kernel_shape and with a weight of unknown shape"
            )
        kernel = list(weight_shape.numpy())[2:]
    spatial = len(kernel)
    if spatial not in _CONV:
        raise UnsupportedKernelError(f"Conv with {spatial} spatial dims")
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    group = node.attributes.get_int("group", 1)
    auto_pad, pads = _explicit_pads(node, spatial)
    conv = _CONV[spatial]

    def run(x, w, b=None):
        p = _resolve_pads(node, auto_pad, pads, x, kernel, strides, dilations)
        if p[:spatial] == p[spatial:]:
            return conv(x, w, b, strides, p[:spatial], dilations, group)
        x = F.pad(x, _torch_pad_order(p))
        return conv(x, w, b, strides, 0, dilations, group)

    return run


@_kernel("ConvTranspose")
def _conv_transpose(node: ir.Node, opset: int):
    weight_shape = node.inputs[1].shape if node.inputs[1] is not None else None
    kernel: Sequence[int] | None = node.attributes.get_ints("kernel_shape", None)
    if kernel is None:
        if weight_shape is None or not weight_shape.is_static():
            raise UnsupportedKernelError(
                "ConvTranspose without kernel_shape and with a weight of unknown shape"
            )
        kernel = list(weight_shape.numpy())[2:]
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
        p = _resolve_pads(node, auto_pad, pads, x, kernel, strides, dilations)
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
        p = _resolve_pads(node, auto_pad, pads, x, kernel, strides, dilations)
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


# ----------------------------------------------------------------------------- reductions


def _reduce(
    fn: Callable[[torch.Tensor, list[int], bool], torch.Tensor], axes_input_since: int
) -> Builder:
    def build(node: ir.Node, opset: int):
        keepdims = bool(node.attributes.get_int("keepdims", 1))
        noop_empty = bool(node.attributes.get_int("noop_with_empty_axes", 0))
        attr_axes = node.attributes.get_ints("axes", None)

        def run(x, axes_tensor=None):
            axes = (
                list(attr_axes)
                if opset < axes_input_since and attr_axes is not None
                else _ints(axes_tensor)
            )
            if not axes:
                if noop_empty:
                    return x
                axes = list(range(x.dim()))
            return fn(x, _norm_axes(axes, x.dim()), keepdims)

        return run

    return build


def _reduce_prod(x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.prod(axis, keepdim=keepdims) if keepdims else x.prod(axis)
    return x


_REDUCTIONS = {
    "ReduceSum": (lambda x, a, k: x.sum(a, keepdim=k), 13),
    "ReduceMean": (lambda x, a, k: x.mean(a, keepdim=k), 18),
    "ReduceMax": (lambda x, a, k: x.amax(a, keepdim=k), 18),
    "ReduceMin": (lambda x, a, k: x.amin(a, keepdim=k), 18),
    "ReduceProd": (_reduce_prod, 18),
    "ReduceL1": (lambda x, a, k: x.abs().sum(a, keepdim=k), 18),
    "ReduceL2": (lambda x, a, k: (x * x).sum(a, keepdim=k).sqrt(), 18),
    "ReduceSumSquare": (lambda x, a, k: (x * x).sum(a, keepdim=k), 18),
    "ReduceLogSum": (lambda x, a, k: x.sum(a, keepdim=k).log(), 18),
    "ReduceLogSumExp": (lambda x, a, k: torch.logsumexp(x, a, keepdim=k), 18),
}
for _op, (_fn, _since) in _REDUCTIONS.items():
    KERNELS[_op] = _reduce(_fn, _since)


@_kernel("ArgMax", "ArgMin")
def _arg_reduce(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis", 0)
    keepdims = bool(node.attributes.get_int("keepdims", 1))
    if node.attributes.get_int("select_last_index", 0):
        raise UnsupportedKernelError(f"{node.op_type} with select_last_index=1")
    fn = torch.argmax if node.op_type == "ArgMax" else torch.argmin
    return lambda x: fn(x, axis, keepdims)


# ----------------------------------------------------------------------------- shape ops


@_kernel("Shape")
def _shape(node: ir.Node, opset: int):
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", None)
    return lambda x: torch.tensor(list(x.shape)[start:end], dtype=torch.int64, device=x.device)


@_kernel("Size")
def _size(node: ir.Node, opset: int):
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@_kernel("Reshape")
def _reshape(node: ir.Node, opset: int):
    allow_zero = node.attributes.get_int("allowzero", 0)

    def run(x, shape):
        target = _ints(shape)
        if not allow_zero:
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        return x.reshape(target)

    return run


@_kernel("Flatten")
def _flatten(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis", 1)

    def run(x):
        start = axis + x.dim() if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:start]), math.prod(x.shape[start:]))

    return run


@_kernel("Transpose")
def _transpose(node: ir.Node, opset: int):
    perm = node.attributes.get_ints("perm", None)
    return lambda x: x.permute(list(perm) if perm is not None else list(reversed(range(x.dim()))))


@_kernel("Squeeze")
def _squeeze(node: ir.Node, opset: int):
    attr_axes = node.attributes.get_ints("axes", None)

    def run(x, axes_tensor=None):
        axes = list(attr_axes) if opset < 13 and attr_axes is not None else _ints(axes_tensor)
        if axes is None:
            return x.squeeze()
        return x.squeeze(tuple(_norm_axes(axes, x.dim())))

    return run


@_kernel("Unsqueeze")
def _unsqueeze(node: ir.Node, opset: int):
    attr_axes = node.attributes.get_ints("axes", None)

    def run(x, axes_tensor=None):
        axes = list(attr_axes) if opset < 13 else _ints(axes_tensor)
        rank = x.dim() + len(axes)
        for axis in sorted(_norm_axes(axes, rank)):
            x = x.unsqueeze(axis)
        return x

    return run


@_kernel("Concat")
def _concat(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis")
    return lambda *inputs: torch.cat([t for t in inputs if t is not None], axis)


@_kernel("Split")
def _split(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis", 0)
    attr_split = node.attributes.get_ints("split", None)
    count = len(node.outputs)

    def run(x, split=None):
        sizes = list(attr_split) if opset < 13 and attr_split is not None else _ints(split)
        if sizes is None:
            length = x.shape[axis]
            chunk = -(-length // count)  # opset 18: the last chunk may be smaller
            sizes = [min(chunk, length - i * chunk) for i in range(count)]
        return tuple(torch.split(x, sizes, axis))

    return run


@_kernel("Slice")
def _slice(node: ir.Node, opset: int):
    attrs = None
    if opset < 10:
        attrs = (
            node.attributes.get_ints("starts"),
            node.attributes.get_ints("ends"),
            node.attributes.get_ints("axes", None),
        )

    def run(x, starts=None, ends=None, axes=None, steps=None):
        if attrs is not None:
            start_list, end_list, axis_list = list(attrs[0]), list(attrs[1]), attrs[2]
            step_list = None
        else:
            start_list, end_list, axis_list, step_list = (
                _ints(starts),
                _ints(ends),
                _ints(axes),
                _ints(steps),
            )
        axis_list = list(axis_list) if axis_list is not None else list(range(len(start_list)))
        step_list = step_list or [1] * len(start_list)
        for start, end, axis, step in zip(
            start_list, end_list, _norm_axes(axis_list, x.dim()), step_list, strict=True
        ):
            size = x.shape[axis]
            if step > 0:
                start = max(0, min(size, start + size if start < 0 else start))
                end = max(0, min(size, end + size if end < 0 else end))
                x = x.narrow(axis, start, max(0, end - start))
                if step > 1:
                    x = x.index_select(axis, torch.arange(0, x.shape[axis], step, device=x.device))
            else:
                start = max(-1, min(size - 1, start + size if start < 0 else start))
                end = max(-1, min(size - 1, end + size if end < 0 else end))
                index = torch.arange(start, end, step, device=x.device)
                x = x.index_select(axis, index)
        return x

    return run


@_kernel("Gather")
def _gather(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis", 0)

    def run(data, indices):
        dim = axis + data.dim() if axis < 0 else axis
        size = data.shape[dim]
        flat = indices.reshape(-1).long()
        flat = torch.where(flat < 0, flat + size, flat)
        picked = data.index_select(dim, flat)
        return picked.reshape(data.shape[:dim] + indices.shape + data.shape[dim + 1 :])

    return run


@_kernel("GatherElements")
def _gather_elements(node: ir.Node, opset: int):
    axis = node.attributes.get_int("axis", 0)

    def run(data, indices):
        indices = indices.long()
        indices = torch.where(indices < 0, indices + data.shape[axis], indices)
        return torch.gather(data, axis, indices)

    return run


@_kernel("Expand")
def _expand(node: ir.Node, opset: int):
    def run(x, shape):
        target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape)))
        return x.expand(target)

    return run


@_kernel("Tile")
def _tile(node: ir.Node, opset: int):
    return lambda x, repeats: x.repeat(_ints(repeats))


@_kernel("Range")
def _range(node: ir.Node, opset: int):
    return lambda start, limit, delta: torch.arange(
        start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device
    )


@_kernel("ConstantOfShape")
def _constant_of_shape(node: ir.Node, opset: int):
    value = _attr_tensor(node, "value")
    if value is None:
        value = torch.zeros(1, dtype=torch.float32)
    fill = value.reshape(-1)[0].item()
    dtype = value.dtype

    def run(shape):
        return torch.full(_ints(shape), fill, dtype=dtype, device=shape.device)

    return run


@_kernel("Trilu")
def _trilu(node: ir.Node, opset: int):
    upper = node.attributes.get_int("upper", 1)

    def run(x, k=None):
        diagonal = int(k.item()) if k is not None else 0
        return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)

    return run


# ----------------------------------------------------------------------------- Pad / Resize


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@_kernel("Pad")
def _pad(node: ir.Node, opset: int):
    mode = node.attributes.get_string("mode", "constant")
    if mode not in _PAD_MODES:
        raise UnsupportedKernelError(f"Pad with mode={mode}")
    torch_mode = _PAD_MODES[mode]
    attr_pads = node.attributes.get_ints("pads", None) if opset < 11 else None
    attr_value = node.attributes.get_float("value", 0.0) if opset < 11 else 0.0

    def run(x, pads=None, constant_value=None, axes=None):
        pad_list = list(attr_pads) if attr_pads is not None else _ints(pads)
        rank = x.dim()
        if axes is not None:
            axis_list = _norm_axes(_ints(axes), rank)
            full = [0] * (2 * rank)
            for i, axis in enumerate(axis_list):
                full[axis] = pad_list[i]
                full[axis + rank] = pad_list[i + len(axis_list)]
            pad_list = full
        torch_pads = _torch_pad_order(pad_list)
        if torch_mode == "constant":
            value = (
                constant_value.item()
                if constant_value is not None and constant_value.numel()
                else attr_value
            )
            return F.pad(x, torch_pads, value=value)
        # Non-constant modes pad only trailing dims in torch: trim unpadded leading pairs.
        while torch_pads and torch_pads[-2:] == [0, 0]:
            torch_pads = torch_pads[:-2]
        return F.pad(x, torch_pads, mode=torch_mode)

    return run


def _source_coordinates(
    mode: str, out_size: int, in_size: int, scale: float, device
) -> torch.Tensor:
    out = torch.arange(out_size, dtype=torch.float64, device=device)
    if mode == "half_pixel":
        return (out + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (out + 0.5) / scale - 0.5 if out_size > 1 else torch.zeros_like(out)
    if mode == "align_corners":
        return out * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(out)
    if mode == "asymmetric":
        return out / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        center = in_size / 2
        offset = center * (1 - adjustment)
        return offset + (out + 0.5) / scale - 0.5
    raise UnsupportedKernelError(f"Resize with coordinate_transformation_mode={mode}")


def _nearest_index(mode: str, coords: torch.Tensor, in_size: int) -> torch.Tensor:
    if mode == "round_prefer_floor":
        index = torch.ceil(coords - 0.5)
    elif mode == "round_prefer_ceil":
        index = torch.floor(coords + 0.5)
    elif mode == "floor":
        index = torch.floor(coords)
    else:
        index = torch.ceil(coords)
    return index.clamp(0, in_size - 1).long()


@_kernel("Resize", "Upsample")
def _resize(node: ir.Node, opset: int):
    mode = node.attributes.get_string("mode", "nearest")
    coordinate_mode = node.attributes.get_string(
        "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric"
    )
    nearest_mode = node.attributes.get_string(
        "nearest_mode", "round_prefer_floor" if opset >= 11 else "floor"
    )
    if mode == "linear" and node.op_type == "Upsample":
        coordinate_mode = "asymmetric"
    if mode not in ("nearest", "linear", "bilinear", "cubic"):
        raise UnsupportedKernelError(f"Resize with mode={mode}")
    if node.attributes.get_int("antialias", 0):
        raise UnsupportedKernelError("Resize with antialias=1")
    if node.attributes.get("axes") is not None:
        raise UnsupportedKernelError("Resize with the axes attribute")
    if node.attributes.get_string("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedKernelError("Resize with keep_aspect_ratio_policy other than stretch")
    if mode == "cubic":
        if coordinate_mode not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise UnsupportedKernelError(
                f"cubic Resize with coordinate_transformation_mode={coordinate_mode}"
            )
        if node.attributes.get_float("cubic_coeff_a", -0.75) != -0.75 or node.attributes.get_int(
            "exclude_outside", False
        ):
            raise UnsupportedKernelError(
                "cubic Resize with cubic_coeff_a != -0.75 or exclude_outside=1"
            )
    if coordinate_mode == "tf_crop_and_resize":
        raise UnsupportedKernelError(
            "Resize with coordinate_transformation_mode=tf_crop_and_resize"
        )
    attr_scales = node.attributes.get_floats("scales", None)

    def run(x, *rest):
        if node.op_type == "Upsample" or opset < 11:
            scales_t, sizes_t = (rest[0] if rest else None), None
        else:
            scales_t = rest[1] if len(rest) > 1 else None
            sizes_t = rest[2] if len(rest) > 2 else None
        from_sizes = False
        if scales_t is not None and scales_t.numel() > 0:
            scales = [float(s) for s in scales_t.reshape(-1).tolist()]
            sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales, strict=True)]
        elif sizes_t is not None and sizes_t.numel() > 0:
            from_sizes = True
            sizes = _ints(sizes_t)
            scales = [o / i for o, i in zip(sizes, x.shape, strict=True)]
        elif attr_scales is not None:
            scales = list(attr_scales)
            sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales, strict=True)]
        else:
            raise ValueError(f"Resize node '{node.name}' got neither scales nor sizes")
        if mode == "cubic":
            if x.dim() != 4:
                raise ValueError(
                    f"cubic Resize node '{node.name}' needs a 4-D input, got {x.dim()}-D"
                )
            if coordinate_mode == "align_corners" or from_sizes:
                return F.interpolate(
                    x,
                    size=sizes[2:],
                    mode="bicubic",
                    align_corners=coordinate_mode == "align_corners",
                )
            return F.interpolate(
                x,
                scale_factor=scales[2:],
                mode="bicubic",
                align_corners=False,
                recompute_scale_factor=False,
            )
        # Separable resampling axis by axis: exact ONNX coordinate rules for every mode.
        for axis in range(x.dim()):
            in_size, out_size, scale = x.shape[axis], sizes[axis], scales[axis]
            if in_size == out_size and scale == 1.0:
                continue
            coords = _source_coordinates(coordinate_mode, out_size, in_size, scale, x.device)
            if mode == "nearest":
                x = x.index_select(axis, _nearest_index(nearest_mode, coords, in_size))
                continue
            coords = coords.clamp(0, in_size - 1)
            low = coords.floor().long().clamp(0, in_size - 1)
            high = (low + 1).clamp(max=in_size - 1)
            weight_shape = [1] * x.dim()
            weight_shape[axis] = out_size
            weight = (coords - low.to(coords.dtype)).to(x.dtype).reshape(weight_shape)
            x_low, x_high = x.index_select(axis, low), x.index_select(axis, high)
            x = x_low + (x_high - x_low) * weight
        return x

    return run


# ----------------------------------------------------------------------------- constants


def constant_value(node: ir.Node) -> np.ndarray:
    """The value of a Constant node as a numpy array."""
    attributes = node.attributes
    if attributes.get("value") is not None:
        return np.array(attributes["value"].as_tensor().numpy())
    if attributes.get("value_float") is not None:
        return np.array(attributes.get_float("value_float"), dtype=np.float32)
    if attributes.get("value_floats") is not None:
        return np.array(list(attributes.get_floats("value_floats")), dtype=np.float32)
    if attributes.get("value_int") is not None:
        return np.array(attributes.get_int("value_int"), dtype=np.int64)
    if attributes.get("value_ints") is not None:
        return np.array(list(attributes.get_ints("value_ints")), dtype=np.int64)
    raise UnsupportedKernelError("Constant with a sparse or string value")


# Constant nodes become buffers in OnnxModule; listed here so the op counts as supported.
KERNELS["Constant"] = lambda node, opset: None  # type: ignore[assignment,return-value]
