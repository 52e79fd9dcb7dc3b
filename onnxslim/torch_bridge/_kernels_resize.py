"""Resize/Upsample kernels: ONNX coordinate rules for nearest, (bi)linear and cubic modes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxslim.torch_bridge._registry import (
    UnsupportedKernelError,
    _kernel,
)


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


def _resize_modes(node: ir.Node, opset: int) -> tuple[str, str, str]:
    """(mode, coordinate_transformation_mode, nearest_mode) with the opset's defaults."""
    mode = node.attributes.get_string("mode", "nearest")
    coordinate_mode = node.attributes.get_string(
        "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric"
    )
    nearest_mode = node.attributes.get_string(
        "nearest_mode", "round_prefer_floor" if opset >= 11 else "floor"
    )
    if mode == "linear" and node.op_type == "Upsample":
        coordinate_mode = "asymmetric"
    return mode, coordinate_mode, nearest_mode


def _check_resize_supported(node: ir.Node, mode: str, coordinate_mode: str) -> None:
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


def _output_geometry(
    node: ir.Node,
    opset: int,
    x: torch.Tensor,
    rest: tuple,
    attr_scales: Sequence[float] | None,
) -> tuple[list[float], list[int], bool]:
    """(scales, sizes, from_sizes) from the scales/sizes inputs (or the old scales attribute)."""
    if node.op_type == "Upsample" or opset < 11:
        scales_t, sizes_t = (rest[0] if rest else None), None
    else:
        scales_t = rest[1] if len(rest) > 1 else None
        sizes_t = rest[2] if len(rest) > 2 else None
    if scales_t is not None and scales_t.numel() > 0:
        scales = [float(s) for s in scales_t.reshape(-1).tolist()]
        sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales, strict=True)]
        return scales, sizes, False
    if sizes_t is not None and sizes_t.numel() > 0:
        sizes = [int(v) for v in sizes_t.reshape(-1).tolist()]
        scales = [o / i for o, i in zip(sizes, x.shape, strict=True)]
        return scales, sizes, True
    if attr_scales is not None:
        scales = list(attr_scales)
        sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales, strict=True)]
        return scales, sizes, False
    raise ValueError(f"Resize node '{node.name}' got neither scales nor sizes")


def _resize_cubic(
    node: ir.Node,
    x: torch.Tensor,
    coordinate_mode: str,
    scales: list[float],
    sizes: list[int],
    from_sizes: bool,
) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"cubic Resize node '{node.name}' needs a 4-D input, got {x.dim()}-D")
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


def _resize_separable(
    x: torch.Tensor,
    mode: str,
    coordinate_mode: str,
    nearest_mode: str,
    scales: list[float],
    sizes: list[int],
) -> torch.Tensor:
    """Nearest or linear resampling axis by axis: exact ONNX coordinate rules for every mode."""
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


@_kernel("Resize", "Upsample")
def _resize(node: ir.Node, opset: int):
    mode, coordinate_mode, nearest_mode = _resize_modes(node, opset)
    _check_resize_supported(node, mode, coordinate_mode)
    attr_scales = node.attributes.get_floats("scales", None)

    def run(x, *rest):
        scales, sizes, from_sizes = _output_geometry(node, opset, x, rest, attr_scales)
        if mode == "cubic":
            return _resize_cubic(node, x, coordinate_mode, scales, sizes, from_sizes)
        return _resize_separable(x, mode, coordinate_mode, nearest_mode, scales, sizes)

    return run
