"""Handlers of Conv (plain, depthwise, grouped) and ConvTranspose."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
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
from onnxslim.passes.pruning._ir import is_constant

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView


def conv(view: GraphView, node: ir.Node) -> HandlerResult:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    groups = node.attributes.get_int("group", 1)
    c_in, c_out = view.shape(x)[1], view.shape(y)[1]
    per_group_in, per_group_out = c_in // groups, c_out // groups
    batch = Family([(x, 0, ACTIVATION), (y, 0, ACTIVATION)], [(0, 1, *identity(view.shape(x)[0]))])
    spatial = [
        Family([(x, axis, ACTIVATION)], [], blocked=f"Conv reads spatial axis {axis}")
        for axis in range(2, len(view.shape(x)))
    ]
    w_role = PRODUCER if is_constant(w) else ACTIVATION
    if groups == 1:
        in_family = Family(
            [(x, 1, ACTIVATION), (w, 1, CONSUMER if is_constant(w) else ACTIVATION)],
            [(0, 1, *identity(c_in))],
        )
        out_members = [(y, 1, ACTIVATION), (w, 0, w_role)]
        if bias is not None:
            out_members.append((bias, 0, PARAM))
        out_family = Family(
            out_members, [(0, j, *identity(c_out)) for j in range(1, len(out_members))]
        )
        return [batch, in_family, out_family, *spatial]
    if groups == c_in:
        # Depthwise (channel multiplier m): input c feeds outputs [c*m, (c+1)*m).
        multiplier = c_out // c_in
        members = [(x, 1, ACTIVATION), (y, 1, ACTIVATION), (w, 0, PARAM)]
        repeated = np.repeat(np.arange(c_in), multiplier)
        links = [(0, 1, repeated, np.arange(c_out)), (1, 2, *identity(c_out))]
        if bias is not None:
            members.append((bias, 0, PARAM))
            links.append((1, 3, *identity(c_out)))
        family = Family(members, links, rewrite=_rewrite_group(node, x))
        return [batch, family, *spatial]
    # Grouped: position k within every group is one unit, so each group keeps the same count.
    in_family = Family(
        [(x, 1, ACTIVATION), (w, 1, CONSUMER)],
        [
            (0, 0, np.arange(c_in), np.arange(c_in) % per_group_in),
            (0, 1, np.arange(per_group_in), np.arange(per_group_in)),
        ],
    )
    out_members = [(y, 1, ACTIVATION), (w, 0, w_role)]
    if bias is not None:
        out_members.append((bias, 0, PARAM))
    out_links = [(0, 0, np.arange(c_out), np.arange(c_out) % per_group_out)]
    out_links += [(0, j, *identity(c_out)) for j in range(1, len(out_members))]
    return [batch, in_family, Family(out_members, out_links), *spatial]


def _rewrite_group(node: ir.Node, x: ir.Value | None) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        node.attributes["group"] = ir.AttrInt64("group", plan.new_size(x, 1))

    return rewrite


def conv_transpose(view: GraphView, node: ir.Node) -> HandlerResult:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    if node.attributes.get_int("group", 1) != 1:
        return Blocked("grouped ConvTranspose is not handled")
    if node.attributes.get("output_shape") is not None:
        return Blocked("ConvTranspose with an explicit output_shape is not handled")
    batch = Family([(x, 0, ACTIVATION), (y, 0, ACTIVATION)], [(0, 1, *identity(view.shape(x)[0]))])
    in_family = Family(
        [(x, 1, ACTIVATION), (w, 0, CONSUMER)], [(0, 1, *identity(view.shape(x)[1]))]
    )
    out_members = [(y, 1, ACTIVATION), (w, 1, PRODUCER)]
    if bias is not None:
        out_members.append((bias, 0, PARAM))
    out_family = Family(
        out_members, [(0, j, *identity(view.shape(y)[1])) for j in range(1, len(out_members))]
    )
    return [batch, in_family, out_family]
