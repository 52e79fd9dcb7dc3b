"""From the options' target to a plan: ratio, target_macs or target_latency, shared among the
groups by one score ranking or by measured sensitivity (``allocation``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim import PassContext
from onnxslim.inputs import (
    DefaultSizeError,
    fixed_batch,
    open_samples,
    random_inputs,
    runnable_sizes,
)
from onnxslim.passes.pruning._analysis import PruneAnalysis, analyze
from onnxslim.passes.pruning._apply import apply_plan
from onnxslim.passes.pruning._counts import predicted_macs
from onnxslim.passes.pruning._latency import latency_ratio, search_for_latency
from onnxslim.passes.pruning._latency_model import NodeLatency
from onnxslim.passes.pruning._options import PruneOptions
from onnxslim.passes.pruning._plan import Plan, greedy_for_macs, plan_pruning
from onnxslim.passes.pruning._sensitivity import (
    Sensitivity,
    allocate_by_sensitivity,
    measure_sensitivity,
)

__all__ = ["choose_plan", "sample_feeds"]

logger = logging.getLogger(__name__)


def sample_feeds(
    model: ir.Model, context: PassContext, sizes: Mapping[str, Any] | None, limit: int
) -> list[dict[str, np.ndarray]]:
    """Up to ``limit`` batches: the user's data, else the pipeline's samples, else random inputs."""
    feeds: list[dict[str, np.ndarray]] = []
    if context.data is not None:
        for batch in open_samples(context.data, model, batch_size=fixed_batch(model) or 1):
            feeds.append(dict(batch))
            if len(feeds) >= limit:
                break
    feeds = feeds or [dict(s) for s in list(context.sample_inputs)[:limit]]
    if feeds:
        return feeds
    try:
        sizes = runnable_sizes(model, sizes)
    except DefaultSizeError:
        pass  # random_inputs names the dim it cannot size
    return [random_inputs(model, sizes, seed=seed) for seed in range(limit)]


def choose_plan(
    settings: PruneOptions,
    analysis: PruneAnalysis,
    scores: Mapping[int, np.ndarray],
    model: ir.Model,
    context: PassContext,
    sizes: Mapping[str, Any] | None,
) -> tuple[Plan, dict[str, Any]]:
    """The plan for the options' target, and what the summary adds (sensitivity, latency trials)."""
    extra: dict[str, Any] = {}

    def analyze_copy(copy: ir.Model) -> PruneAnalysis:
        return analyze(
            copy,
            sizes,
            prune_hidden=settings.prune_hidden,
            round_to=settings.round_to or 1,
            ignore=settings.ignore,
        )

    sensitivity: dict[int, Sensitivity] | None = None
    if settings.allocation == "sensitivity":
        batches = sample_feeds(model, context, sizes, settings.sensitivity_batches)
        sensitivity = measure_sensitivity(
            model,
            analysis,
            scores,
            batches,
            analyze_copy,
            step=settings.sensitivity_step,
            max_ratio=settings.max_ratio,
        )
        extra["sensitivity"] = {
            str(g): {"error": s.error, "removed": s.removed, "macs_saved": s.macs_saved}
            for g, s in sensitivity.items()
        }

    def plan_at(target: PruneAnalysis, fraction: float) -> Plan:
        goal = fraction * target.base_macs
        if sensitivity is not None:
            return allocate_by_sensitivity(
                target, scores, sensitivity, goal, settings.max_ratio, settings.min_kept
            )
        return greedy_for_macs(
            target, scores, goal, settings.max_ratio, settings.min_kept, per=per(target)
        )

    def per(target: PruneAnalysis) -> Callable[[Plan], float] | None:
        """What a cut's price is divided by: the MACs or the predicted latency it saves."""
        if settings.allocation == "score_per_mac":
            return lambda plan: predicted_macs(target.view, plan)
        if settings.allocation != "score_per_ms":
            return None
        if "latency" not in profiled:  # the input's profile; copies have the same node names
            feeds = sample_feeds(model, context, sizes, 1)[0]
            profiled["latency"] = NodeLatency.measure(analysis.view, feeds, context.providers)
            extra["profiled_ms"] = 1000 * profiled["latency"].base
        measured = NodeLatency(target.view, profiled["latency"].node_seconds)
        return measured.predicted

    profiled: dict[str, NodeLatency] = {}

    if settings.target_latency is not None:
        fraction = _latency_fraction(settings, model, context, sizes, analyze_copy, plan_at, extra)
        return plan_at(analysis, fraction), extra
    if settings.target_macs is not None:
        return plan_at(analysis, settings.target_macs), extra
    plan = plan_pruning(
        analysis,
        scores,
        ratio=settings.ratio,
        target_macs=None,
        global_ranking=settings.global_ranking,
        max_ratio=settings.max_ratio,
        min_kept=settings.min_kept,
    )
    if sensitivity is not None and analysis.base_macs:  # the ratio's MACs, shared by sensitivity
        plan = plan_at(analysis, predicted_macs(analysis.view, plan) / analysis.base_macs)
    return plan, extra


def _latency_fraction(
    settings: PruneOptions,
    model: ir.Model,
    context: PassContext,
    sizes: Mapping[str, Any] | None,
    analyze_copy: Callable[[ir.Model], PruneAnalysis],
    plan_at: Callable[[PruneAnalysis, float], Plan],
    extra: dict[str, Any],
) -> float:
    """The MACs fraction found by timing pruned copies against the input (see ``_latency``)."""
    feeds = sample_feeds(model, context, sizes, 1)

    def measure(fraction: float) -> float:
        copy = model.clone()
        copy_analysis = analyze_copy(copy)
        apply_plan(copy_analysis.view, plan_at(copy_analysis, fraction))
        ratio = latency_ratio(
            model, copy, feeds, providers=list(context.providers), seconds=settings.latency_seconds
        )
        logger.info("prune: %.3f of the MACs runs in %.3f of the time", fraction, ratio)
        return ratio

    assert settings.target_latency is not None
    search = search_for_latency(
        measure,
        settings.target_latency,
        tolerance=settings.latency_tolerance,
        trials=settings.latency_trials,
    )
    extra["latency"] = {"target": settings.target_latency, **search.summary()}
    return search.macs_fraction
