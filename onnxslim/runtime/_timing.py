"""The one interleaved timer: every model once per round, the order rotated each round.

Two sessions timed one after the other see different machine states (turbo, caches, a
neighbour's load); timed in rounds, each round's ratio compares runs taken back to back.
Create the timed sessions with ``session_options(allow_spinning=False)``: a spinning idle pool
steals cores from the session being timed.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from onnxslim.progress import task

__all__ = ["InterleavedTiming", "interleaved_timing", "session_run", "rotation"]

# run(index): one inference on feed ``index`` (cycled); its return value is ignored.
Run = Callable[[int], object]

_MAX_REPEAT = 1000


def rotation(round_index: int, count: int) -> list[int]:
    """The run order of round ``round_index``: 0..count-1 rotated left by the round (A B, B A)."""
    shift = round_index % count
    return [(position + shift) % count for position in range(count)]


@dataclasses.dataclass
class InterleavedTiming:
    """Seconds per run of each model in every round, and the order each round ran in."""

    seconds: list[list[float]]  # [model][round]; a block of ``repeat`` runs divided by repeat
    order: list[list[int]]  # [round] -> model indices in the order they ran
    repeat: int = 1

    @property
    def rounds(self) -> int:
        return len(self.order)

    def ratios(self, candidate: int, reference: int = 0) -> list[float]:
        """Round-by-round candidate/reference seconds (each pair ran in the same round)."""
        return [c / r for c, r in zip(self.seconds[candidate], self.seconds[reference])]

    def quantiles(self, quantile: float = 0.5) -> list[float]:
        """Per model: the median (or another quantile) of its per-round seconds."""
        if quantile == 0.5:
            return [statistics.median(s) for s in self.seconds]
        return [float(np.quantile(s, quantile)) for s in self.seconds]


def session_run(session: ort.InferenceSession, feeds: Sequence[Mapping[str, object]]) -> Run:
    """A :data:`Run` for a plain session: all outputs for feed ``index % len(feeds)``."""
    prepared = [dict(feed) for feed in feeds]

    def run(index: int) -> object:
        return session.run(None, prepared[index % len(prepared)])

    return run


def _warm_up(runs: Sequence[Run], warmup: int) -> float:
    """Untimed-for-the-result runs of each model in turn; the fastest single run in seconds."""
    fastest = math.inf
    for run in runs:
        for index in range(warmup):
            started = time.perf_counter()
            run(index)
            fastest = min(fastest, time.perf_counter() - started)
    return fastest


def _done(
    count: int, rounds: int | None, budget: float | None, min_rounds: int, started: float
) -> bool:
    """Whether the timing is over: ``rounds`` run, or the budget spent after ``min_rounds``."""
    if rounds is not None:
        return count >= rounds
    return budget is not None and count >= min_rounds and time.perf_counter() - started >= budget


def _timed_round(runs: Sequence[Run], timing: InterleavedTiming, repeat: int) -> None:
    """One round: every model once (a block of ``repeat`` runs), in the rotated order."""
    round_index = len(timing.order)
    order = rotation(round_index, len(runs))
    for index in order:
        run = runs[index]
        block_started = time.perf_counter()
        for _ in range(repeat):
            run(round_index)
        timing.seconds[index].append((time.perf_counter() - block_started) / repeat)
    timing.order.append(order)


def interleaved_timing(
    runs: Sequence[Run],
    *,
    rounds: int | None = None,
    time_budget_s: float | None = None,
    min_rounds: int = 3,
    warmup: int = 0,
    min_block_s: float = 0.0,
    progress: str | None = None,
    until: Callable[[InterleavedTiming], bool] | None = None,
) -> InterleavedTiming:
    """Times ``runs`` in interleaved rounds, order rotated every round (see :func:`rotation`).

    Args:
        runs: One callable per model, running one inference on feed ``index`` (cycled).
        rounds: Timed rounds; with ``None``, rounds go on until ``time_budget_s`` is spent.
        time_budget_s: Wall-clock budget when ``rounds`` is None; at least ``min_rounds``.
        min_rounds: Rounds run whatever the budget.
        warmup: Runs of each model, one model after the other, before the first round.
        min_block_s: A model faster than this (fastest warm-up run) is timed in blocks of
            back-to-back runs lasting about this long, the same count for every model, so timer
            resolution does not decide between two sub-millisecond models (needs ``warmup`` >= 1).
        progress: A bar over the rounds with this label (``onnxslim.progress``: on a terminal
            only); with a time budget its total is estimated from the first round.
        until: Called after each round with the timing so far; True ends the timing early (a
            sequential test that has its answer).
    """
    if rounds is None and time_budget_s is None:
        raise ValueError("interleaved_timing: give rounds or time_budget_s")
    fastest = _warm_up(runs, warmup)
    repeat = max(1, min(_MAX_REPEAT, math.ceil(min_block_s / max(fastest, 1e-6))))
    timing = InterleavedTiming(seconds=[[] for _ in runs], order=[], repeat=repeat)
    started = time.perf_counter()
    with task(progress or "timing", rounds, "round", show=None if progress else False) as bar:
        while not _done(len(timing.order), rounds, time_budget_s, min_rounds, started):
            _timed_round(runs, timing, repeat)
            if rounds is None and time_budget_s is not None and len(timing.order) == 1:
                per_round = max(time.perf_counter() - started, 1e-9)
                bar.set_total(max(min_rounds, math.ceil(time_budget_s / per_round)))
            bar.advance(1)
            if until is not None and until(timing):
                break
    return timing
