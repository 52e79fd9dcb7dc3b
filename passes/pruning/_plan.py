"""Choosing what to remove: per-group selection by ``ratio``, or a greedy search for ``target_macs``.

``ratio`` is the fraction of units REMOVED (0.3 removes 30 %); ``target_macs`` is the fraction of
MACs KEPT (0.5 keeps half). When ``target_macs`` is given, ``ratio`` is not used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._analysis import PruneAnalysis
from onnxslim.passes.pruning._counts import predicted_macs
from onnxslim.passes.pruning._groups import Group

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """Removed units per group, and the per-slot view of it that rewrites read."""

    groups: Sequence[Group]
    removed_units: dict[int, np.ndarray]

    def __post_init__(self) -> None:
        self._removed: dict[tuple[int, int], np.ndarray] = {}
        self._sizes: dict[tuple[int, int], int] = {}
        self._param_removed: dict[tuple[int, int, int], np.ndarray] = {}
        for group in self.groups:
            units = self.removed_units.get(group.index)
            if units is None or len(units) == 0:
                continue
            for slot, unit_of in zip(group.slots, group.unit_of):
                removed = np.flatnonzero(np.isin(unit_of, units))
                self._removed[(id(slot.value), slot.axis)] = removed
                self._sizes[(id(slot.value), slot.axis)] = slot.size
                if slot.users:  # a per-channel param shared across groups: each cuts its own copy
                    self._param_removed[(group.index, id(slot.value), slot.axis)] = removed

    def removed(self, value: ir.Value, axis: int, group: int | None = None) -> np.ndarray:
        if group is not None and (group, id(value), axis) in self._param_removed:
            return self._param_removed[(group, id(value), axis)]
        return self._removed.get((id(value), axis), np.zeros(0, dtype=np.int64))

    def fraction(self, value: ir.Value | None, axis: int) -> float:
        """The KEPT fraction of ``value``'s ``axis`` (1.0 when the plan does not touch it)."""
        key = (id(value), axis)
        if value is None or key not in self._removed:
            return 1.0
        return 1.0 - len(self._removed[key]) / self._sizes[key]

    def new_size(self, value: ir.Value, axis: int) -> int:
        key = (id(value), axis)
        return self._sizes[key] - len(self._removed[key])

    def kept_size(self, value: ir.Value, axis: int, size: int) -> int:
        """``size`` of ``value``'s ``axis`` after the plan (unchanged when it does not touch it)."""
        removed = self._removed.get((id(value), axis))
        return size if removed is None else size - len(removed)

    @property
    def empty(self) -> bool:
        return not self._removed


def select(
    groups: Sequence[Group],
    scores: Mapping[int, np.ndarray],
    ratio: float,
    *,
    global_ranking: bool = False,
    max_ratio: float = 0.9,
    min_kept: int = 1,
) -> dict[int, np.ndarray]:
    """Units to remove per group (``ratio`` = removed fraction): lowest scores first, per segment,
    kept counts rounded up."""
    threshold = None
    if global_ranking and ratio > 0:
        normalized = [
            scores[g.index] / (np.mean(scores[g.index]) or 1.0) for g in groups if g.index in scores
        ]
        if normalized:
            threshold = np.quantile(np.concatenate(normalized), ratio)
    removed: dict[int, np.ndarray] = {}
    for group in groups:
        if group.index not in scores:
            continue
        group_scores = scores[group.index]
        normalized_scores = group_scores / (np.mean(group_scores) or 1.0)
        chosen = []
        for segment in group.segments:
            size = len(segment.units)
            if threshold is not None:
                to_remove = int(np.sum(normalized_scores[segment.units] < threshold))
            else:
                to_remove = int(math.floor(ratio * size + 1e-9))
            to_remove = min(to_remove, int(math.floor(max_ratio * size + 1e-9)))
            kept = max(size - to_remove, min_kept, 1)
            kept = min(size, math.ceil(kept / segment.step) * segment.step)
            if kept >= size:
                continue
            order = np.lexsort((segment.units, group_scores[segment.units]))
            chosen.append(segment.units[order[: size - kept]])
        if chosen:
            removed[group.index] = np.sort(np.concatenate(chosen))
    return removed


