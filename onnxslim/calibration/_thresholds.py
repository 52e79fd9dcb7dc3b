"""Threshold (clipping range) search on streamed histograms: minmax, percentile, entropy, mse.

Every search is vectorized over its candidate thresholds: one array expression evaluates the
objective at all candidates at once, then the best is taken.
"""

from __future__ import annotations

import numpy as np

from onnxslim.calibration._collector import TensorStatistics

__all__ = ["METHODS", "compute_range", "entropy_threshold", "mse_range", "percentile_range"]

METHODS = ("minmax", "percentile", "entropy", "mse")


def _centres(stats: TensorStatistics) -> tuple[np.ndarray, np.ndarray]:
    edges = stats.histogram.edges
    return stats.histogram.counts.astype(np.float64), (edges[:-1] + edges[1:]) / 2.0


def percentile_range(stats: TensorStatistics, percentile: float = 99.999) -> tuple[float, float]:
    """Two-sided: (100 - p)/2 % of the mass clipped on each side, never beyond min/max."""
    counts, _ = _centres(stats)
    edges = stats.histogram.edges
    total = counts.sum()
    if total == 0:
        return stats.minimum, stats.maximum
    tail = (100.0 - percentile) / 200.0 * total
    cumulative = np.cumsum(counts)
    # Linear interpolation inside the bin where the cumulative count crosses the tail mass.
    upper_index = int(np.searchsorted(cumulative, total - tail, side="left"))
    lower_index = int(np.searchsorted(cumulative, tail, side="left"))

    def position(index: int, target: float) -> float:
        before = cumulative[index - 1] if index > 0 else 0.0
        fraction = (target - before) / counts[index] if counts[index] else 0.0
        return float(edges[index] + fraction * (edges[index + 1] - edges[index]))

    high = min(stats.maximum, position(upper_index, total - tail))
    low = max(stats.minimum, position(lower_index, tail))
    if stats.minimum >= 0.0:
        low = stats.minimum
    return low, max(high, low)


def _abs_histogram(stats: TensorStatistics) -> tuple[np.ndarray, float]:
    """Counts of |x| in bins of the histogram's width starting at 0."""
    histogram = stats.histogram
    absolute = histogram.offset + np.arange(histogram.bins)
    # Bin k covers [k w, (k+1) w); its mirror for negative k is bin -k-1.
    folded_index = np.where(absolute >= 0, absolute, -absolute - 1)
    size = int(folded_index.max()) + 1
    return np.bincount(folded_index, weights=histogram.counts, minlength=size), histogram.width


