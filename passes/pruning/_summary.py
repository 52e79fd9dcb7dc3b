"""What a pruning run reports: the outcome of one run, turned into the pass summary at the end."""

from __future__ import annotations

import dataclasses
from typing import Any

from onnxslim.passes.pruning._analysis import PruneAnalysis
from onnxslim.passes.pruning._family import PRODUCER
from onnxslim.passes.pruning._plan import Plan


@dataclasses.dataclass
class PruneOutcome:
    """One run's facts; the plan's part is read before surgery (slot uses change after it)."""

    groups: int
    prunable_groups: int
    pruned_groups: int
    units_removed: int
    channels_kept: dict[str, list[int]]
    blocked: list[dict[str, Any]]
    macs_before: int
    macs_after: int
    parameters_before: int
    parameters_after: int | None = None

    def summary(self) -> dict[str, Any]:
        """The pass summary (key order as the report shows it)."""
        base, after = self.macs_before, self.macs_after
        return {
            "groups": self.groups,
            "prunable_groups": self.prunable_groups,
            "pruned_groups": self.pruned_groups,
            "units_removed": self.units_removed,
            "channels_kept": self.channels_kept,
            "blocked": self.blocked,
            "parameters": {"before": self.parameters_before, "after": self.parameters_after},
            "macs": {
                "before": base,
                "after": after,
                "kept_fraction": after / base if base else 1.0,
            },
        }


def describe_plan(
    analysis: PruneAnalysis, plan: Plan, *, macs_after: int, parameters_before: int
) -> PruneOutcome:
    """The outcome of ``plan`` as known before it is applied."""
    groups = analysis.groups
    blocked = [
        {
            "group": g.index,
            "producers": [s.label for s in g.producers],
            "reasons": g.reasons[:5] or [g.ignored],
        }
        for g in groups
        if not g.prunable and (g.reasons or g.ignored)
    ]
    return PruneOutcome(
        groups=len(groups),
        prunable_groups=sum(g.prunable for g in groups),
        pruned_groups=len(plan.removed_units),
        units_removed=int(sum(len(u) for u in plan.removed_units.values())),
        channels_kept=_channels_kept(analysis, plan),
        blocked=blocked,
        macs_before=analysis.base_macs,
        macs_after=macs_after,
        parameters_before=parameters_before,
    )


def _channels_kept(analysis: PruneAnalysis, plan: Plan) -> dict[str, list[int]]:
    """[size, kept] per producer, labelled by the node reading the weight (else the weight)."""
    kept_per_layer = {}
    for group in analysis.groups:
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
    return kept_per_layer
