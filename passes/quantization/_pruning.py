"""The accuracy guard's stages in an order that skips what cannot beat the current best.

1. The op-class candidates; the clipped ranges of the first failing one (the most int8: the
   one the placement searches start from) widened back to min/max.
2. While it still fails: the placement searches on it (float islands, then per tensor).
3. Once a static candidate is accurate (after the float islands, or after the op classes), the
   failing candidates not at least 10 % faster than it get neither the per-tensor search, nor
   widening, nor "keep sensitive layers in float": each keeps the candidate's graph (the same
   kernels: widening changes scales only) or puts more of it in float, so none of their
   variants runs faster than the candidate does, and one barely faster than the accurate one
   cannot give a winner worth the search. Interleaved timing rounds (the latency guard's
   settings) decide; without the latency guard nothing is skipped.
4. The rest as before: widening, then (had nothing passed at 2) the placement searches, then
   the sensitive layers in float.

With nothing skipped the candidates are the ones the stages made in their old order.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from onnxslim.passes.quantization._accuracy_guard import (
    first_candidates,
    keep_sensitive_layers_in_float,
    widen_clipped_ranges,
)
from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._latency_guard import (
    SEQUENTIAL_MARGIN,
    SEQUENTIAL_MIN_ROUNDS,
    interleaved_latency,
    timing_feeds,
)
from onnxslim.passes.quantization._node_search import with_sensitive_tensors
from onnxslim.passes.quantization._placement import with_float_islands
from onnxslim.runtime import InterleavedTiming

__all__ = ["beaten", "beaten_by", "guarded_candidates", "settled"]


def guarded_candidates(run: Any, options: Any) -> list[Candidate]:
    """The accuracy guard's candidates for QuantizeStatic's ``run`` (its _Run) and ``options``."""
    graph = run.prepared.proto.graph
    tried = first_candidates(run.op_sets, run.emitter, run.evaluator, run.excluded)
    clipped = run.calibration.clipped()
    lead = next((c for c in tried if not (c.evaluation.accurate or c.dynamic)), None)
    others = {c.label for c in tried if c is not lead}
    tried = widen_clipped_ranges(
        tried, clipped, run.emitter, run.evaluator, run.excluded, skip=others
    )
    rescued: set[str] = set()
    found: set[str] = set()
    pruned: dict[str, str] = {}
    searched = not _any_accurate(tried)
    if searched:  # the lead still fails: the placement searches start from it
        # per node, not per op class: the attention tensors that break the metric stay float
        tried, rescued = with_float_islands(tried, graph, run.emitter, run.evaluator, run.excluded)
        # an island rescued it: the failing ones it beats get no per-tensor search either
        pruned = _pruned(run, options, tried, rescued)
        # the tensors whose int8 breaks the task metric, found by releasing their QDQ pairs
        tried, found = with_sensitive_tensors(
            tried, graph, run.emitter, run.evaluator, run.excluded, rescued | set(pruned)
        )
    skip = rescued | found
    pruned.update(_pruned(run, options, tried, skip | set(pruned)))
    if pruned:
        run.summary["searches_skipped"] = pruned
    done = skip | set(pruned) | ({lead.label} if lead is not None else set())
    tried = widen_clipped_ranges(tried, clipped, run.emitter, run.evaluator, run.excluded, done)
    if not searched:
        tried, rescued = with_float_islands(
            tried, graph, run.emitter, run.evaluator, run.excluded, skip=set(pruned)
        )
        tried, found = with_sensitive_tensors(
            tried, graph, run.emitter, run.evaluator, run.excluded, rescued | set(pruned)
        )
        skip = rescued | found
    tried, sensitivity = keep_sensitive_layers_in_float(
        tried, run.prepared, run.emitter, run.evaluator, run.excluded, skip=skip | set(pruned)
    )
    run.summary["sensitivity_db"] = {
        n: round(v, 2) for n, v in sorted(sensitivity.items(), key=lambda kv: -kv[1])[:20]
    }
    return tried


def _pruned(
    run: Any, options: Any, tried: Sequence[Candidate], skip: Collection[str]
) -> dict[str, str]:
    """:func:`beaten` at the latency guard's settings, for the failing candidates not in
    ``skip``; empty without the latency guard or an accurate static candidate."""
    if not (_any_accurate(tried) and options.latency_guard):
        return {}
    feeds = timing_feeds(run.model, run.evaluator.batches, options.latency_batch, run.batch_axes)
    return beaten(tried, skip, feeds, runs=options.latency_runs, threads=options.threads)


def _any_accurate(tried: Sequence[Candidate]) -> bool:
    return any(c.evaluation.accurate and not c.dynamic for c in tried)


# A failing candidate is searched only when it ran this much faster than the fastest accurate
# one: a search only puts more of it in float, and within 10 % the latency guard's ranking
# already treats two candidates as equally fast (MiniLM: the four failing op-class candidates
# ran within 4 % of the accurate one, and searching them took 13-27 s of a 41-68 s run).
SEARCH_MARGIN = 1.1


def beaten(
    tried: Sequence[Candidate],
    skip: Collection[str],
    feeds: Mapping[str, np.ndarray],
    runs: int,
    threads: int | None,
) -> dict[str, str]:
    """Label -> why, for each failing static candidate (not in ``skip``) no faster than the
    fastest accurate static one (``SEARCH_MARGIN``); empty when no static candidate is accurate."""
    accurate = [c for c in tried if c.evaluation.accurate and not c.dynamic]
    failing = [
        c for c in tried if not (c.evaluation.accurate or c.op_types is None or c.label in skip)
    ]
    if not accurate or not failing:
        return {}
    models = [*accurate, *failing]
    seconds = interleaved_latency(
        [c.path for c in models], feeds, runs=runs, threads=threads, until=settled(len(accurate))
    )
    return beaten_by(
        dict(zip([c.label for c in accurate], seconds)),
        dict(zip([c.label for c in failing], seconds[len(accurate) :])),
    )


def settled(accurate: int) -> Callable[[InterleavedTiming], bool]:
    """An ``until`` test for :func:`beaten`'s timing (models ``0..accurate-1`` accurate, the
    rest failing): True once, in each of the rounds so far (at least SEQUENTIAL_MIN_ROUNDS, an
    even count), each failing model's time over the fastest accurate one's (by median so far)
    is clearly on one side of 1 / SEARCH_MARGIN (SEQUENTIAL_MARGIN beyond it)."""
    threshold = 1.0 / SEARCH_MARGIN

    def until(timing: InterleavedTiming) -> bool:
        if timing.rounds < SEQUENTIAL_MIN_ROUNDS or timing.rounds % 2:
            return False
        best = min(range(accurate), key=lambda i: statistics.median(timing.seconds[i]))
        for model in range(accurate, len(timing.seconds)):
            ratios = timing.ratios(model, best)
            above = min(ratios) > threshold * SEQUENTIAL_MARGIN
            if not (above or max(ratios) < threshold / SEQUENTIAL_MARGIN):
                return False
        return True

    return until


def beaten_by(accurate: Mapping[str, float], failing: Mapping[str, float]) -> dict[str, str]:
    """Label -> why, for each of the ``failing`` candidates' timings (seconds) not SEARCH_MARGIN
    faster than the fastest of the ``accurate`` ones'."""
    best = min(accurate, key=accurate.__getitem__)
    return {
        label: (
            f"not searched: {1e3 * took:.3g} ms, not {SEARCH_MARGIN - 1:.0%} faster than the "
            f"accurate '{best}' ({1e3 * accurate[best]:.3g} ms); widening its ranges or keeping "
            "its layers in float cannot make it faster"
        )
        for label, took in failing.items()
        if took * SEARCH_MARGIN >= accurate[best]
    }
