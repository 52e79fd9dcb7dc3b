"""The latency guard: time the accurate candidates against the float model (interleaved) and
never return a slower one; int8 kernels slow per MAC go back to float in an extra candidate."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxslim.inputs import fixed_batch
from onnxslim.model import model_stats, node_macs, observed_shapes, shape_lookup
from onnxslim.passes.quantization._candidates import COMPUTE_OPS, Candidate, Rejected
from onnxslim.passes.quantization._prepare import Prepared
from onnxslim.progress import task
from onnxslim.runtime import (
    InterleavedTiming,
    create_session,
    interleaved_timing,
    node_kernel_seconds,
    session_options,
    session_run,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LatencyVerdict",
    "decided",
    "interleaved_latency",
    "rank_and_confirm",
    "settle_dynamic",
    "slow_nodes",
    "timing_feeds",
]


# Not onnxslim.inputs.benchmark_feeds: that drops a batch short of samples, this cycles them.
def timing_feeds(
    model: ir.Model,
    batches: Sequence[dict],
    batch: int,
    axes: Mapping[str, int | None] | None = None,
) -> dict:
    """Feeds of ``batch`` samples (the model's fixed batch wins), cycling the eval samples on
    each input's batch axis (``axes``: the reader's; 0 unless given, None: a constant input)."""
    feeds = {}
    for name in batches[0]:
        axis = (axes or {}).get(name, 0)
        if np.ndim(batches[0][name]) == 0 or axis is None:
            feeds[name] = batches[0][name]
            continue
        size = fixed_batch(model, name, axis) or batch
        pool = np.concatenate([b[name] for b in batches], axis=axis)
        feeds[name] = np.take(pool, np.arange(size) % pool.shape[axis], axis=axis)
    return feeds


def slow_nodes(
    seconds: dict[str, float], macs: dict[str, int], names: Sequence[str], factor: float = 3.0
) -> dict[str, str]:
    """Among ``names`` (at least 4 timed, with MACs), those whose kernel time per MAC is over
    ``factor`` x the median, each with the reason; the most time lost first (its time beyond
    what its MACs would take at the median cost)."""
    cost = {n: seconds[n] / macs[n] for n in names if n in seconds and macs.get(n)}
    if len(cost) < 4:
        return {}
    median = float(np.median(list(cost.values())))
    return {
        name: (
            f"latency guard: its int8 kernel takes {value / median:.1f}x the median time per "
            f"MAC ({seconds[name] * 1e6:.0f} us per run)"
        )
        for name, value in sorted(
            cost.items(), key=lambda kv: median * macs[kv[0]] - seconds[kv[0]]
        )
        if value > factor * median
    }


def slow_int8_nodes(
    candidate: Candidate,
    prepared: Prepared,
    feeds: Mapping,
    sizes: Mapping[str, int] | None,
    *,
    runs: int,
    threads: int | None,
) -> dict[str, str]:
    """Compute nodes of ``candidate`` whose int8 kernel takes over 3x the median time per MAC
    of its quantized compute nodes, measured with ORT's profiler; with reasons."""
    seconds = node_kernel_seconds(candidate.path, feeds, runs=max(5, runs), threads=threads)
    op_types = candidate.op_types or ()
    quantized = [
        node.name
        for node in prepared.proto.graph.node
        if node.op_type in COMPUTE_OPS
        and node.op_type in op_types
        and node.name not in candidate.excluded
    ]
    return slow_nodes(seconds, _node_macs(prepared.model, quantized, feeds, sizes), quantized)


def _node_macs(
    model: ir.Model, names: Sequence[str], feeds: Mapping, sizes: Mapping[str, int] | None
) -> dict[str, int]:
    """MACs of the nodes ``names`` at the timed feeds' shapes, from one float run exposing only
    their inputs and outputs (symbolic shape inference of the whole model costs seconds and
    sympy's memory); the inferred shapes where a node's MACs stay unknown."""
    wanted = set(names)
    nodes = [node for node in model.graph if node.name in wanted]
    # a Conv's MACs need its output's shape, the other compute ops' their inputs'
    values = [
        v.name
        for node in nodes
        for v in (node.outputs[:1] if node.op_type == "Conv" else node.inputs)
        if v is not None and v.name and not v.is_initializer()
    ]
    shape_of = shape_lookup(observed_shapes(model, dict(feeds), list(dict.fromkeys(values))))
    macs = {node.name or "": node_macs(node, shape_of) for node in nodes}
    if any(m is None for m in macs.values()):
        return model_stats(model, sizes).macs_per_node
    return {name: m for name, m in macs.items() if m}


