"""What a pruning run reports: the outcome of one run, turned into the pass summary at the end."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from onnxslim.passes.pruning._analysis import PruneAnalysis
from onnxslim.passes.pruning._family import PRODUCER
from onnxslim.passes.pruning._groups import Group
from onnxslim.passes.pruning._plan import Plan

__all__ = ["PruneOutcome", "describe_plan", "nothing_pruned"]

_CAUSES_SHOWN = 2  # the commonest causes named in the no-op sentence


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
            "cause": _cause(g),
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


def _cause(group: Group) -> str:
    """What blocks ``group``, without node names (counted across groups)."""
    if group.num_units <= 1:
        return "a single unit"
    if group.ignored is not None:
        return "an ignore pattern"
    return group.blocks[0].cause if group.blocks else "no cut at this ratio"


def nothing_pruned(groups: Sequence[Group], round_to: int) -> str:
    """The one sentence for a run that removed nothing: the groups blocked, counted by cause;
    those with one unit; and whether the prunable rest were too narrow for ``round_to``."""
    single = [g for g in groups if g.num_units <= 1]
    blocked = [g for g in groups if not g.prunable and g.num_units > 1]
    prunable = [g for g in groups if g.prunable]
    parts = []
    if blocked:
        causes = Counter(_cause(g) for g in blocked)
        shown = ", ".join(f"{c} ({n})" for c, n in causes.most_common(_CAUSES_SHOWN))
        more = len(causes) - _CAUSES_SHOWN
        parts.append(
            f"{len(blocked)} of {len(groups)} group(s) blocked by {shown}"
            + (f" and {more} other cause(s)" if more > 0 else "")
        )
    if single:
        parts.append(f"{len(single)} group(s) have a single unit (nothing to cut)")
    if prunable:
        widths = ", ".join(str(g.num_units - len(g.pinned)) for g in prunable[:4])
        more_widths = ", ..." if len(prunable) > 4 else ""
        parts.append(
            f"{len(prunable)} group(s) are prunable (width {widths}{more_widths}), but at this "
            f"ratio/target and round_to={round_to} none keeps a smaller multiple of round_to; "
            "ask for more (a larger ratio or a smaller target) or set round_to lower "
            "(1 keeps any width)"
        )
    if not groups:
        parts.append("the graph has no producer to prune (no Conv, Gemm, MatMul or Gather weight)")
    return "prune removed nothing: " + "; ".join(parts)
