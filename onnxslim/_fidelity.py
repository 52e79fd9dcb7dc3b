"""Output fidelity between a reference and a candidate model: abs errors, SQNR, top-1 agreement."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Fidelity", "compare_outputs", "looks_like_scores", "sqnr_db"]


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

    def to_dict(self) -> dict:
        def finite(x: float | None) -> float | str | None:
            if x is None:
                return None
            return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")

        return {
            "max_abs_error": finite(self.max_abs_error),
            "mean_abs_error": finite(self.mean_abs_error),
            "sqnr_db": finite(self.sqnr_db),
            "top1_agreement": finite(self.top1_agreement),
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
