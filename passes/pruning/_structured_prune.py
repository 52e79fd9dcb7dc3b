"""The StructuredPrune pass: remove whole channels, features and attention heads from the graph."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim import NothingChangedError, PassContext, SlimError, SlimPass, SlimPassResult
from onnxslim.inputs import fixed_batch, open_samples
from onnxslim.model import parameter_count
from onnxslim.passes.pruning._analysis import PruneAnalysis, analyze
from onnxslim.passes.pruning._apply import apply_plan, release_mapped
from onnxslim.passes.pruning._counts import predicted_macs
from onnxslim.passes.pruning._criterion import AUTO, choose_criterion
from onnxslim.passes.pruning._hints import record_hints
from onnxslim.passes.pruning._importance import score_groups
from onnxslim.passes.pruning._options import PruneOptions, check_options, resolved
from onnxslim.passes.pruning._summary import describe_plan, nothing_pruned
from onnxslim.passes.pruning._targets import choose_plan
from onnxslim.runtime import cpu_features

logger = logging.getLogger(__name__)


def cpu_channel_block() -> int:
    """The channel block of ORT's NCHWc CPU convolution (the default ``round_to``)."""
    return cpu_features().conv_channel_block


class StructuredPrune(SlimPass):
    """Removes whole channels/features/heads found by dependency groups on the ONNX graph.

    Options are declared in :class:`PruneOptions` (``ratio`` = fraction REMOVED, ``target_macs``
    = fraction of MACs KEPT, give one). ``StructuredPrune(0.3)`` still means ``ratio=0.3``.
    """

    Options = PruneOptions
    settings: PruneOptions
    name = "prune"
    description = "Structured pruning of channels, features and attention heads on the graph."
    exact = False

    def __init__(self, options: PruneOptions | float | None = None, /, **values: Any) -> None:
        if isinstance(options, (int, float)) and not isinstance(options, bool):
            values = {"ratio": float(options), **values}  # the positional ratio of wave 1
            options = None
        super().__init__(options, **values)
        check_options(self.settings)
        self.settings = resolved(self.settings, cpu_channel_block)

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        sizes = self.sizes or dict(context.sizes or {}) or None
        analysis = analyze(  # view -> groups, shapes observed on the user's data when given
            model,
            sizes,
            prune_hidden=self.prune_hidden,
            round_to=self.round_to,
            ignore=self.ignore,
            feeds=_one_sample(model, context.sample_inputs[0])
            if context.data is not None and context.sample_inputs
            else None,
        )
        criterion, because = self.criterion, None
        if criterion == AUTO:
            criterion, because = choose_criterion(model, context.data)
            logger.info("prune: criterion %s (%s)", criterion, because)
        scores = self._importance(analysis, model, context, criterion)
        _unmap_external_weights(model)  # the scores read every weight: drop those pages
        plan, extra = choose_plan(self.settings, analysis, scores, model, context, sizes)
        if because is not None:
            extra = {**extra, "criterion": criterion, "criterion_because": because}
        outcome = describe_plan(
            analysis,
            plan,
            macs_after=predicted_macs(analysis.view, plan),
            parameters_before=parameter_count(model),
        )
        if not plan.empty:
            record_hints(model, analysis.groups, plan)  # for feature distillation
            apply_plan(analysis.view, plan)
        elif self.ratio != 0 or self.target_macs is not None or self.target_latency is not None:
            # a silent no-op reads as success: say why and what to change (ratio 0 asked for it)
            hint = nothing_pruned(analysis.groups, self.round_to or 1)
            if context.refuse_no_op:
                raise NothingChangedError(f"{hint}. Nothing was written", self.name)
            logger.warning("%s", hint)
            extra = {**extra, "warnings": [*extra.get("warnings", []), hint]}
        outcome.parameters_after = parameter_count(model)
        logger.info(
            "pruned %d groups: MACs %d -> %d",
            outcome.pruned_groups,
            outcome.macs_before,
            outcome.macs_after,
        )
        return SlimPassResult(
            model, modified=not plan.empty, summary={**outcome.summary(), **extra}
        )

    def _importance(
        self,
        analysis: PruneAnalysis,
        model: ir.Model,
        context: PassContext,
        criterion: Any,
    ) -> dict[int, np.ndarray]:
        batches = None
        if criterion in ("activation", "taylor"):
            batches = _batches(context, model, self.calibration_batches, criterion)
        return score_groups(
            analysis.view,
            analysis.groups,
            criterion,
            seed=self.seed,
            batches=batches,
            teacher=context.reference_path,
        )


def _one_sample(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first sample of a verification batch on inputs with a free batch dim: the MACs in
    the summary are then per sample, as everywhere else in the report."""
    free = {
        value.name
        for value in model.graph.inputs
        if value.shape is not None and len(value.shape) and not isinstance(value.shape[0], int)
    }
    return {k: v[:1] if k in free and np.ndim(v) else v for k, v in feeds.items()}


def _unmap_external_weights(model: ir.Model) -> None:
    for graph in model.graphs():
        for value in graph.initializers.values():
            release_mapped(value)


def _batches(
    context: PassContext, model: ir.Model, limit: int, criterion: str = "activation"
) -> list[dict[str, np.ndarray]]:
    """The first ``limit`` batches of the user's data, through the one data door."""
    batches: list[dict[str, np.ndarray]] = []
    if context.data is not None:
        # Taylor's per-sample scores gain from a larger batch (32); activation keeps its 1
        size = fixed_batch(model) or (32 if criterion == "taylor" else 1)
        reader = open_samples(context.data, model, batch_size=size)
        for batch in reader:
            batches.append(dict(batch))
            if len(batches) >= limit:
                break
    if not batches:
        raise SlimError(
            f"prune: criterion '{criterion}' needs calibration data; pass --data (or use criterion 'l2')."
        )
    return batches