def plan_pruning(
    analysis: PruneAnalysis,
    scores: Mapping[int, np.ndarray],
    *,
    ratio: float | None,
    target_macs: float | None,
    global_ranking: bool,
    max_ratio: float,
    min_kept: int,
) -> Plan:
    """A plan removing ``ratio`` of each group's units, or, when ``target_macs`` is given, the
    plan keeping at most that fraction of the MACs (met after rounding; ``ratio`` unused)."""
    if target_macs is None:
        removed = select(
            analysis.groups,
            scores,
            ratio or 0.0,
            global_ranking=global_ranking,
            max_ratio=max_ratio,
            min_kept=min_kept,
        )
        return Plan(analysis.groups, removed)
    return greedy_for_macs(analysis, scores, target_macs * analysis.base_macs, max_ratio, min_kept)


# cost(group index, units removed from the group before, after a cut) -> the cut's price
CutCost = Callable[[int, int, int], float]


def _ranked_segments(
    analysis: PruneAnalysis, scores: Mapping[int, np.ndarray]
) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
    """(group index, units lowest score first, their scores over the group's mean, rounding
    step) of every scored group's segments."""
    segments = []
    for group in analysis.groups:
        if group.index not in scores:
            continue
        group_scores = scores[group.index]
        normalized = group_scores / (np.mean(group_scores) or 1.0)
        for segment in group.segments:
            order = np.lexsort((segment.units, group_scores[segment.units]))
            segments.append(
                (group.index, segment.units[order], normalized[segment.units[order]], segment.step)
            )
    return segments


def greedy_for_macs(
    analysis: PruneAnalysis,
    scores: Mapping[int, np.ndarray],
    goal: float,
    max_ratio: float,
    min_kept: int,
    *,
    cost: CutCost | None = None,
    per: Callable[[Plan], float] | None = None,
) -> Plan:
    """Removes whole rounding steps, cheapest first, until MACs <= goal; the price of a cut is
    ``cost`` or, without it, the mean normalized score of the units it removes, divided, with
    ``per`` (a plan's MACs or predicted latency), by the fraction of it the cut saves: a
    squeeze-excite bottleneck, which saves almost nothing, is cut last."""
    segments = _ranked_segments(analysis, scores)
    kept = [len(units) for _, units, _, _ in segments]

    def removed_from(group_index: int) -> int:
        return sum(
            len(units) - count
            for (g, units, _, _), count in zip(segments, kept)
            if g == group_index
        )

    def plan() -> Plan:
        removed: dict[int, list[np.ndarray]] = {}
        for (group_index, units, _, _), count in zip(segments, kept):
            if count < len(units):
                removed.setdefault(group_index, []).append(units[: len(units) - count])
        return Plan(
            analysis.groups, {g: np.sort(np.concatenate(parts)) for g, parts in removed.items()}
        )

    current = plan()
    macs = predicted_macs(analysis.view, current)
    full = per(Plan(analysis.groups, {})) if per is not None else 1.0
    now = per(current) if per is not None else 1.0
    saving: dict[int, float] = {}

    def saved_per_unit(index: int) -> float:
        """Fraction of ``per`` one more step of segment ``index`` saves, per unit (first order)."""
        assert per is not None
        if index not in saving:
            count, step = kept[index], segments[index][3]
            kept[index] = count - step
            saving[index] = (now - per(plan())) / step
            kept[index] = count
        return max(saving[index], 1e-12) / max(full, 1e-12)

    while macs > goal:
        best, best_score = None, None
        for index, (group_index, units, normalized, step) in enumerate(segments):
            size, count = len(units), kept[index]
            target = (count - 1) // step * step if count % step == 0 else count // step * step
            if target < max(min_kept, 1) or size - target > max_ratio * size + 1e-9:
                continue
            if cost is None:
                chunk_score = float(np.mean(normalized[size - count : size - target]))
                if per is not None:  # importance lost per MAC (or second) saved
                    chunk_score /= saved_per_unit(index)
            else:
                before = removed_from(group_index)
                chunk_score = cost(group_index, before, before + count - target)
            if best_score is None or chunk_score < best_score:
                best, best_score = (index, target), chunk_score
        if best is None:
            logger.warning(
                "prune: stopped at %.3f of the MACs (target %.3f): every group is at its rounding "
                "step, min_kept or max_ratio %.2f limit",
                predicted_macs(analysis.view, current) / analysis.base_macs,
                goal / analysis.base_macs,
                max_ratio,
            )
            break
        kept[best[0]] = best[1]
        current = plan()
        macs = predicted_macs(analysis.view, current)
        if per is not None:
            now = per(current)
            saving.pop(best[0], None)  # the others change little with one cut (first order)
    return current
