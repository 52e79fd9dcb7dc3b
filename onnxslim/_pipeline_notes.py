"""What the pipeline says about its result beyond the bounds: a model far from its input, and
a lossy pass whose verification did not exercise what it changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxslim._pass import SlimPass
from onnxslim.fidelity import FidelityBounds

__all__ = ["FAR_FROM_INPUT_SQNR_DB", "far_from_input", "unexercised_changes"]

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
    if any(p.name in ("distill", "prune_distill") for p in passes):
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
