"""Handlers of the matrix products and the embedding lookup: Gemm, MatMul, Gather."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxslim.passes.pruning._family import (
    ACTIVATION,
    CONSUMER,
    PARAM,
    PRODUCER,
    Blocked,
    Family,
    HandlerResult,
    identity,
)
from onnxslim.passes.pruning._ir import is_constant, norm_axis

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView


def gemm(view: GraphView, node: ir.Node) -> HandlerResult:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    trans_a, trans_b = node.attributes.get_int("transA", 0), node.attributes.get_int("transB", 0)
    m, n = view.shape(y)
    k = view.shape(a)[0 if trans_a else 1]
    constant_b = is_constant(b)
    row_members = [(y, 0, ACTIVATION), (a, 1 if trans_a else 0, ACTIVATION)]
    col_members = [
        (y, 1, ACTIVATION),
        (b, 0 if trans_b else 1, PRODUCER if constant_b else ACTIVATION),
    ]
    if c is not None:
        c_shape = view.shape(c)
        if len(c_shape) >= 1 and c_shape[-1] == n and n > 1:
            col_members.append((c, len(c_shape) - 1, PARAM if is_constant(c) else ACTIVATION))
        if len(c_shape) == 2 and c_shape[0] == m and m > 1:
            row_members.append((c, 0, PARAM if is_constant(c) else ACTIVATION))
    k_family = Family(
        [
            (a, 0 if trans_a else 1, ACTIVATION),
            (b, 1 if trans_b else 0, CONSUMER if constant_b else ACTIVATION),
        ],
        [(0, 1, *identity(k))],
    )
    return [
        Family(row_members, [(0, j, *identity(m)) for j in range(1, len(row_members))]),
        Family(col_members, [(0, j, *identity(n)) for j in range(1, len(col_members))]),
        k_family,
    ]


def matmul(view: GraphView, node: ir.Node) -> HandlerResult:
    a, b = node.inputs
    y = node.outputs[0]
    a_shape, b_shape, y_shape = view.shape(a), view.shape(b), view.shape(y)
    if len(a_shape) < 2 or len(b_shape) < 2:
        return Blocked("MatMul with a 1-D operand is not handled")
    rank = len(y_shape)
    constant_b = is_constant(b)
    families = []
    for axis in range(rank - 2):
        members = [(y, axis, ACTIVATION)]
        for operand, shape in ((a, a_shape), (b, b_shape)):
            operand_axis = axis - (rank - len(shape))
            if operand is not None and operand_axis >= 0 and shape[operand_axis] != 1:
                members.append((operand, operand_axis, ACTIVATION))
        families.append(
            Family(members, [(0, j, *identity(y_shape[axis])) for j in range(1, len(members))])
        )
    families.append(
        Family(
            [(y, rank - 2, ACTIVATION), (a, len(a_shape) - 2, ACTIVATION)],
            [(0, 1, *identity(y_shape[-2]))],
        )
    )
    families.append(
        Family(
            [
                (y, rank - 1, ACTIVATION),
                (b, len(b_shape) - 1, PRODUCER if constant_b else ACTIVATION),
            ],
            [(0, 1, *identity(y_shape[-1]))],
        )
    )
    families.append(
        Family(
            [
                (a, len(a_shape) - 1, ACTIVATION),
                (b, len(b_shape) - 2, CONSUMER if constant_b else ACTIVATION),
            ],
            [(0, 1, *identity(a_shape[-1]))],
        )
    )
    return families


def gather(view: GraphView, node: ir.Node) -> HandlerResult:
    data, indices = node.inputs
    out = node.outputs[0]
    data_shape, index_shape = view.shape(data), view.shape(indices)
    axis = norm_axis(node.attributes.get_int("axis", 0), len(data_shape))
    families = []
    role = PRODUCER if is_constant(data) else ACTIVATION
    for data_axis in range(len(data_shape)):
        if data_axis == axis:
            families.append(
                Family([(data, axis, ACTIVATION)], [], blocked=f"Gather selects along axis {axis}")
            )
            continue
        out_axis = data_axis if data_axis < axis else data_axis + len(index_shape) - 1
        families.append(
            Family(
                [(out, out_axis, ACTIVATION), (data, data_axis, role)],
                [(0, 1, *identity(data_shape[data_axis]))],
            )
        )
    return families
