"""The first stages: observe shapes, build the view, find the dependency groups."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.inputs import DefaultSizeError, random_inputs, runnable_sizes
from onnxslim.model import observed_shapes
from onnxslim.passes.pruning._counts import base_macs
from onnxslim.passes.pruning._groups import Group, apply_ignores, build_groups, make_segments
from onnxslim.passes.pruning._view import GraphView


@dataclasses.dataclass
class PruneAnalysis:
    """The view of the graph at observed shapes and its dependency groups (segments made)."""

    view: GraphView
    groups: list[Group]

    @property
    def base_macs(self) -> int:
        return base_macs(self.view)


def analyze(
    model: ir.Model,
    sizes: Mapping[str, Any] | None = None,
    *,
    prune_hidden: bool = False,
    round_to: int = 1,
    ignore: Iterable[str] = (),
    feeds: Mapping[str, np.ndarray] | None = None,
) -> PruneAnalysis:
    """Observes concrete shapes (one ORT run) and builds the dependency groups.

    ``feeds``: one feed of the user's data to observe shapes on (a KV cache, audio lengths the
    model needs); None: random inputs at sizes the model runs.
    """
    if feeds is None:
        try:  # sizes at which the model runs (free when the pipeline already chose them)
            sizes = runnable_sizes(model, sizes)
        except DefaultSizeError:
            pass  # observing shapes then falls back to inferred shapes, and says so
        feeds = random_inputs(model, sizes)
    view = GraphView(model, observed_shapes(model, feeds), prune_hidden=prune_hidden)
    groups = build_groups(view)
    apply_ignores(groups, ignore)
    for group in groups:
        make_segments(group, round_to)
    return PruneAnalysis(view, groups)


def dependency_groups(
    model: ir.Model, sizes: Mapping[str, Any] | None = None, *, prune_hidden: bool = False
) -> list[dict[str, Any]]:
    """Every dependency group of ``model``: size, members, prunable or the blocking reasons.

    This is what ``onnxslim inspect --groups`` prints.
    """
    return [group.describe() for group in analyze(model, sizes, prune_hidden=prune_hidden).groups]
