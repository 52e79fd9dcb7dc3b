"""The latency target: the MACs fraction whose pruned model runs in ``target_latency`` of the time.

Latency is not proportional to MACs (kernel blocks, memory-bound ops, fixed overheads), so the
pass measures: ``search_for_latency`` tries MACs fractions, each pruned on a copy (kept counts
rounded to the kernel's channel block, prune's ``round_to``) and timed against the input on the
execution provider with the interleaved timer, interpolating between the bracketing trials until
the measured ratio is within ``tolerance`` of the target.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.runtime import create_session, interleaved_timing, session_options, session_run

__all__ = ["LatencySearch", "latency_ratio", "search_for_latency"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LatencySearch:
    """The chosen MACs fraction and every trial as (MACs fraction, measured latency ratio)."""

    macs_fraction: float
    trials: list[tuple[float, float]]
    met: bool

    def summary(self) -> dict:
        return {
            "macs_fraction": self.macs_fraction,
            "met": self.met,
            "trials": [{"macs": m, "latency": r} for m, r in self.trials],
        }


def search_for_latency(
    measure: Callable[[float], float],
    target: float,
    *,
    tolerance: float = 0.03,
    trials: int = 5,
) -> LatencySearch:
    """The largest tried MACs fraction whose ``measure``d latency ratio is <= target + tolerance.

    Starts at MACs = target (latency proportional to MACs), then interpolates linearly between
    the closest trials below and above the target (the input itself is (1.0, 1.0)); stops once
    a trial lands within ``tolerance`` or after ``trials`` measurements.
    """
    below: tuple[float, float] = (0.0, 0.0)
    above: tuple[float, float] = (1.0, 1.0)
    tried: list[tuple[float, float]] = []
    fraction = target
    for _ in range(max(1, trials)):
        ratio = float(measure(fraction))
        tried.append((fraction, ratio))
        if ratio <= target + tolerance:
            below = max(below, (fraction, ratio))
        else:
            above = min(above, (fraction, ratio))
        if abs(ratio - target) <= tolerance or above[0] - below[0] < 0.01:
            break
        slope = (above[1] - below[1]) / (above[0] - below[0])
        guess = below[0] + (target - below[1]) / slope if slope > 0 else (below[0] + above[0]) / 2
        span = above[0] - below[0]
        fraction = float(np.clip(guess, below[0] + 0.1 * span, above[0] - 0.1 * span))
    meeting = [t for t in tried if t[1] <= target + tolerance]
    if meeting:
        return LatencySearch(max(meeting)[0], tried, True)
    lowest = min(tried)
    logger.warning(
        "prune: no trial met target_latency %.3f (tolerance %.3f); the fastest tried keeps "
        "%.3f of the MACs at %.3f of the latency",
        target,
        tolerance,
        lowest[0],
        lowest[1],
    )
    return LatencySearch(lowest[0], tried, False)


def latency_ratio(
    reference: ir.Model,
    candidate: ir.Model,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    providers: Sequence[str] | None = None,
    seconds: float = 2.0,
) -> float:
    """Median per-round candidate/reference seconds, timed interleaved on ``providers``."""
    options = session_options(allow_spinning=False)
    sessions = [create_session(m, providers, options) for m in (reference, candidate)]
    timing = interleaved_timing(
        [session_run(s, feeds) for s in sessions],
        time_budget_s=seconds,
        min_rounds=5,
        warmup=2,
        min_block_s=0.02,
    )
    return statistics.median(timing.ratios(1, 0))
