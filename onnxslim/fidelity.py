"""Output fidelity between a reference and a candidate model: abs errors, SQNR, top-1 agreement."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxslim._json import json_float

__all__ = [
    "Fidelity",
    "FidelityBounds",
    "compare_outputs",
    "decisive_top1_agreement",
    "looks_like_scores",
    "sqnr_db",
]


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when identical."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = reference - np.asarray(candidate, dtype=np.float64)
    noise_power = float(np.sum(noise * noise))
    signal_power = float(np.sum(reference * reference))
    if noise_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal_power / noise_power))


def looks_like_scores(array: np.ndarray) -> bool:
    """Class scores [N, C] or per-step token scores [N, T, C], C > 1."""
    return np.issubdtype(array.dtype, np.floating) and array.ndim in (2, 3) and array.shape[-1] > 1


@dataclasses.dataclass
class Fidelity:
    """Agreement of a candidate's outputs with a reference's, over all samples and outputs."""

    max_abs_error: float
    mean_abs_error: float
    sqnr_db: float
    top1_agreement: float | None = None
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats as "inf", "-inf", "nan"."""
        return {
            "max_abs_error": json_float(self.max_abs_error),
            "mean_abs_error": json_float(self.mean_abs_error),
            "sqnr_db": json_float(self.sqnr_db),
            "top1_agreement": json_float(self.top1_agreement),
            "samples": self.samples,
        }

    def describe(self) -> str:
        text = f"max|Δ| {self.max_abs_error:.3g}, SQNR {self.sqnr_db:.1f} dB"
        if self.top1_agreement is not None:
            text += f", top-1 {100 * self.top1_agreement:.1f}%"
        return text


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]]
) -> Fidelity:
    """Compares per-sample output dicts (same names, same order of samples)."""
    max_abs, abs_sum, count = 0.0, 0.0, 0
    signal, noise = 0.0, 0.0
    agree, total = 0, 0
    for ref_outputs, cand_outputs in zip(reference, candidate, strict=True):
        for name, ref in ref_outputs.items():
            cand = cand_outputs[name]
            if ref.shape != cand.shape:
                raise ValueError(f"output '{name}' changed shape: {ref.shape} -> {cand.shape}")
            if not np.issubdtype(ref.dtype, np.number) or ref.size == 0:
                if not np.array_equal(ref, cand):
                    max_abs = float("inf")
                continue
            ref64 = ref.astype(np.float64)
            diff = ref64 - cand.astype(np.float64)
            with np.errstate(invalid="ignore"):
                abs_diff = np.abs(diff)
            if np.isnan(abs_diff).any():
                nan_mismatch = np.isnan(ref64) != np.isnan(cand.astype(np.float64))
                if nan_mismatch.any():
                    max_abs = float("inf")
                abs_diff = np.nan_to_num(abs_diff, nan=0.0)
                diff = np.nan_to_num(diff, nan=0.0)
                ref64 = np.nan_to_num(ref64, nan=0.0)
            max_abs = max(max_abs, float(abs_diff.max()))
            abs_sum += float(abs_diff.sum())
            count += abs_diff.size
            signal += float(np.sum(ref64 * ref64))
            noise += float(np.sum(diff * diff))
            if looks_like_scores(ref):
                agree += int(np.sum(ref.argmax(-1) == cand.argmax(-1)))
                total += int(np.prod(ref.shape[:-1]))
    if noise == 0.0:
        sqnr = float("inf")
    elif signal == 0.0:
        sqnr = float("-inf")
    else:
        sqnr = 10.0 * float(np.log10(signal / noise))
    return Fidelity(
        max_abs_error=max_abs,
        mean_abs_error=abs_sum / count if count else 0.0,
        sqnr_db=sqnr,
        top1_agreement=(agree / total) if total else None,
        samples=len(reference),
    )


