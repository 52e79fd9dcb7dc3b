"""Elementwise kernels: unary and binary math, comparisons, logic, variadic Min/Max/Sum/Mean,
activations, Clip, Softmax, Identity/Dropout and casts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxslim.torch_bridge._registry import (
    KERNELS,
    Builder,
    _kernel,
    torch_dtype,
)


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
