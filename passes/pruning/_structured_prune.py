"""The StructuredPrune pass: remove whole channels, features and attention heads from the graph."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim._errors import SlimError
from onnxslim._inputs import random_inputs
from onnxslim._pass import PassContext, SlimPass, SlimPassResult
from onnxslim.passes.pruning._apply import (
    Plan,
    apply_plan,
    count_parameters,
    predicted_macs,
    select,
)
from onnxslim.passes.pruning._graph import PRODUCER, GraphView, macs_of_node, observe_shapes
from onnxslim.passes.pruning._groups import Group, apply_ignores, build_groups, make_segments
from onnxslim.passes.pruning._importance import CRITERIA, Criterion, score_groups

logger = logging.getLogger(__name__)

__all__ = [
    "StructuredPrune",
    "cpu_channel_block",
    "dependency_groups",
    "PruneAnalysis",
    "analyze",
    "plan_pruning",
]


@dataclasses.dataclass
class PruneAnalysis:
    view: GraphView
    groups: list[Group]

    @property
    def base_macs(self) -> int:
        return sum(macs_of_node(self.view, node) for node in self.view.graph)


def analyze(
    model: ir.Model,
    sizes: Mapping[str, Any] | None = None,
    *,
    prune_hidden: bool = False,
    round_to: int = 1,
    ignore: Iterable[str] = (),
) -> PruneAnalysis:
    """Observes concrete shapes (one ORT run on random inputs) and builds the dependency groups."""
    feeds = random_inputs(model, sizes)
    view = GraphView(model, observe_shapes(model, feeds), prune_hidden=prune_hidden)
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
    """A plan for the ratio, or for the smallest ratio whose MACs meet ``target_macs`` after rounding."""
    groups = analysis.groups

    def plan_for(r: float) -> Plan:
        return Plan(
            groups,
            select(
                groups,
                scores,
                r,
                global_ranking=global_ranking,
                max_ratio=max_ratio,
                min_kept=min_kept,
            ),
        )

    if target_macs is None:
        return plan_for(ratio or 0.0)
    return _greedy_for_macs(analysis, scores, target_macs * analysis.base_macs, max_ratio, min_kept)


def _greedy_for_macs(
    analysis: PruneAnalysis, scores, goal: float, max_ratio: float, min_kept: int
) -> Plan:
    """Removes whole rounding steps, least important first (scores normalized per group), until MACs <= goal."""
    segments = []  # (group index, units sorted by score, step, size)
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
    kept = [len(units) for _, units, _, _ in segments]

    def plan() -> Plan:
        removed: dict[int, list[np.ndarray]] = {}
        for (group_index, units, _, _), count in zip(segments, kept):
            if count < len(units):
                removed.setdefault(group_index, []).append(units[: len(units) - count])
        return Plan(
            analysis.groups, {g: np.sort(np.concatenate(parts)) for g, parts in removed.items()}
        )

    current = plan()
    while predicted_macs(analysis.view, current) > goal:
        best, best_score = None, None
        for index, (_, units, normalized, step) in enumerate(segments):
            size, count = len(units), kept[index]
            target = (count - 1) // step * step if count % step == 0 else count // step * step
            if target < max(min_kept, 1) or size - target > max_ratio * size + 1e-9:
                continue
            chunk_score = float(np.mean(normalized[size - count : size - target]))
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
    return current


def cpu_channel_block() -> int:
    """The channel block of ORT's NCHWc CPU convolution: 16 where AVX-512F exists, else 8."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if re.search(r"\bavx512f\b", flags) else 8


