"""Per-group sensitivity: how much the outputs move when one group alone loses a step of units.

``measure_sensitivity`` prunes each prunable group by ``step`` (its lowest-scored units, rounded
to the group's channel step) on a copy of the model, runs the copy through ORT on a few samples
and records the relative output error against the unpruned model and the MACs that cut saves.
``allocate_by_sensitivity`` then meets a MACs goal where it hurts least: each cut costs its
predicted error increase per MAC saved, the error of a group growing with the square of the
fraction removed (the measured point fixes the curve), so cuts spread over insensitive groups.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.model import ValueProbe
from onnxslim.passes.pruning._analysis import PruneAnalysis
from onnxslim.passes.pruning._apply import apply_plan
from onnxslim.passes.pruning._counts import predicted_macs
from onnxslim.passes.pruning._groups import Group
from onnxslim.passes.pruning._plan import Plan, greedy_for_macs, select
from onnxslim.progress import track

__all__ = ["Sensitivity", "allocate_by_sensitivity", "measure_sensitivity", "output_error"]

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """One group's measurement: relative output error after removing ``removed`` of its
    ``size`` units, and the MACs that removal saves."""

    error: float
    removed: int
    size: int
    macs_saved: int

    def cost(self, removed_before: int, removed_after: int) -> float:
        """Predicted error increase per MAC saved of going from ``removed_before`` to
        ``removed_after`` units removed (error ~ error * (removed / self.removed) ** 2)."""
        if self.macs_saved <= 0 or self.removed <= 0:
            return float("inf")
        cut = removed_after - removed_before
        added = self.error * (removed_after**2 - removed_before**2) / self.removed**2
        return added / (self.macs_saved * cut / self.removed)


def output_error(
    reference: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, np.ndarray]]
) -> float:
    """sum((y - y_ref)^2) / sum(y_ref^2) over the float outputs of every batch."""
    squared, scale = 0.0, 0.0
    for expected, got in zip(reference, outputs):
        for name, array in expected.items():
            if not np.issubdtype(np.asarray(array).dtype, np.floating):
                continue
            ref = np.asarray(array, dtype=np.float64)
            squared += float(np.sum((np.asarray(got[name], dtype=np.float64) - ref) ** 2))
            scale += float(np.sum(ref**2))
    return squared / scale if scale else squared


def run_outputs(model: ir.Model, batches: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """The graph outputs of ``model`` on every batch (one ORT session)."""
    names = [str(v.name) for v in model.graph.outputs]
    probe = ValueProbe(model, [])
    return [probe.run(batch, names) for batch in batches]


def _step_units(group: Group, scores: np.ndarray, step: float, max_ratio: float) -> np.ndarray:
    """The lowest-scored ``step`` of the group's units, at least one rounding step of a segment."""
    fraction = max(step, max(s.step / len(s.units) for s in group.segments))
    removed = select([group], {group.index: scores}, fraction, max_ratio=max_ratio)
    return removed.get(group.index, np.zeros(0, dtype=np.int64))


def measure_sensitivity(
    model: ir.Model,
    analysis: PruneAnalysis,
    scores: Mapping[int, np.ndarray],
    batches: Sequence[Feeds],
    analyze_copy: Callable[[ir.Model], PruneAnalysis],
    *,
    step: float = 0.25,
    max_ratio: float = 0.9,
) -> dict[int, Sensitivity]:
    """Sensitivity of every scored prunable group (see the module docstring); ``analyze_copy``
    builds the same groups on a copy (the pass's own ``analyze`` settings)."""
    reference = run_outputs(model, batches)
    measured: dict[int, Sensitivity] = {}
    groups = [g for g in analysis.groups if g.prunable and g.index in scores]
    for group in track(groups, "prune: sensitivity", len(groups), "group"):
        units = _step_units(group, scores[group.index], step, max_ratio)
        if len(units) == 0:
            continue
        saved = analysis.base_macs - predicted_macs(
            analysis.view, Plan(analysis.groups, {group.index: units})
        )
        clone = model.clone()
        clone_analysis = analyze_copy(clone)
        apply_plan(clone_analysis.view, Plan(clone_analysis.groups, {group.index: units}))
        error = output_error(reference, run_outputs(clone, batches))
        measured[group.index] = Sensitivity(error, len(units), group.num_units, int(saved))
        logger.debug(
            "prune: group %d: %d units -> error %.3g, %d MACs",
            group.index,
            len(units),
            error,
            saved,
        )
    return measured


def allocate_by_sensitivity(
    analysis: PruneAnalysis,
    scores: Mapping[int, np.ndarray],
    sensitivity: Mapping[int, Sensitivity],
    goal: float,
    max_ratio: float,
    min_kept: int,
) -> Plan:
    """The plan meeting ``goal`` MACs by the cheapest cuts in predicted error per MAC saved
    (units inside a group still go lowest score first)."""
    measured = {index: s for index, s in sensitivity.items() if index in scores}

    def cost(group: int, removed_before: int, removed_after: int) -> float:
        return measured[group].cost(removed_before, removed_after)

    return greedy_for_macs(
        analysis, {g: scores[g] for g in measured}, goal, max_ratio, min_kept, cost=cost
    )
