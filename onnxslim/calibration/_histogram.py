"""A streaming histogram whose final grid depends on the values seen, not on their order.

Bin edges are multiples of a width ``w`` anchored at 0, ``w = base * 2**k``. ``base`` is the
first batch's ``max(span, |min|, |max|) * 2 / bins`` (the anchor: shared by every shard of a
sharded run), and ``k >= 0`` is the smallest that fits the running [min, max] in ``bins`` bins.
A tensor with no finite value in the first batch is "free": ``w`` is the smallest power of two
at least that magnitude formula over the running range. Either way the width, the window
(its first bin holds the minimum) and every count are functions of the set of values and the
anchor only, so histograms of disjoint shards merge exactly into the one-process histogram.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_BINS", "DeferredBinning", "StreamingHistogram", "bin_of", "magnitude_width"]

DEFAULT_BINS = 2048


def magnitude_width(low: float, high: float, bins: int) -> float:
    """Half a window's worth of headroom around the batch: the first batch's width."""
    return max(high - low, abs(high), abs(low), 1e-12) * 2.0 / bins


def _power_of_two_at_least(value: float) -> float:
    mantissa, exponent = math.frexp(value)
    return math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)


def bin_of(value: float, width: float) -> int:
    """The bin of one value, with the very float32 arithmetic ``update`` uses on arrays."""
    return int(np.floor(np.float32(value) * np.float32(1.0 / width)))


class StreamingHistogram:
    """Counts over ``bins`` bins of width ``width`` starting at ``offset * width``; grows exactly."""

    def __init__(self, bins: int = DEFAULT_BINS):
        if bins < 16 or bins % 2:
            raise ValueError(f"bins must be an even number >= 16, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.width = 0.0
        self.offset = 0  # index of the first bin: its left edge is offset * width
        self.base: float | None = None  # the anchor; None: not anchored yet (or free)
        self.free = False  # power-of-two widths from the running range (see the module doc)
        self.low = float("inf")  # running range of the values counted
        self.high = float("-inf")

    @property
    def edges(self) -> np.ndarray:
        return (self.offset + np.arange(self.bins + 1)) * self.width

    @property
    def pending(self) -> bool:
        return self.base is None and not self.free

    def anchor(self, base: float | None) -> None:
        """Fixes the width lattice before any value: ``base`` (> 0) or free (None / NaN)."""
        if base is not None and np.isfinite(base) and base > 0:
            self.base, self.free = float(base), False
        else:
            self.base, self.free = None, True

    def seal(self) -> None:
        """After the first batch: a histogram that saw nothing there becomes free."""
        if self.pending:
            self.anchor(None)

    def target_width(self, low: float, high: float, start: float = 0.0) -> float:
        """The smallest width of the lattice, at least ``start``, fitting [low, high]."""
        if self.free:
            width = max(start, _power_of_two_at_least(magnitude_width(low, high, self.bins)))
        else:
            assert self.base is not None
            width = max(start, self.base)
        # the doublings that leave the span over twice the window at once: the same width in
        # the end, and a huge outlier (3e38 after a batch of unit values) never overflows float32
        # at a width far too fine for it
        if high - low > 2.0 * width * self.bins:
            width = math.ldexp(
                width, math.floor(math.log2((high - low) / (2.0 * width * self.bins)))
            )
        while bin_of(high, width) - bin_of(low, width) >= self.bins:
            width *= 2.0
        return width

    def _fit(self, low: float, high: float) -> None:
        """Grows the width (merging bin pairs) and moves the window so [low, high] fits."""
        if self.pending:
            self.anchor(magnitude_width(low, high, self.bins))
        low, high = min(low, self.low), max(high, self.high)
        width = self.target_width(low, high, self.width)
        if self.width == 0.0:
            self.width, self.offset = width, bin_of(low, width)
        while self.width < width:
            self._double()
        first = bin_of(low, self.width)
        if first != self.offset:
            self._move(first)
        self.low, self.high = low, high

    def _move(self, new_offset: int) -> None:
        """Re-anchors the window at ``new_offset`` (same width); no counted bin falls out."""
        moved = np.zeros(self.bins, np.int64)
        shift = new_offset - self.offset
        source = np.arange(self.bins) + shift
        valid = (source >= 0) & (source < self.bins)
        moved[valid] = self.counts[source[valid]]
        self.counts = moved
        self.offset = new_offset

    def _double(self) -> None:
        """Doubles the bin width; bins 2m and 2m+1 (absolute indices) merge into bin m."""
        absolute = self.offset + np.arange(self.bins)
        merged_index = np.floor_divide(absolute, 2)
        new_offset = int(merged_index[0])
        merged = np.bincount(merged_index - new_offset, weights=self.counts, minlength=self.bins)
        self.counts = merged[: self.bins].astype(np.int64)
        self.offset = new_offset
        self.width *= 2.0

    def update(
        self, values: np.ndarray, low: float | None = None, high: float | None = None
    ) -> None:
        values = values.reshape(-1)
        if values.size == 0:
            return
        if low is None or high is None:
            low, high = float(values.min()), float(values.max())
        self._fit(low, high)
        # Absolute float32 bin positions, floored, then the window's offset in integers: the
        # bin of a value depends on the width only, never on where the window is.
        positions = np.multiply(values, np.float32(1.0 / self.width), dtype=np.float32)
        np.floor(positions, out=positions)
        index = positions.astype(np.int64)
        np.subtract(index, self.offset, out=index)
        np.clip(index, 0, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def coarsened(self, width: float, offset: int) -> np.ndarray:
        """These counts on the grid of ``width`` (this width times a power of two) at ``offset``."""
        out = np.zeros(self.bins, np.int64)
        used = np.flatnonzero(self.counts)
        if used.size == 0:
            return out
        mantissa, exponent = math.frexp(width / self.width)
        if mantissa != 0.5 or exponent < 1:
            raise ValueError(
                f"cannot merge a histogram of width {self.width!r} into width {width!r}: "
                "the shards were not anchored alike (StatisticsCollector.set_anchors)"
            )
        index = np.right_shift(self.offset + used, exponent - 1) - offset
        np.add.at(out, index, self.counts[used])
        return out

    def grid(self) -> tuple[float, float | None, bool]:
        """(width, base, free): what must agree between shards for an exact merge."""
        return self.width, self.base, self.free

    @classmethod
    def merged(cls, histograms: Sequence[StreamingHistogram]) -> StreamingHistogram:
        """The exact histogram of all values of ``histograms`` (disjoint shards, one anchor)."""
        seen = [h for h in histograms if h.width > 0.0]
        result = cls(histograms[0].bins)
        result.base, result.free = histograms[0].base, histograms[0].free
        if not seen:
            return result
        if len({(h.base, h.free) for h in seen}) > 1:
            raise ValueError("cannot merge histograms anchored differently (set_anchors)")
        result.base, result.free = seen[0].base, seen[0].free
        low, high = min(h.low for h in seen), max(h.high for h in seen)
        result.apply_merge(low, high, max(h.width for h in seen), seen)
        return result

    def apply_merge(
        self,
        low: float,
        high: float,
        widest: float,
        histograms: Sequence[StreamingHistogram],
    ) -> None:
        """Sets this histogram to the sum of ``histograms`` on the grid of [low, high]."""
        width = self.target_width(low, high, widest)
        offset = bin_of(low, width)
        counts = np.zeros(self.bins, np.int64)
        for histogram in histograms:
            counts += histogram.coarsened(width, offset)
        self.width, self.offset, self.counts = width, offset, counts
        self.low, self.high = low, high

    def nbytes(self) -> int:
        return self.counts.nbytes + 16


class DeferredBinning:
    """Samples of several batches binned in one update per histogram (a calibration stream
    bins hundreds of tensors per batch, most of them small: the per-call overhead dominated).
    Exact: the grid depends on the values and the anchor only, not on how they are grouped,
    and each batch's sample lies within its exact min/max (the clip of the unbatched path
    changes nothing). Use it after the first batch (it anchors the grids)."""

    SMALL = 1 << 14  # bigger samples are binned at once: there the work per element dominates
    TENSOR_ELEMENTS = 1 << 16  # a histogram's samples are binned once this many are waiting
    TOTAL_ELEMENTS = 1 << 23  # every tensor's, once this many wait in all (32 MiB)

    def __init__(self) -> None:
        # histogram -> (its waiting samples, their range, their element count)
        self.waiting: dict[StreamingHistogram, tuple[list[np.ndarray], float, float, int]] = {}
        self.total = 0

    def take(
        self, histogram: StreamingHistogram, low: float, high: float, sample: np.ndarray | None
    ) -> bool:
        """Keeps ``sample`` (of a batch whose exact range is [low, high]) for later; False: bin
        it now (none, an empty or a big one, a non-finite range)."""
        size = 0 if sample is None else int(np.size(sample))
        if not (0 < size < self.SMALL and np.isfinite(low) and np.isfinite(high)):
            return False
        samples, lowest, highest, count = self.waiting.get(histogram, ([], low, high, 0))
        samples.append(np.asarray(sample, np.float32).reshape(-1))
        self.waiting[histogram] = (samples, min(lowest, low), max(highest, high), count + size)
        self.total += size
        if count + size >= self.TENSOR_ELEMENTS:
            self._bin(histogram)
        if self.total >= self.TOTAL_ELEMENTS:
            self.flush()
        return True

    def _bin(self, histogram: StreamingHistogram) -> None:
        samples, low, high, count = self.waiting.pop(histogram)
        histogram.update(np.concatenate(samples), low, high)
        self.total -= count

    def flush(self) -> None:
        """Bins every waiting sample (before the histograms are read)."""
        for histogram in list(self.waiting):
            self._bin(histogram)
