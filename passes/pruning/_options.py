"""StructuredPrune's declared options (a light module: ``onnxslim optimize --help`` reads it)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from onnxslim import SlimError
from onnxslim.options import option

__all__ = ["ALLOCATIONS", "CRITERIA", "DEFAULT_RATIO", "PruneOptions", "check_options", "resolved"]

CRITERIA = ("auto", "l1", "l2", "bn", "activation", "taylor", "random")
ALLOCATIONS = ("score", "score_per_mac", "score_per_ms", "sensitivity")
# the ratio used when neither ratio nor target_macs is given
DEFAULT_RATIO = 0.3


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """Options of the ``prune`` pass.

    ``ratio`` counts what is REMOVED, ``target_macs`` what is KEPT; give one of them.
    """

    ratio: float | None = option(
        None,
        flag="--prune",
        metavar="RATIO",
        enables=True,
        help="fraction of units REMOVED from each group (0.3 removes 30 %), in [0, 1); "
        f"None: {DEFAULT_RATIO} unless target_macs is given (not both)",
    )
    target_macs: float | None = option(
        None,
        flag="--prune-macs",
        metavar="FRACTION",
        enables=True,
        help="fraction of the MACs KEPT (0.5 keeps half), in (0, 1]; replaces ratio",
    )
    target_latency: float | None = option(
        None,
        flag="--prune-latency",
        metavar="FRACTION",
        enables=True,
        help="fraction of the input's latency KEPT (0.6 runs in 60 % of the time), in (0, 1], measured on "
        "the pipeline's execution provider; replaces ratio and target_macs",
    )
    latency_tolerance: float = option(
        0.03, help="target_latency is met when the measured ratio is within this of it"
    )
    latency_trials: int = option(5, help="pruned candidates timed at most for target_latency")
    latency_seconds: float = option(2.0, help="timing budget of each target_latency trial (s)")
    allocation: str = option(
        "score",
        help="how a MACs or latency target is shared among groups: score (cheapest normalized "
        "importance first, one ranking), score_per_mac (cheapest normalized importance per MAC "
        "saved), score_per_ms (per millisecond saved, from one ORT profile of the nodes) or "
        "sensitivity (each group's measured output error when pruned by sensitivity_step, per "
        "MAC saved)",
    )
    sensitivity_step: float = option(
        0.25, help="fraction of a group's units removed to measure its sensitivity, in (0, 1)"
    )
    sensitivity_batches: int = option(
        4, help="batches of the data (else random inputs) the sensitivity is measured on"
    )
    criterion: str | Callable[..., Any] = option(
        "auto",
        help="importance: auto (taylor for attention models given data and torch, else l2: "
        "the measured best per family), l1, l2, bn (|gamma|), activation (needs data), taylor "
        "(|activation x gradient| of a label-free distillation loss; needs data and torch), "
        "random, or a callable (group, view) -> scores",
    )
    global_ranking: bool = option(
        False, help="rank units across groups (scores normalized by each group's mean)"
    )
    max_ratio: float = option(
        0.9, help="at most this fraction of any group's units is REMOVED, in [0, 1]"
    )
    min_kept: int = option(1, help="every group KEEPS at least this many units (>= 1)")
    round_to: int | None = option(
        None,
        flag="--prune-round-to",
        metavar="N",
        help="kept counts are multiples of this (1: no rounding); None: ORT's CPU conv "
        "channel block on this machine (16 with AVX-512, else 8)",
    )
    ignore: Sequence[str] = option(
        (), help="node names, 're:' regexes over node names or 'op:' op types left alone"
    )
    prune_hidden: bool = option(
        False, help="also prune axes a LayerNormalization normalizes over (the residual stream)"
    )
    sizes: Mapping[str, Any] | None = option(
        None, help="sizes of symbolic input dims, to observe shapes and count MACs"
    )
    seed: int = option(0, help="seed of the random criterion")
    calibration_batches: int = option(
        8, help="batches read from the data for the activation and taylor criteria"
    )


def check_options(options: PruneOptions) -> None:
    """Refuses values the pass cannot honour, naming the option and what it counts."""
    # `ratio` counts what goes, `target_macs` what stays: the messages say which is which.
    ratio, target_macs = options.ratio, options.target_macs
    if options.target_latency is not None and (ratio is not None or target_macs is not None):
        raise SlimError(
            f"prune: give target_latency (fraction of the latency kept, got "
            f"{options.target_latency}) alone, without ratio or target_macs."
        )
    if options.target_latency is not None and not 0.0 < options.target_latency <= 1.0:
        raise SlimError(
            f"prune: target_latency {options.target_latency} is outside (0, 1]; it is the "
            "fraction of the input's latency to keep (0.6 runs in 60 % of the time)."
        )
    if options.allocation not in ALLOCATIONS:
        raise SlimError(
            f"prune: unknown allocation '{options.allocation}'; use one of {', '.join(ALLOCATIONS)}."
        )
    if not 0.0 < options.sensitivity_step < 1.0:
        raise SlimError(
            f"prune: sensitivity_step {options.sensitivity_step} is outside (0, 1); it is the "
            "fraction of a group's units removed to measure how much the outputs move."
        )
    if ratio is not None and target_macs is not None:
        raise SlimError(
            f"prune: give either ratio (fraction of units removed, got {ratio}) or target_macs "
            f"(fraction of MACs kept, got {target_macs}), not both."
        )
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise SlimError(
            f"prune: ratio {ratio} is outside [0, 1); ratio is the fraction of channels to remove "
            "(0.3 removes 30 %); to keep a fraction of the MACs use target_macs."
        )
    if target_macs is not None and not 0.0 < target_macs <= 1.0:
        raise SlimError(
            f"prune: target_macs {target_macs} is outside (0, 1]; target_macs is the fraction of "
            "MACs to keep (0.5 keeps half); to remove a fraction of channels use ratio."
        )
    if not (math.isfinite(options.max_ratio) and 0.0 <= options.max_ratio <= 1.0):
        raise SlimError(
            f"prune: max_ratio {options.max_ratio} is outside [0, 1]; max_ratio is the largest "
            "fraction of any group's units that may be removed."
        )
    if options.min_kept < 1:
        raise SlimError(
            f"prune: min_kept {options.min_kept} must be >= 1 (every group keeps at least one unit)."
        )
    if options.round_to is not None and options.round_to < 1:
        raise SlimError(f"prune: round_to {options.round_to} must be >= 1 (1 disables rounding).")
    if isinstance(options.criterion, str) and options.criterion not in CRITERIA:
        raise SlimError(
            f"prune: unknown criterion '{options.criterion}'; use one of {', '.join(CRITERIA)}."
        )


def resolved(options: PruneOptions, channel_block: Callable[[], int]) -> PruneOptions:
    """The options as the pass runs them: the default ratio, ``round_to`` for this CPU."""
    return dataclasses.replace(
        options,
        ratio=DEFAULT_RATIO
        if options.ratio is None and options.target_macs is None and options.target_latency is None
        else options.ratio,
        round_to=channel_block() if options.round_to is None else options.round_to,
        ignore=list(options.ignore),
        sizes=dict(options.sizes) if options.sizes else None,
    )