def interleaved_latency(
    paths: Sequence[str | os.PathLike],
    feeds: Mapping[str, np.ndarray],
    *,
    runs: int = 10,
    warmup: int = 2,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
    quantile: float = 0.5,
    min_block_s: float = 0.005,
    until: Callable[[InterleavedTiming], bool] | None = None,
) -> list[float]:
    """Median (or another ``quantile``) seconds per run of each model, timed by
    :func:`onnxslim.runtime.interleaved_timing` (order rotated each round). A low quantile ranks
    models more stably on a busy machine: interference only ever adds time. Sub-millisecond
    models are timed in blocks of at least ``min_block_s``, the same count for every model.
    ``until``: a sequential test ending the ``runs`` rounds early (:func:`decided`)."""
    # Spinning off: with two sessions alive on few cores the idle one steals them.
    timed = [
        session_run(
            create_session(
                Path(p), providers, session_options(intra_op_threads=threads, allow_spinning=False)
            ),
            [feeds],
        )
        for p in paths
    ]
    timing = interleaved_timing(
        timed, rounds=runs, warmup=max(1, warmup), min_block_s=min_block_s, until=until
    )
    return timing.quantiles(quantile)


# The sequential test: after at least this many rounds (an even count: both orders of a pair
# equally often), timing stops once every round has put every model clearly on one side of
# the speed-up threshold (this factor above it, or below it).
SEQUENTIAL_MIN_ROUNDS = 4
SEQUENTIAL_MARGIN = 1.05
# Candidates within this fraction of the fastest one's speed-up count as equally fast (the
# ranking then prefers dynamic MatMuls, then more int8); slower ones rank by speed-up.
PREFERENCE_WINDOW = 0.9


def decided(min_speedup: float, reference: int) -> Callable[[InterleavedTiming], bool]:
    """An ``until`` test: True once, in each of the rounds so far (at least
    SEQUENTIAL_MIN_ROUNDS, an even count), each model's speed-up over model ``reference`` (timed
    in the same round) is over ``min_speedup`` x SEQUENTIAL_MARGIN, or in each under
    ``min_speedup`` / SEQUENTIAL_MARGIN: more rounds would not change which side it is on. A
    model on neither side yet is decided too when in each round it ran under PREFERENCE_WINDOW
    of the speed-up of one clearly over: it goes after that one whatever more rounds say (the
    demo net's dynamic candidate, at 1.0x, kept its 7 models timed for all 10 rounds)."""

    def until(timing: InterleavedTiming) -> bool:
        if timing.rounds < SEQUENTIAL_MIN_ROUNDS or timing.rounds % 2:
            return False
        speedups = {
            model: [1.0 / ratio for ratio in timing.ratios(model, reference)]
            for model in range(len(timing.seconds))
            if model != reference
        }
        fast = [m for m, s in speedups.items() if min(s) > min_speedup * SEQUENTIAL_MARGIN]
        for model, ours in speedups.items():
            if model in fast or max(ours) < min_speedup / SEQUENTIAL_MARGIN:
                continue
            if not any(
                all(a < PREFERENCE_WINDOW * b for a, b in zip(ours, speedups[other]))
                for other in fast
            ):
                return False
        return True

    return until


@dataclasses.dataclass(frozen=True)
class LatencyVerdict:
    """The candidates with their timings and rejections, the chosen one's index, the input's
    latency (ms) in the ranking round."""

    candidates: list[Candidate]
    chosen: int | None
    float_latency_ms: float


