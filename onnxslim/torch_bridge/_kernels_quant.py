"""QuantizeLinear / DequantizeLinear kernels with a straight-through estimator (fake quantization).

QuantizeLinear returns the integer codes as a float tensor (autograd cannot flow through an
integer dtype): round() passes gradients straight through, the clamp to the integer range cuts
them outside it, and the scale gets the LSQ gradient. ORT rounds half to even, as torch.round.
"""

from __future__ import annotations

import onnx_ir as ir
import torch

from onnxslim.torch_bridge._registry import UnsupportedKernelError, _kernel

# zero-point dtype -> (lowest, highest) integer code; no zero point means uint8
_LIMITS = {
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.uint16: (0, 65535),
    torch.int16: (-32768, 32767),
    torch.int32: (-(2**31), 2**31 - 1),
}


def _per_axis(parameter: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """A per-axis scale or zero point shaped to broadcast along ``axis`` of ``x``."""
    if parameter.dim() == 0:
        return parameter
    shape = [1] * x.dim()
    shape[axis % x.dim()] = parameter.numel()
    return parameter.reshape(shape)


def _check_blocked(node: ir.Node) -> int:
    if node.attributes.get_int("block_size", 0):
        raise UnsupportedKernelError("blocked quantization (block_size) has no torch kernel here")
    return node.attributes.get_int("axis", 1)


@_kernel("QuantizeLinear")
def _quantize_linear(node: ir.Node, opset: int):
    axis = _check_blocked(node)

    def run(x, scale, zero_point=None):
        low, high = _LIMITS.get(zero_point.dtype if zero_point is not None else torch.uint8, (0, 0))
        if low == high:
            raise ValueError(f"QuantizeLinear to {zero_point.dtype} is not supported")
        values = x / _per_axis(scale.to(x.dtype), x, axis)
        rounded = values + (torch.round(values) - values).detach()  # straight-through
        if zero_point is not None:
            rounded = rounded + _per_axis(zero_point, x, axis).to(x.dtype)
        return torch.clamp(rounded, low, high)

    return run


@_kernel("DequantizeLinear")
def _dequantize_linear(node: ir.Node, opset: int):
    axis = _check_blocked(node)

    def run(x, scale, zero_point=None):
        values = x.to(scale.dtype)
        if zero_point is not None:
            values = values - _per_axis(zero_point, values, axis).to(scale.dtype)
        return values * _per_axis(scale, values, axis)

    return run
