"""What the pass counts: MACs before and after a plan, by the engine's one MAC rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxslim.model import graph_macs

if TYPE_CHECKING:
    from onnxslim.passes.pruning._plan import Plan
    from onnxslim.passes.pruning._view import GraphView


def base_macs(view: GraphView) -> int:
    """MACs of the graph at the observed shapes of ``view`` (0 for a node of unknown shape),
    If/Loop/Scan bodies included."""
    return graph_macs(view.graph, view.shape).total


def predicted_macs(view: GraphView, plan: Plan) -> int:
    """MACs after the plan: the same rule, at the sizes the plan leaves on every axis."""

    def shape_after(value: ir.Value) -> tuple[int, ...] | None:
        shape = view.shape(value)
        if shape is None:
            return None
        return tuple(plan.kept_size(value, axis, size) for axis, size in enumerate(shape))

    return graph_macs(view.graph, shape_after).total