def rank_and_confirm(
    tried: Sequence[Candidate],
    input_path: Path,
    feeds: Mapping,
    *,
    runs: int,
    threads: int | None,
    min_speedup: float,
) -> LatencyVerdict:
    """Ranks the accurate candidates by lower-quartile latency (stable under interference), then
    re-measures them best first against the input (medians): the first confirmed faster than
    ``min_speedup`` x the input is chosen. Each timing runs ``runs`` rounds at most, fewer once
    every round has put every candidate clearly on one side of ``min_speedup`` (:func:`decided`);
    the verdict is still the one from the medians."""
    tried = list(tried)
    acceptable = [i for i, c in enumerate(tried) if c.rejected is None]
    with task("quantize: timing candidates", None, "round"):
        latencies = interleaved_latency(
            [input_path, *[tried[i].path for i in acceptable]],
            feeds,
            runs=runs,
            threads=threads,
            quantile=0.25,
            until=decided(min_speedup, reference=0),
        )
    float_latency = latencies[0]
    fast = []
    for index, latency in zip(acceptable, latencies[1:]):
        speedup = float_latency / latency
        tried[index] = tried[index].replace(latency_ms=latency * 1e3, speedup=speedup)
        if speedup > min_speedup:
            fast.append(index)
        else:
            reason = f"latency: {speedup:.2f}x of the input (needs > {min_speedup:g}x)"
            tried[index] = tried[index].replace(rejected=Rejected(reason))
    chosen = None
    ordered = settle_dynamic(tried, _best_first(tried, fast), feeds, runs=runs, threads=threads)
    with task("quantize: confirming speed-ups", len(ordered), "candidate") as bar:
        for index in ordered:
            # Sessions created in the other order than in the ranking round, so a bias of
            # creation order (thread pools, memory placement) cannot confirm itself.
            after, before = interleaved_latency(
                [tried[index].path, input_path],
                feeds,
                runs=runs,
                threads=threads,
                until=decided(min_speedup, reference=1),
            )
            bar.advance(candidate=tried[index].label, speedup=round(before / after, 2))
            entry = tried[index].replace(speedup_confirmed=before / after)
            if before / after > min_speedup:
                tried[index] = entry.replace(
                    speedup=min(entry.speedup or 0.0, before / after),
                    latency_ms=max(entry.latency_ms or 0.0, after * 1e3),
                )
                chosen = index
                break
            reason = (
                f"latency: {before / after:.2f}x of the input on re-measurement "
                f"(needs > {min_speedup:g}x)"
            )
            tried[index] = entry.replace(rejected=Rejected(reason))
    return LatencyVerdict(tried, chosen, float_latency * 1e3)


# How much slower than the fastest static candidate, timed head to head, dynamic MatMuls may
# be and still go first for their fidelity (the ranking round alone put a dynamic rec model
# 15 % slower within its 10 % window on a busy machine).
DYNAMIC_SLACK = 1.03


def settle_dynamic(
    tried: Sequence[Candidate],
    ordered: list[int],
    feeds: Mapping,
    *,
    runs: int,
    threads: int | None,
) -> list[int]:
    """``ordered`` with a dynamic candidate that leads it without being the fastest timed head
    to head against the fastest: it keeps the lead only within DYNAMIC_SLACK of it."""
    if not ordered or not tried[ordered[0]].dynamic:
        return ordered
    lead = ordered[0]
    fastest = max(ordered, key=lambda i: tried[i].speedup or 0.0)
    if fastest == lead:
        return ordered
    with task("quantize: dynamic vs static", None, "round"):
        dynamic, static = interleaved_latency(
            [tried[lead].path, tried[fastest].path], feeds, runs=runs, threads=threads
        )
    logger.info(
        "quantize: %s vs %s head to head: %.3f vs %.3f ms",
        tried[lead].label,
        tried[fastest].label,
        dynamic * 1e3,
        static * 1e3,
    )
    if dynamic <= DYNAMIC_SLACK * static:
        return ordered
    return [fastest, *(i for i in ordered if i != fastest)]


def _best_first(tried: Sequence[Candidate], fast: Sequence[int]) -> list[int]:
    best = max((tried[i].speedup or 0.0 for i in fast), default=0.0)
    position = {c.label: i for i, c in enumerate(tried)}

    def rank(index: int) -> float:
        # a latency variant (its base's slow int8 kernels in float, found by the profiler)
        # goes just ahead of its base when the ranking timed it at least as fast: the
        # per-node evidence says where the base loses time, and the round did not contradict it
        entry = tried[index]
        base = position.get(entry.variant_of or "")
        if base is not None and (entry.speedup or 0.0) >= (tried[base].speedup or 0.0):
            return base - 0.5
        return index

    def preference(index: int) -> tuple:
        # Within 10% of the fastest: dynamic MatMuls first (per-batch activation ranges, the
        # best fidelity), then the earlier static candidate (more int8: tensors flowing
        # between integer kernels beat a noisy few percent).
        speedup = tried[index].speedup or 0.0
        if speedup < PREFERENCE_WINDOW * best:
            return (True, -speedup)
        return (False, -1 if tried[index].dynamic else rank(index))

    return sorted(fast, key=preference)