class StructuredPrune(SlimPass):
    """Removes whole channels/features/heads found by dependency groups on the ONNX graph.

    Args:
        ratio: Fraction of units removed per group (local) or overall (global ranking).
        target_macs: Instead of ``ratio``: keep this fraction of the MACs (met after rounding).
        criterion: "l1", "l2", "bn" (|gamma|), "activation" (needs data), "random", or a callable
            ``(group, view) -> scores`` (e.g. Taylor scores from a distillation student).
        global_ranking: Rank units across groups (scores normalized by each group's mean).
        max_ratio: At most this fraction of any group's units is removed.
        min_kept: Every group keeps at least this many units.
        round_to: Kept counts are multiples of this; None picks ORT's NCHWc block on this CPU
            (16 with AVX-512, else 8), the channel multiple its fast blocked convolution needs.
        ignore: Node names, regexes over node names, or op types whose groups are left alone.
        prune_hidden: Also prune axes that a LayerNormalization normalizes over (the residual stream).
        sizes: Sizes for symbolic input dims, used to observe shapes and count MACs.
        seed: Seed of the random criterion.
        calibration_batches: Batches read from the data reader for the activation criterion.
    """

    name = "prune"
    description = "Structured pruning of channels, features and attention heads on the graph."
    exact = False

    def __init__(
        self,
        ratio: float = 0.3,
        target_macs: float | None = None,
        criterion: str | Criterion = "l2",
        global_ranking: bool = False,
        max_ratio: float = 0.9,
        min_kept: int = 1,
        round_to: int | None = None,
        ignore: Sequence[str] = (),
        prune_hidden: bool = False,
        sizes: Mapping[str, Any] | None = None,
        seed: int = 0,
        calibration_batches: int = 8,
    ):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise SlimError(
                f"prune: ratio {ratio} is outside [0, 1); give the fraction of channels to remove, e.g. 0.3."
            )
        if target_macs is not None and not 0.0 < target_macs <= 1.0:
            raise SlimError(
                f"prune: target_macs {target_macs} is outside (0, 1]; give the fraction of MACs to keep, e.g. 0.5."
            )
        if isinstance(criterion, str) and criterion not in CRITERIA:
            raise SlimError(
                f"prune: unknown criterion '{criterion}'; use one of {', '.join(CRITERIA)}."
            )
        if round_to is None:
            round_to = cpu_channel_block()
        if round_to < 1:
            raise SlimError(f"prune: round_to {round_to} must be >= 1 (1 disables rounding).")
        self.ratio = ratio
        self.target_macs = target_macs
        self.criterion = criterion
        self.global_ranking = global_ranking
        self.max_ratio = max_ratio
        self.min_kept = min_kept
        self.round_to = round_to
        self.ignore = list(ignore)
        self.prune_hidden = prune_hidden
        self.sizes = dict(sizes) if sizes else None
        self.seed = seed
        self.calibration_batches = calibration_batches

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        sizes = self.sizes or dict(context.sizes or {}) or None
        analysis = analyze(
            model, sizes, prune_hidden=self.prune_hidden, round_to=self.round_to, ignore=self.ignore
        )
        batches = None
        if self.criterion == "activation":
            batches = _batches(context, model, sizes, self.calibration_batches)
        scores = score_groups(
            analysis.view, analysis.groups, self.criterion, seed=self.seed, batches=batches
        )
        plan = plan_pruning(
            analysis,
            scores,
            ratio=self.ratio,
            target_macs=self.target_macs,
            global_ranking=self.global_ranking,
            max_ratio=self.max_ratio,
            min_kept=self.min_kept,
        )
        summary = _summary_before(analysis, plan)
        parameters_before = count_parameters(model)
        base = analysis.base_macs
        after = predicted_macs(analysis.view, plan)
        if not plan.empty:
            apply_plan(analysis.view, plan)
        summary["parameters"] = {"before": parameters_before, "after": count_parameters(model)}
        summary["macs"] = {"before": base, "after": after, "ratio": after / base if base else 1.0}
        logger.info("pruned %d groups: MACs %d -> %d", len(plan.removed_units), base, after)
        return SlimPassResult(model, modified=not plan.empty, summary=summary)


def _batches(
    context: PassContext, model: ir.Model, sizes, limit: int
) -> list[dict[str, np.ndarray]]:
    batches = []
    if context.data is not None:
        for batch in context.data:
            batches.append(dict(batch))
            if len(batches) >= limit:
                break
    if not batches:
        raise SlimError(
            "prune: criterion 'activation' needs calibration data; pass --data (or use criterion 'l2')."
        )
    return batches


def _summary_before(analysis: PruneAnalysis, plan: Plan) -> dict[str, Any]:
    groups = analysis.groups
    kept_per_layer = {}
    for group in groups:
        removed = plan.removed_units.get(group.index)
        for slot in group.slots:
            if slot.role != PRODUCER:
                continue
            node = slot.value.uses()[0][0] if slot.value.uses() else None
            label = node.name if node is not None and node.name else slot.value.name
            kept = slot.size - (
                len(plan.removed(slot.value, slot.axis)) if removed is not None else 0
            )
            kept_per_layer[label] = [slot.size, kept]
    blocked = [
        {
            "group": g.index,
            "producers": [s.label for s in g.producers],
            "reasons": g.reasons[:5] or [g.ignored],
        }
        for g in groups
        if not g.prunable and (g.reasons or g.ignored)
    ]
    return {
        "groups": len(groups),
        "prunable_groups": sum(g.prunable for g in groups),
        "pruned_groups": len(plan.removed_units),
        "units_removed": int(sum(len(u) for u in plan.removed_units.values())),
        "channels_kept": kept_per_layer,
        "blocked": blocked,
    }
