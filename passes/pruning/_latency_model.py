"""The ``score_per_ms`` allocation's cost model: where the input's latency goes, node by node.

One profiled ORT session of the model at the pass's sizes (5 runs on one thread, the median
per kernel) gives each node's kernel time; a plan's predicted latency scales every node's time
by the share of its work the plan keeps (MACs for compute nodes, output elements for the
memory-bound rest: activations, Add/Mul, Resize).
Kernels ORT adds itself (layout reorders) are a fixed cost. First order and per node: ORT's
fusions are folded back onto the node that names the fused kernel
(``onnxslim.runtime.attribute_kernels``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.model import node_macs
from onnxslim.passes.pruning._plan import Plan
from onnxslim.passes.pruning._view import GraphView
from onnxslim.runtime import attribute_kernels, node_kernel_seconds

__all__ = ["NodeLatency"]


class NodeLatency:
    """Predicted latency of a plan from the nodes' measured kernel times."""

    def __init__(self, view: GraphView, node_seconds: Mapping[str, float]) -> None:
        self.node_seconds = dict(node_seconds)
        self.view = view
        self.base = self.predicted(None)

    @classmethod
    def measure(
        cls,
        view: GraphView,
        feeds: Mapping[str, np.ndarray],
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> NodeLatency:
        """Profiles ``view``'s model once on ``feeds`` (one thread: kernel times add up)."""
        seconds = node_kernel_seconds(view.model, feeds, runs=5, providers=providers, threads=1)
        return cls(view, attribute_kernels(view.graph, seconds))

    def predicted(self, plan: Plan | None) -> float:
        """Seconds of the measured nodes after ``plan`` (None: as measured)."""
        total = 0.0
        for node in self.view.graph:
            spent = self.node_seconds.get(node.name or "")
            if spent:
                total += spent * (1.0 if plan is None else self._kept_work(node, plan))
        return total

    def _kept_work(self, node: ir.Node, plan: Plan) -> float:
        shape = self.view.shape

        def after(value: ir.Value) -> tuple[int, ...] | None:
            dims = shape(value)
            if dims is None:
                return None
            return tuple(plan.kept_size(value, axis, size) for axis, size in enumerate(dims))

        before_macs = node_macs(node, shape)
        if before_macs:
            return (node_macs(node, after) or 0) / before_macs
        output = node.outputs[0] if node.outputs else None
        full, kept = shape(output), after(output) if output is not None else None
        if not full or kept is None:
            return 1.0
        return math.prod(kept) / max(math.prod(full), 1)
