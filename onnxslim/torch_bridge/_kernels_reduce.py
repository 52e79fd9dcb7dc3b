"""Reduction kernels: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, ArgMax/ArgMin."""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir
import torch

from onnxslim.torch_bridge._registry import (
    KERNELS,
    Builder,
    UnsupportedKernelError,
    _ints,
    _kernel,
    _norm_axes,
)


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
