"""CI gates on a benchmark result: every candidate model is checked against the reference."""

from __future__ import annotations

import dataclasses
import math

from onnxslim._errors import SlimError
from onnxslim.benchmark._results import BenchmarkResult
from onnxslim.fidelity import FidelityBounds

__all__ = ["Gates", "check_gates", "GATE_EXIT_CODE"]

# Distinct from user errors (2) and verification failures (3): "the model works but misses a gate".
GATE_EXIT_CODE = 4


@dataclasses.dataclass(frozen=True)
class Gates:
    """Bounds every non-reference model must meet on every provider and batch size.

    ``fidelity``: the one bounds type (``min_sqnr_db``, ``min_top1_agreement``; no metric: the
    gates see the fidelity figures, not the outputs); latency and size are the benchmark's own.
    """

    fidelity: FidelityBounds = dataclasses.field(default_factory=FidelityBounds)
    max_latency_ratio: float | None = None  # median round-by-round latency ratio to the reference
    max_size_ratio: float | None = None  # file size (with external data) / reference's

    def __post_init__(self) -> None:
        if self.fidelity.metric is not None:
            raise TypeError("benchmark gates take no metric: they check the fidelity figures")
        if self.fidelity.max_abs_error is not None:
            raise TypeError("benchmark gates check SQNR and top-1 agreement, not max_abs_error")

    @property
    def any(self) -> bool:
        return self.fidelity.enabled or any(
            value is not None for value in (self.max_latency_ratio, self.max_size_ratio)
        )


def check_gates(result: BenchmarkResult, gates: Gates) -> list[str]:
    """One-line reasons for every gate a candidate fails; empty when all pass."""
    if not gates.any:
        return []
    candidates = [m for m in result.measurements if m.model != result.reference]
    if not candidates:
        raise SlimError(
            "gates compare models with the first (reference) model; give at least two models."
        )
    failures = []
    for m in candidates:
        where = f"{m.model} on {m.provider.removesuffix('ExecutionProvider')} batch {m.batch}"
        if gates.max_latency_ratio is not None and m.latency_ratio is not None:
            if m.latency_ratio.median > gates.max_latency_ratio:
                failures.append(
                    f"{where}: latency ratio {m.latency_ratio.median:.3f} > {gates.max_latency_ratio:g} "
                    f"(median of {m.latency_ratio.pairs} interleaved pairs vs {result.reference})"
                )
        min_sqnr_db, min_top1_agreement = (
            gates.fidelity.min_sqnr_db,
            gates.fidelity.min_top1_agreement,
        )
        if min_sqnr_db is not None:
            sqnr = m.fidelity.sqnr_db if m.fidelity else -math.inf
            if sqnr < min_sqnr_db:
                failures.append(
                    f"{where}: SQNR {sqnr:.1f} dB < {min_sqnr_db:g} dB vs {result.reference}"
                )
        if min_top1_agreement is not None:
            top1 = m.fidelity.top1_agreement if m.fidelity else None
            if top1 is None:
                failures.append(
                    f"{where}: top-1 agreement is undefined (no output looks like class scores [N, C])"
                )
            elif top1 < min_top1_agreement:
                failures.append(
                    f"{where}: top-1 agreement {top1:.4f} < {min_top1_agreement:g} vs {result.reference}"
                )
        if gates.max_size_ratio is not None and m.size_ratio is not None:
            if m.size_ratio > gates.max_size_ratio:
                failures.append(
                    f"{where}: file size ratio {m.size_ratio:.3f} > {gates.max_size_ratio:g} vs {result.reference}"
                )
    return failures
