"""The one table of torch kernels per ONNX op, its ``_kernel`` decorator and shared argument helpers.

``KERNELS`` maps an op type to a builder ``(node, opset) -> callable(*inputs)``; the family modules
(``_kernels_elementwise``, ``_kernels_nn``, ``_kernels_reduce``, ``_kernels_shape``,
``_kernels_resize``, ``_kernels_recurrent``, ``_kernels_control``) fill it when
``onnxslim.torch_bridge._kernels`` imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

__all__ = [
    "Step",
    "run_step",
    "KERNELS",
    "Builder",
    "UnsupportedKernelError",
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


def _torch_pad_order(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1, b2, .., e1, e2, ..]`` -> torch ``[b_last, e_last, .., b1, e1]``."""
    half = len(pads) // 2
    order = []
    for axis in reversed(range(half)):
        order += [pads[axis], pads[axis + half]]
    return order


# One planned node: (kernel, input slots (-1: absent), output slots, is BatchNorm, node name).
Step = tuple[Any, tuple[int, ...], tuple[int, ...], bool, str]


def run_step(step: Step, env: list[Any], update_stats: bool = False) -> None:
    """Runs one planned node on the slot table ``env`` (the top graph's and every body's plan)."""
    kernel, input_slots, output_slots, is_bn, node_name = step
    args = [env[slot] if slot >= 0 else None for slot in input_slots]
    while args and args[-1] is None:
        args.pop()
    try:
        result = kernel(*args, update_stats=update_stats) if is_bn else kernel(*args)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise RuntimeError(f"node '{node_name}' failed in torch: {error}") from error
    if isinstance(result, tuple):
        for slot, tensor in zip(output_slots, result, strict=False):
            env[slot] = tensor
    else:
        env[output_slots[0]] = result
