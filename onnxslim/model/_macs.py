"""THE MAC rule for one node, given a shape lookup (static, inferred or observed shapes)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.model._ops import (
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    GEMM_OPS,
    MATMUL_OPS,
    OUTPUT_REDUCTION_OPS,
    RECURRENT_OPS,
    SPECTRAL_OPS,
    WEIGHT_INPUTS,
)

__all__ = [
    "node_macs",
    "unknown_reason",
    "constant_int",
    "shape_lookup",
    "static_shape",
    "ShapeOf",
    "MAC_DOMAINS",
]

ShapeOf = Callable[[ir.Value], "tuple[int, ...] | None"]
# ORT's optimized graphs put fused/quantized kernels in com.microsoft (and its NHWC domain)
MAC_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft", "com.ms.internal.nhwc"})


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def _lookup(shape_of: ShapeOf, value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    shape = shape_of(value)
    if shape is None:
        return None
    dims = tuple(int(d) for d in shape)
    # shape inference writes -1 (unknown) or a negative length (an input shorter than a
    # kernel): no count can come from it
    return None if any(d < 0 for d in dims) else dims


def unknown_reason(node: ir.Node, shape_of: ShapeOf) -> str:
    """Why :func:`node_macs` gave None: the first input or output whose shape is missing or
    has a negative dim."""
    for value in [*node.inputs, *node.outputs]:
        if value is None:
            continue
        shape = shape_of(value)
        if shape is None:
            return f"shape of '{value.name}' unknown"
        if _lookup(shape_of, value) is None:  # a negative dim
            dims = "x".join(str(int(d)) for d in shape)
            return f"shape of '{value.name}' is {dims} (an input too short for the sizes given?)"
    return "a needed shape unknown"


def _matmul_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    a2 = a if len(a) >= 2 else (1, *a)
    b2 = b if len(b) >= 2 else (*b, 1)
    batch = np.broadcast_shapes(a2[:-2], b2[:-2]) if (len(a2) > 2 or len(b2) > 2) else ()
    return math.prod(batch) * a2[-2] * a2[-1] * b2[-1]


def node_macs(node: ir.Node, shape_of: ShapeOf) -> int | None:
    """Multiply-accumulates of one node; None when a needed shape is unknown, 0 for other ops.

    ``shape_of`` maps a value to its concrete shape or None. Covers the ONNX compute ops and
    ORT's fused and quantized kernels (FusedConv, QLinearConv, QGemm, MatMulNBits, ...).
    """
    op = node.op_type
    if node.domain not in MAC_DOMAINS:
        return 0
    weight_slot = WEIGHT_INPUTS.get(op, (1,))[0]
    if op in CONV_OPS:
        weight = _lookup(shape_of, _input(node, weight_slot))
        output = _lookup(shape_of, node.outputs[0])
        if weight is None or output is None:
            return None
        # per output element: (C_in / group) * prod(kernel) multiply-adds
        return math.prod(output) * math.prod(weight[1:])
    if op in CONV_TRANSPOSE_OPS:
        weight = _lookup(shape_of, _input(node, weight_slot))
        data = _lookup(shape_of, _input(node, 0))
        if weight is None or data is None:
            return None
        # every input element scatters into (C_out / group) * prod(kernel) outputs
        return math.prod(data) * math.prod(weight[1:])
    if op in GEMM_OPS:
        a = _lookup(shape_of, _input(node, 0))
        b = _lookup(shape_of, _input(node, weight_slot))
        if a is None or b is None:
            return None
        m, k = (a[1], a[0]) if node.attributes.get_int("transA", 0) else (a[0], a[1])
        n = b[0] if node.attributes.get_int("transB", 0) else b[1]
        return m * k * n
    if op in MATMUL_OPS:
        a = _lookup(shape_of, _input(node, 0))
        b = _lookup(shape_of, _input(node, weight_slot))
        if a is None or b is None:
            return None
        return _matmul_macs(a, b)
    if op in OUTPUT_REDUCTION_OPS:
        a = _lookup(shape_of, _input(node, 0))
        output = _lookup(shape_of, node.outputs[0])
        if a is None or output is None:
            return None
        if len(a) == 1:
            return math.prod(output) * a[0]
        transposed = node.attributes.get_int("transA", 0)
        return math.prod(output) * (a[-2] if transposed else a[-1])
    if op in RECURRENT_OPS:
        return _recurrent_macs(node, shape_of)
    if op in SPECTRAL_OPS and node.domain in ("", "ai.onnx"):
        return _spectral_macs(node, shape_of)
    return 0


def _spectral_macs(node: ir.Node, shape_of: ShapeOf) -> int | None:
    """DFT/STFT as the direct transform ORT's kernels bound: every complex output bin sums
    ``length`` input samples, 2 real MACs each for a real input ([..., 1]), 4 for a complex one
    ([..., 2]). ``length`` is the DFT's input length along its axis (``dft_length`` pads or
    crops), the STFT's frame length (its window's, or ``frame_length``)."""
    data = _lookup(shape_of, _input(node, 0))
    output = _lookup(shape_of, node.outputs[0])
    if data is None or output is None or not data or not output:
        return None
    per_sample = 4 if data[-1] == 2 else 2
    bins = math.prod(output) // output[-1]  # output [..., 2]: real and imaginary parts
    if node.op_type == "STFT":
        window = _lookup(shape_of, _input(node, 2))
        length = window[0] if window else constant_int(_input(node, 3))
    else:
        length = constant_int(_input(node, 1))
        if length is None:
            axis = node.attributes.get_int("axis", 1)
            length = data[axis % len(data)] if len(data) > 1 else None
    if length is None:
        return None
    return bins * length * per_sample


def constant_int(value: ir.Value | None) -> int | None:
    """The value's one-element constant as an int (None: not a constant, or not one element)."""
    tensor = value.const_value if value is not None else None
    if tensor is None or tensor.size != 1:
        return None
    return int(tensor.numpy().reshape(-1)[0])


def _recurrent_macs(node: ir.Node, shape_of: ShapeOf) -> int | None:
    """LSTM/GRU/RNN: every step of every sequence multiplies W by x_t and R by h_(t-1), per
    direction: seq * batch * (|W| + |R|) (gate matrices included)."""
    data = _lookup(shape_of, _input(node, 0))
    w = _lookup(shape_of, _input(node, 1))
    r = _lookup(shape_of, _input(node, 2))
    if data is None or w is None or r is None or len(data) != 3:
        return None
    return data[0] * data[1] * (math.prod(w) + math.prod(r))


def static_shape(value: ir.Value) -> tuple[int, ...] | None:
    """The value's declared shape when every dim is a number, else its constant's shape."""
    if value.shape is not None and value.shape.is_static():
        return value.shape.numpy()
    if value.const_value is not None:
        return tuple(value.const_value.shape.numpy())
    return None


def shape_lookup(shapes: Mapping[str, tuple[int, ...]]) -> ShapeOf:
    """A ``shape_of`` reading ``shapes`` by name, then the value's static shape, then its constant."""

    def shape_of(value: ir.Value) -> tuple[int, ...] | None:
        if value.name is not None and value.name in shapes:
            return tuple(shapes[value.name])
        return static_shape(value)

    return shape_of
