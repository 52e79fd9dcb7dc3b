"""The StructuredPrune pass: remove whole channels, features and attention heads from the graph."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim import PassContext, SlimError, SlimPass, SlimPassResult
from onnxslim.passes.pruning._analysis import PruneAnalysis, analyze
from onnxslim.passes.pruning._apply import apply_plan
from onnxslim.passes.pruning._counts import count_parameters, predicted_macs
from onnxslim.passes.pruning._importance import CRITERIA, Criterion, score_groups
from onnxslim.passes.pruning._plan import Plan, plan_pruning
from onnxslim.passes.pruning._summary import describe_plan

logger = logging.getLogger(__name__)


# wave 2: onnxslim.runtime.cpu_features().conv_channel_block (the one /proc/cpuinfo parser)
def cpu_channel_block() -> int:
    """The channel block of ORT's NCHWc CPU convolution: 16 where AVX-512F exists, else 8."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if re.search(r"\bavx512f\b", flags) else 8


class StructuredPrune(SlimPass):
    """Removes whole channels/features/heads found by dependency groups on the ONNX graph.

    Args:
        ratio: Fraction of units REMOVED from each group (local) or overall (global ranking):
            0.3 removes 30 %. In [0, 1). Not used when ``target_macs`` is given.
        target_macs: Fraction of the MACs KEPT, instead of ``ratio``: 0.5 keeps half of them
            (met after rounding). In (0, 1].
        criterion: "l1", "l2", "bn" (|gamma|), "activation" (needs data), "random", or a callable
            ``(group, view) -> scores`` (e.g. Taylor scores from a distillation student).
        global_ranking: Rank units across groups (scores normalized by each group's mean).
        max_ratio: At most this fraction of any group's units is removed.
        min_kept: Every group keeps at least this many units.
        round_to: Kept counts are multiples of this; None picks ORT's NCHWc block on this CPU
            (16 with AVX-512, else 8), the channel multiple its fast blocked convolution needs.
        ignore: Node names, regexes over node names, or op types whose groups are left alone.
        prune_hidden: Also prune axes that a LayerNormalization normalizes over (the residual stream).
        sizes: Sizes for symbolic input dims, used to observe shapes and count MACs.
        seed: Seed of the random criterion.
        calibration_batches: Batches read from the data reader for the activation criterion.
    """

    name = "prune"
    description = "Structured pruning of channels, features and attention heads on the graph."
    exact = False

    def __init__(
        self,
        ratio: float = 0.3,
        target_macs: float | None = None,
        criterion: str | Criterion = "l2",
        global_ranking: bool = False,
        max_ratio: float = 0.9,
        min_kept: int = 1,
        round_to: int | None = None,
        ignore: Sequence[str] = (),
        prune_hidden: bool = False,
        sizes: Mapping[str, Any] | None = None,
        seed: int = 0,
        calibration_batches: int = 8,
    ):
        super().__init__()
        _check_options(ratio, target_macs, criterion)
        if round_to is None:
            round_to = cpu_channel_block()
        if round_to < 1:
            raise SlimError(f"prune: round_to {round_to} must be >= 1 (1 disables rounding).")
        self.ratio = ratio
        self.target_macs = target_macs
        self.criterion = criterion
        self.global_ranking = global_ranking
        self.max_ratio = max_ratio
        self.min_kept = min_kept
        self.round_to = round_to
        self.ignore = list(ignore)
        self.prune_hidden = prune_hidden
        self.sizes = dict(sizes) if sizes else None
        self.seed = seed
        self.calibration_batches = calibration_batches

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        sizes = self.sizes or dict(context.sizes or {}) or None
        analysis = analyze(  # view -> groups
            model, sizes, prune_hidden=self.prune_hidden, round_to=self.round_to, ignore=self.ignore
        )
        scores = self._importance(analysis, model, context, sizes)
        plan = self._select(analysis, scores)
        outcome = describe_plan(
            analysis,
            plan,
            macs_after=predicted_macs(analysis.view, plan),
            parameters_before=count_parameters(model),
        )
        if not plan.empty:
            apply_plan(analysis.view, plan)
        outcome.parameters_after = count_parameters(model)
        logger.info(
            "pruned %d groups: MACs %d -> %d",
            outcome.pruned_groups,
            outcome.macs_before,
            outcome.macs_after,
        )
        return SlimPassResult(model, modified=not plan.empty, summary=outcome.summary())

    def _importance(
        self,
        analysis: PruneAnalysis,
        model: ir.Model,
        context: PassContext,
        sizes: Mapping[str, Any] | None,
    ) -> dict[int, np.ndarray]:
        batches = None
        if self.criterion == "activation":
            batches = _batches(context, model, sizes, self.calibration_batches)
        return score_groups(
            analysis.view, analysis.groups, self.criterion, seed=self.seed, batches=batches
        )

    def _select(self, analysis: PruneAnalysis, scores: Mapping[int, np.ndarray]) -> Plan:
        return plan_pruning(
            analysis,
            scores,
            ratio=self.ratio,
            target_macs=self.target_macs,
            global_ranking=self.global_ranking,
            max_ratio=self.max_ratio,
            min_kept=self.min_kept,
        )


def _check_options(ratio: float, target_macs: float | None, criterion: str | Criterion) -> None:
    # `ratio` counts what goes, `target_macs` what stays: the messages say which is which.
    if not 0.0 <= ratio < 1.0:
        raise SlimError(
            f"prune: ratio {ratio} is outside [0, 1); ratio is the fraction of channels to remove "
            "(0.3 removes 30 %); to keep a fraction of the MACs use target_macs."
        )
    if target_macs is not None and not 0.0 < target_macs <= 1.0:
        raise SlimError(
            f"prune: target_macs {target_macs} is outside (0, 1]; target_macs is the fraction of "
            "MACs to keep (0.5 keeps half); to remove a fraction of channels use ratio."
        )
    if isinstance(criterion, str) and criterion not in CRITERIA:
        raise SlimError(
            f"prune: unknown criterion '{criterion}'; use one of {', '.join(CRITERIA)}."
        )


# wave 2: onnxslim.inputs (the one sample reader: open_samples) replaces this reader loop.
def _batches(
    context: PassContext, model: ir.Model, sizes: Mapping[str, Any] | None, limit: int
) -> list[dict[str, np.ndarray]]:
    batches = []
    if context.data is not None:
        for batch in context.data:
            batches.append(dict(batch))
            if len(batches) >= limit:
                break
    if not batches:
        raise SlimError(
            "prune: criterion 'activation' needs calibration data; pass --data (or use criterion 'l2')."
        )
    return batches
