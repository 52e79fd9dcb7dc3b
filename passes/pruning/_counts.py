"""What the pass counts: MACs per node (before and after a plan) and parameters.

These are the pass's own copies of engine concepts, kept in this one module until wave 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxslim.passes.pruning._plan import Plan
    from onnxslim.passes.pruning._view import GraphView

ShapeOf = Callable[[ir.Value], "tuple[int, ...] | None"]


# wave 2: onnxslim.model.node_macs(node, shape_of) replaces this function (same signature).
def _node_macs(node: ir.Node, shape_of: ShapeOf) -> int:
    """Multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul at the shapes ``shape_of`` gives."""
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or node.domain not in ("", "ai.onnx"):
        return 0
    x_shape, w_shape, y_shape = (
        None if v is None else shape_of(v) for v in (*node.inputs[:2], node.outputs[0])
    )
    if x_shape is None or w_shape is None or y_shape is None:
        return 0
    if op == "Conv":
        return math.prod(y_shape) * math.prod(w_shape[1:])
    if op == "ConvTranspose":
        return math.prod(x_shape) * math.prod(w_shape[1:])
    if op == "Gemm":
        k = x_shape[0] if node.attributes.get_int("transA", 0) else x_shape[1]
        return math.prod(y_shape) * k
    return math.prod(y_shape) * x_shape[-1]


def macs_of_node(view: GraphView, node: ir.Node) -> int:
    """MACs of ``node`` at the observed shapes of ``view``."""
    return _node_macs(node, view.shape)


def node_macs(view: GraphView) -> dict[str, int]:
    """MACs per node name (``#i`` for unnamed nodes) at the observed shapes."""
    return {node.name or f"#{i}": macs_of_node(view, node) for i, node in enumerate(view.graph)}


def predicted_macs(view: GraphView, plan: Plan) -> int:
    """MACs after the plan, from kept fractions of the axes each op multiplies over."""
    total = 0.0
    for node in view.graph:
        macs = macs_of_node(view, node)
        if not macs:
            continue
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        rank = len(view.shape(y))
        if node.op_type == "Conv":
            fraction = plan.fraction(y, 1) * plan.fraction(w, 1)
        elif node.op_type == "ConvTranspose":
            fraction = plan.fraction(x, 1) * plan.fraction(w, 1)
        elif node.op_type == "Gemm":
            k_axis = 0 if node.attributes.get_int("transA", 0) else 1
            fraction = plan.fraction(y, 0) * plan.fraction(y, 1) * plan.fraction(x, k_axis)
        else:
            fraction = math.prod(plan.fraction(y, a) for a in range(rank))
            fraction *= plan.fraction(x, len(view.shape(x)) - 1)
        total += macs * fraction
    return int(round(total))


# wave 2: onnxslim.model.parameter_count. It differs: this count includes int64 shape constants,
# the engine's does not (the summary/report disagreement is the known bug fixed in wave 2).
def count_parameters(model: ir.Model) -> int:
    """Elements of initializers and Constant nodes (Paddle exports keep weights in Constant nodes)."""
    total = sum(
        v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None
    )
    for node in model.graph:
        if node.op_type == "Constant" and "value" in node.attributes:
            total += node.attributes["value"].as_tensor().size
    return int(total)
