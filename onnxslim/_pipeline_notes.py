"""What the pipeline says about its result beyond the bounds: a model far from its input, and
a lossy pass whose verification did not exercise what it changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from onnxslim._pass import SlimPass
from onnxslim.fidelity import FidelityBounds

__all__ = ["FAR_FROM_INPUT_SQNR_DB", "far_from_input", "unexercised_changes", "pruned_nothing"]

# Below this output SQNR (dB) the result is far from its input: noise at a tenth of the signal.
FAR_FROM_INPUT_SQNR_DB = 10.0
# SQNRs are compared capped here: float32 rounding (~140 dB) and exact (inf) are both lossless.
_CEILING_DB = 200.0


def far_from_input(
    stages: Sequence[Any], passes: Sequence[SlimPass], bounds: FidelityBounds
) -> str | None:
    """One line when the final model is far from its input and no bound was asked for: the
    lossy pass that lost most, and how to recover (distillation) or bound it. ``stages``: the
    report's records, the input first."""
    sqnrs: list[tuple[str, float]] = []
    for stage in stages[1:]:
        value = (stage.fidelity or {}).get("sqnr_db")
        if isinstance(value, float):
            sqnrs.append((stage.stage, value))
    if bounds.enabled or not sqnrs or not sqnrs[-1][1] < FAR_FROM_INPUT_SQNR_DB:
        return None
    drops, previous = [], _CEILING_DB  # the input itself: no noise
    for stage_name, value in sqnrs:
        drops.append((previous - min(value, _CEILING_DB), stage_name))
        previous = min(value, _CEILING_DB)
    culprit = max(drops)[1]
    if any(p.name in ("distill", "prune-distill") for p in passes):
        hint = "distill longer (--distill-epochs) or prune less"
    else:
        hint = "recover accuracy with --distill DATA, or bound it with --min-sqnr DB"
    return (
        f"the optimized model is far from its input (output SQNR {sqnrs[-1][1]:.1f} dB, "
        f"mostly lost in pass '{culprit}'); {hint}."
    )


def unexercised_changes(
    stages: Sequence[Any], passes: Sequence[SlimPass], sample_source: str
) -> list[str]:
    """One line per lossy pass that changed the model's weights or MACs while its outputs on
    the verification samples stayed bitwise identical (max|d| 0): the samples did not reach the
    changed nodes (an If branch they do not select, a sequence too short for the layers), so
    the check says nothing about them. ``stages``: the report's records, the input first."""
    lossy = {p.name for p in passes if not p.exact}
    lines = []
    for previous, stage in zip(stages, stages[1:]):
        if stage.stage not in lossy or (stage.fidelity or {}).get("max_abs_error") != 0:
            continue
        if (stage.parameters, stage.macs) == (previous.parameters, previous.macs):
            continue
        lines.append(
            f"pass '{stage.stage}' changed the model (parameters {previous.parameters} -> "
            f"{stage.parameters}) but left every output bitwise identical on {sample_source}: "
            "the check did not exercise the changed nodes; give inputs that do with --data."
        )
    return lines


def pruned_nothing(stages: Sequence[Any]) -> list[str]:
    """One sentence per pruning stage that removed nothing (``pruned_groups`` 0 in its summary):
    how many groups were blocked and by what (the commonest reasons, counted), and whether the
    prunable rest were too narrow for ``round_to`` at the ratio asked."""
    lines = []
    for stage in stages:
        summary = stage.summary if isinstance(stage.summary, Mapping) else {}
        if summary.get("pruned_groups") != 0:
            continue
        blocked = [g for g in summary.get("blocked") or [] if isinstance(g, Mapping)]
        prunable = summary.get("prunable_groups") or 0
        total = summary.get("groups")
        causes = Counter(_cause(g) for g in blocked)
        shown = ", ".join(f"{cause} ({n})" for cause, n in causes.most_common(2))
        more = f" and {len(causes) - 2} other reason(s)" if len(causes) > 2 else ""
        text = f"pass '{stage.stage}' pruned nothing: "
        if blocked:
            text += f"{len(blocked)} of {total if total is not None else '?'} group(s) blocked"
            text += f" by {shown}{more}"
        else:
            text += "no group was blocked"
        if prunable:
            text += (
                f"; the {prunable} prunable group(s) keep no smaller multiple of round_to at "
                "this ratio (raise the ratio or lower round_to)"
            )
        elif not blocked:
            text += " and none is prunable"
        lines.append(text + ".")
    return lines


def _cause(group: Mapping[str, Any]) -> str:
    """A blocked group's first reason without the node that gave it (``node (Op): why``),
    digits dropped so that "reads axis 2" and "reads axis 3" count together."""
    reasons = group.get("reasons") or ["unknown reason"]
    reason = str(reasons[0])
    why = reason.split("): ", 1)[1] if "): " in reason else reason
    if why.startswith("axis ") and " is not followed" in why:
        op = reason.rsplit("(", 1)[-1].split(")", 1)[0] if "(" in reason else "an op"
        return f"{op} not followed"
    return "".join(c for c in why if not c.isdigit()).replace("  ", " ").strip()