def entropy_threshold(
    counts: np.ndarray, width: float, levels: int = 128, stride: int | None = None
) -> float:
    """TensorRT-style KL threshold on a histogram of |x| (bins of ``width`` from 0).

    For each candidate i (bins kept), P = counts[:i] with the clipped tail added to bin i-1,
    Q = counts[:i] merged into ``levels`` quantization levels and spread back over its
    non-empty bins.
    The threshold is the right edge of the bin count minimizing KL(P || Q). All candidates are
    evaluated in one vectorized step, from prefix sums: the work is candidates x levels, not
    candidates x bins.
    """
    counts = np.asarray(counts, np.float64)
    last_used = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
    counts = counts[:last_used]
    bins = counts.size
    if bins <= levels:
        return bins * width
    # About 256 candidates bound the work at 256 x bins whatever the histogram size.
    stride = stride or max(1, (bins - levels) // 256)
    candidates = np.arange(levels, bins + 1, stride)
    if candidates[-1] != bins:
        candidates = np.append(candidates, bins)
    divergence = _kl_per_candidate(counts, candidates, levels)
    best = int(candidates[int(np.argmin(divergence))])
    return best * width


def _kl_per_candidate(counts: np.ndarray, candidates: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) for every candidate bin count i, without materializing P or Q.

    With T the total count, S_i the kept mass (bins < i), t_i the clipped tail and level l of
    candidate i covering bins [ceil(l i / L), ceil((l + 1) i / L)):
      T KL = sum_{j<i} p_j log p_j - T log T - sum_l M_l log(M_l / N_l) + S_i log S_i - tail term,
    where M_l / N_l are a level's mass / non-empty bins, and the tail term puts the clipped mass
    t_i on bin i-1 at that bin's Q (or at the 1e-12 floor when bin i-1 is empty).
    """
    total = counts.sum()
    prefix_mass = np.concatenate([[0.0], np.cumsum(counts)])
    prefix_support = np.concatenate([[0.0], np.cumsum(counts > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(counts > 0, counts * np.log(counts), 0.0)
    prefix_plogp = np.concatenate([[0.0], np.cumsum(plogp)])
    # Level boundaries per candidate: ceil(l * i / L) for l = 0..L.
    boundary = -((-np.arange(levels + 1)[None, :] * candidates[:, None]) // levels)
    mass = np.diff(prefix_mass[boundary], axis=1)
    support = np.diff(prefix_support[boundary], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        level_terms = np.where(mass > 0, mass * np.log(mass / support), 0.0)
    kept = prefix_mass[candidates]
    tail = total - kept
    last = counts[candidates - 1]
    # P's last bin holds counts[i-1] + tail.
    last_p = last + tail
    with np.errstate(divide="ignore", invalid="ignore"):
        p_entropy = (
            prefix_plogp[candidates - 1]
            + np.where(last_p > 0, last_p * np.log(last_p), 0.0)
            - total * np.log(total)
        )
        # Q's value at bin i-1: its level's mass spread over that level's non-empty bins.
        last_level = np.minimum(((candidates - 1) * levels) // candidates, levels - 1)
        rows = np.arange(candidates.size)
        last_q = np.log(mass[rows, last_level] / support[rows, last_level]) - np.log(kept)
        log_q_last = np.where(last > 0, last_q, np.log(1e-12))
        cross = (
            level_terms.sum(axis=1)
            - kept * np.log(kept)
            + np.where(tail > 0, tail * log_q_last, 0.0)
        )
    return (p_entropy - cross) / total


def entropy_range(stats: TensorStatistics, levels: int | None = None) -> tuple[float, float]:
    counts, width = _abs_histogram(stats)
    if counts.size > 1 and counts[0] > 4 * counts[1]:
        # A spike of exact zeros (ReLU outputs): zero is exact in any range, so it says nothing
        # about the threshold, yet in KL it pulls the threshold down to resolve bin 0.
        counts = counts.copy()
        counts[0] = counts[1]
    one_sided = stats.minimum >= 0.0
    # A one-sided (e.g. post-ReLU) tensor spends all 255 uint8 levels on [0, t].
    threshold = entropy_threshold(counts, width, levels or (255 if one_sided else 128))
    if one_sided:
        return stats.minimum, min(stats.maximum, max(threshold, stats.minimum))
    return max(stats.minimum, -threshold), min(stats.maximum, threshold)


def mse_range(
    stats: TensorStatistics, levels: int = 255, candidates: int = 256
) -> tuple[float, float]:
    """The clipping range minimizing the expected squared error of quantize-dequantize.

    Candidates clip |x| at t (range ``(max(min, -t), min(max, t))``); the error of a bin centre
    x is its clipping error outside the range, ``step**2 / 12`` rounding noise inside.
    """
    counts, centres = _centres(stats)
    if counts.sum() == 0:
        return stats.minimum, stats.maximum
    magnitude = max(abs(stats.minimum), abs(stats.maximum))
    thresholds = np.linspace(magnitude / candidates, magnitude, candidates)
    low = np.maximum(stats.minimum, -thresholds)[:, None]
    high = np.minimum(stats.maximum, thresholds)[:, None]
    step = (high - low) / levels
    clipped = np.clip(centres[None, :], low, high)
    error = (centres[None, :] - clipped) ** 2 + np.where(
        (centres[None, :] >= low) & (centres[None, :] <= high), step**2 / 12.0, 0.0
    )
    total = error @ counts
    best = int(np.argmin(total))
    return float(low[best, 0]), float(high[best, 0])


def compute_range(
    stats: TensorStatistics,
    method: str = "minmax",
    *,
    percentile: float = 99.999,
    moving_average: bool = False,
    levels: int = 255,
) -> tuple[float, float]:
    """The (low, high) range of one tensor under ``method``; always contains 0 for ORT."""
    if method == "minmax":
        if (
            moving_average
            and stats.average_minimum is not None
            and stats.average_maximum is not None
        ):
            low, high = stats.average_minimum, stats.average_maximum
        else:
            low, high = stats.minimum, stats.maximum
    elif method == "percentile":
        low, high = percentile_range(stats, percentile)
    elif method == "entropy":
        low, high = entropy_range(stats)
    elif method == "mse":
        low, high = mse_range(stats, levels=levels)
    else:
        raise ValueError(
            f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}"
        )
    if not np.isfinite(low) or not np.isfinite(high):
        low, high = 0.0, 0.0
    return float(low), float(high)
