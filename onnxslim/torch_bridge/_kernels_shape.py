"""Shape and data-movement kernels: Shape/Size, Reshape/Flatten/Transpose, (Un)Squeeze, Concat/Split,
Slice, Gather, Expand/Tile, Range, ConstantOfShape, Trilu, Pad, and Constant."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxslim.torch_bridge._registry import (
    KERNELS,
    UnsupportedKernelError,
    _attr_tensor,
    _ints,
    _kernel,
    _norm_axes,
    _torch_pad_order,
)


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
