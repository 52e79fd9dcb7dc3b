"""What the pipeline says about its result beyond the bounds: a model far from its input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxslim._pass import SlimPass
from onnxslim.fidelity import FidelityBounds

__all__ = ["FAR_FROM_INPUT_SQNR_DB", "far_from_input"]

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