def decisive_top1_agreement(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    margin: float = 0.01,
) -> tuple[float | None, int]:
    """Top-1 agreement over rows of class scores whose reference top-1 leads the runner-up by
    more than ``margin`` of the row's range; (None, 0) when there are none.

    A near-tie (e.g. an untrained net whose scores barely depend on the input) flips under any
    noise and says nothing about the candidate's damage; SQNR covers those outputs.
    """
    agree, total = 0, 0
    for ref_outputs, cand_outputs in zip(reference, candidate):
        for name, ref in ref_outputs.items():
            if not looks_like_scores(ref) or ref.shape[-1] < 2:
                continue
            rows = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
            cand = np.asarray(cand_outputs[name]).reshape(rows.shape)
            ordered = np.sort(rows, axis=-1)
            spread = ordered[:, -1] - ordered[:, 0]
            clear = (ordered[:, -1] - ordered[:, -2]) > margin * np.maximum(spread, 1e-30)
            agree += int(np.sum(rows[clear].argmax(-1) == cand[clear].argmax(-1)))
            total += int(clear.sum())
    return (agree / total if total else None), total


Outputs = Sequence[Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class FidelityBounds:
    """What a candidate's outputs must keep against the reference; None = not checked.

    The one bounds type: the pipeline's bounds after lossy passes (recipe ``[bounds]``), the
    quantization accuracy guard, and the fidelity half of the benchmark gates.

    Attributes:
        min_sqnr_db: Output SQNR floor (dB).
        min_top1_agreement: Top-1 agreement floor on class-score outputs, in [0, 1].
        max_abs_error: Largest absolute output difference allowed.
        metric: A user check ``(reference_outputs, candidate_outputs) -> bool`` over lists of
            per-sample output dicts; needs the outputs (see :meth:`violations`).
    """

    min_sqnr_db: float | None = None
    min_top1_agreement: float | None = None
    max_abs_error: float | None = None
    metric: Callable[[list, list], bool] | None = None

    @classmethod
    def off(cls) -> FidelityBounds:
        return cls()

    @property
    def enabled(self) -> bool:
        return any(
            value is not None
            for value in (
                self.min_sqnr_db,
                self.min_top1_agreement,
                self.max_abs_error,
                self.metric,
            )
        )

    def violations(
        self,
        fidelity: Fidelity,
        reference: Outputs | None = None,
        candidate: Outputs | None = None,
    ) -> list[str]:
        """One line per bound ``fidelity`` misses; empty when all hold.

        Without the outputs this is the pipeline's check (top-1 over every row). Given the
        ``reference`` and ``candidate`` outputs (the quantization guard's check), top-1 counts
        only rows with a decisive reference top-1 and the user ``metric`` runs.
        """
        if reference is None or candidate is None:
            return self._summary_violations(fidelity)
        problems = []
        if self.min_sqnr_db is not None and fidelity.sqnr_db < self.min_sqnr_db:
            problems.append(f"output SQNR {fidelity.sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB")
        if self.min_top1_agreement is not None and fidelity.top1_agreement is not None:
            agreement, decisive = decisive_top1_agreement(reference, candidate)
            if agreement is not None and agreement < self.min_top1_agreement:
                problems.append(
                    f"top-1 agreement {100 * agreement:.1f}% < {100 * self.min_top1_agreement:g}% "
                    f"(on {decisive} samples with a clear float top-1)"
                )
        if self.max_abs_error is not None and fidelity.max_abs_error > self.max_abs_error:
            problems.append(f"max abs error {fidelity.max_abs_error:.3g} > {self.max_abs_error}")
        if self.metric is not None and not self.metric(list(reference), list(candidate)):
            problems.append("the user metric failed")
        return problems

    def _summary_violations(self, fidelity: Fidelity) -> list[str]:
        if self.metric is not None:
            raise TypeError("a fidelity metric needs the outputs: violations(fidelity, ref, cand)")
        problems = []
        if self.min_sqnr_db is not None and fidelity.sqnr_db < self.min_sqnr_db:
            problems.append(f"SQNR {fidelity.sqnr_db:.1f} dB < {self.min_sqnr_db} dB")
        if (
            self.min_top1_agreement is not None
            and fidelity.top1_agreement is not None
            and fidelity.top1_agreement < self.min_top1_agreement
        ):
            problems.append(
                f"top-1 agreement {fidelity.top1_agreement:.3f} < {self.min_top1_agreement}"
            )
        if self.max_abs_error is not None and fidelity.max_abs_error > self.max_abs_error:
            problems.append(f"max abs error {fidelity.max_abs_error:.3g} > {self.max_abs_error}")
        return problems
