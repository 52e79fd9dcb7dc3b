"""Streaming activation statistics: min/max and a histogram per tensor, merged batch by batch.

The histogram's bin edges are multiples of a width ``w`` anchored at 0. When a batch falls
outside the current window, ``w`` doubles and pairs of bins merge exactly, so the retained
state per tensor is ``bins`` counts plus a few scalars whatever the number of samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

__all__ = [
    "StreamingHistogram",
    "TensorStatistics",
    "StatisticsCollector",
    "collect_statistics",
    "augment_with_outputs",
    "StatisticsCache",
    "model_fingerprint",
]

logger = logging.getLogger(__name__)

DEFAULT_BINS = 2048
# Histograms take at most this many evenly strided elements per tensor per batch (min/max
# see every element): with dozens of samples that is ample for the tails and bounds the cost.
HISTOGRAM_SAMPLE_CAP = 1 << 18


class StreamingHistogram:
    """Counts over ``bins`` bins of width ``width`` starting at ``offset * width``; grows exactly."""

    def __init__(self, bins: int = DEFAULT_BINS):
        if bins < 16 or bins % 2:
            raise ValueError(f"bins must be an even number >= 16, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.width = 0.0
        self.offset = 0  # index of the first bin: its left edge is offset * width

    @property
    def edges(self) -> np.ndarray:
        return (self.offset + np.arange(self.bins + 1)) * self.width

    def _fit(self, low: float, high: float) -> None:
        """Moves/grows the window (doubling the width, merging bin pairs) until [low, high] fits."""
        if self.width == 0.0:
            span = max(high - low, abs(high), abs(low), 1e-12)
            # Half the window initially, so the next batches rarely force a merge.
            self.width = span * 2.0 / self.bins
            self.offset = int(np.floor(low / self.width))
        while True:
            used = np.flatnonzero(self.counts)
            first = int(np.floor(low / self.width))
            last = int(np.floor(high / self.width))
            if used.size:
                first = min(first, self.offset + int(used[0]))
                last = max(last, self.offset + int(used[-1]))
            if last - first < self.bins:
                if first < self.offset or last >= self.offset + self.bins:
                    self._move(first)
                return
            self._double()

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
        # float32 bin positions relative to the window, then int indices: 12 bytes per element.
        positions = np.multiply(values, np.float32(1.0 / self.width), dtype=np.float32)
        np.subtract(positions, np.float32(self.offset), out=positions)
        np.floor(positions, out=positions)
        np.clip(positions, 0, self.bins - 1, out=positions)
        self.counts += np.bincount(positions.astype(np.intp), minlength=self.bins)

    def nbytes(self) -> int:
        return self.counts.nbytes + 16


@dataclasses.dataclass
class TensorStatistics:
    """What is kept per tensor: exact min/max, moving-average min/max and the histogram."""

    name: str
    minimum: float = float("inf")
    maximum: float = float("-inf")
    average_minimum: float | None = None
    average_maximum: float | None = None
    batches: int = 0
    elements: int = 0
    histogram: StreamingHistogram = dataclasses.field(default_factory=StreamingHistogram)

    def update(
        self,
        values: np.ndarray,
        averaging_constant: float = 0.01,
        histogram: bool = True,
        max_histogram_elements: int = HISTOGRAM_SAMPLE_CAP,
    ) -> None:
        values = np.asarray(values)
        if values.size == 0:
            return
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        values = values.reshape(-1)
        low, high = float(values.min()), float(values.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            values = values[np.isfinite(values)]
            if values.size == 0:
                return
            low, high = float(values.min()), float(values.max())
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        if self.average_minimum is None:
            self.average_minimum, self.average_maximum = low, high
        else:
            self.average_minimum += averaging_constant * (low - self.average_minimum)
            self.average_maximum += averaging_constant * (high - self.average_maximum)
        self.batches += 1
        self.elements += values.size
        if histogram:
            stride = -(-values.size // max_histogram_elements)
            # Evenly strided elements of big tensors; the start moves so batches cover all phases.
            sample = values[(self.batches - 1) % stride :: stride] if stride > 1 else values
            self.histogram.update(sample, low, high)

    def nbytes(self) -> int:
        return self.histogram.nbytes() + 6 * 8


class StatisticsCollector:
    """Per-tensor statistics for a fixed set of tensor names; ``update`` takes one batch's arrays."""

    def __init__(
        self,
        names: Iterable[str],
        bins: int = DEFAULT_BINS,
        averaging_constant: float = 0.01,
        histograms: bool = True,
    ):
        self.bins = bins
        self.histograms = histograms  # minmax alone needs none
        self.averaging_constant = averaging_constant
        self.tensors = {
            name: TensorStatistics(name, histogram=StreamingHistogram(bins)) for name in names
        }
        self.samples = 0

    def update(self, arrays: Mapping[str, np.ndarray], samples: int = 1) -> None:
        for name, values in arrays.items():
            if name in self.tensors:
                self.tensors[name].update(values, self.averaging_constant, self.histograms)
        self.samples += samples

    def retained_bytes(self) -> int:
        """Bytes of state the collector keeps between batches (flat in the sample count)."""
        return sum(t.nbytes() for t in self.tensors.values())

    # Serialisation for the on-disk cache.
    def to_arrays(self) -> dict[str, np.ndarray]:
        names = list(self.tensors)
        stats = self.tensors.values()
        return {
            "names": np.array(names, dtype=object).astype(str),
            "scalars": np.array(
                [
                    [
                        t.minimum,
                        t.maximum,
                        np.nan if t.average_minimum is None else t.average_minimum,
                        np.nan if t.average_maximum is None else t.average_maximum,
                        t.batches,
                        t.elements,
                        t.histogram.width,
                        t.histogram.offset,
                    ]
                    for t in stats
                ],
                dtype=np.float64,
            ).reshape(len(names), 8),
            "counts": np.stack([t.histogram.counts for t in stats])
            if names
            else np.zeros((0, self.bins), np.int64),
            "samples": np.array(self.samples),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> StatisticsCollector:
        names = [str(n) for n in arrays["names"]]
        counts = arrays["counts"]
        collector = cls(
            names, bins=counts.shape[1] if counts.ndim == 2 and counts.shape[1] else DEFAULT_BINS
        )
        for name, row, hist in zip(names, arrays["scalars"], counts):
            stats = collector.tensors[name]
            stats.minimum, stats.maximum = float(row[0]), float(row[1])
            stats.average_minimum = None if np.isnan(row[2]) else float(row[2])
            stats.average_maximum = None if np.isnan(row[3]) else float(row[3])
            stats.batches, stats.elements = int(row[4]), int(row[5])
            stats.histogram.width, stats.histogram.offset = float(row[6]), int(row[7])
            stats.histogram.counts = hist.astype(np.int64)
        collector.samples = int(arrays["samples"])
        return collector


def augment_with_outputs(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` whose tensors ``names`` are also graph outputs (for ORT to return)."""
    augmented = ir.from_proto(ir.to_proto(model))
    values = {}
    for node in augmented.graph:
        for output in node.outputs:
            values[output.name] = output
    for graph_input in augmented.graph.inputs:
        values[graph_input.name] = graph_input
    existing = {v.name for v in augmented.graph.outputs}
    for name in names:
        if name in existing or name not in values:
            continue
        value = values[name]
        if value.is_graph_input():
            # ORT forbids a graph input listed as an output: route it through an Identity.
            identity = ir.node("Identity", [value], num_outputs=1)
            identity.outputs[0].name = f"{name}__calibration"
            identity.outputs[0].dtype = value.dtype
            augmented.graph.append(identity)
            value = identity.outputs[0]
        if value.type is None:
            value.dtype = ir.DataType.FLOAT
        augmented.graph.outputs.append(value)
    return augmented


def augment_with_reductions(
    model: ir.Model, names: Sequence[str]
) -> tuple[ir.Model, dict[str, tuple[str, str]]]:
    """A copy of ``model`` with ReduceMin/ReduceMax outputs for tensors ``names``."""
    augmented = ir.from_proto(ir.to_proto(model))
    values = {v.name: v for v in augmented.graph.inputs}
    for node in augmented.graph:
        for output in node.outputs:
            values[output.name] = output
    reductions = {}
    for name in names:
        if name not in values:
            continue
        pair = []
        for op in ("ReduceMin", "ReduceMax"):
            node = ir.node(op, [values[name]], attributes={"keepdims": 0}, num_outputs=1)
            node.outputs[0].name = f"{name}__{op}"
            node.outputs[0].dtype = values[name].dtype or ir.DataType.FLOAT
            augmented.graph.append(node)
            augmented.graph.outputs.append(node.outputs[0])
            pair.append(node.outputs[0].name)
        reductions[name] = (pair[0], pair[1])
    return augmented, reductions


def collect_statistics(
    model: ir.Model,
    names: Sequence[str],
    reader: Iterable[Mapping[str, np.ndarray]],
    *,
    bins: int = DEFAULT_BINS,
    histograms: bool = True,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
) -> StatisticsCollector:
    """Runs the model batch by batch with ``names`` as extra outputs and streams their statistics."""
    from onnxslim._runtime import create_session, session_options

    if histograms:
        augmented = augment_with_outputs(model, names)
        output_names = [v.name for v in augmented.graph.outputs]
        route = {f"{n}__calibration": n for n in names}
    else:
        # Min/max alone: reduce inside the graph and fetch two scalars per tensor.
        augmented, reductions = augment_with_reductions(model, names)
        output_names = [o for pair in reductions.values() for o in pair]
    options = session_options(intra_op_threads=intra_op_threads, optimization_level="basic")
    session = create_session(augmented, providers, options)
    del augmented
    collector = StatisticsCollector(names, bins=bins, histograms=histograms)
    wanted = set(names)
    started = time.perf_counter()
    for batch in reader:
        results = session.run(output_names, dict(batch))
        arrays = {}
        if histograms:
            for name, array in zip(output_names, results):
                name = route.get(name, name)
                if name in wanted:
                    arrays[name] = array
        else:
            fetched = dict(zip(output_names, results))
            for name, (low, high) in reductions.items():
                arrays[name] = np.array([fetched[low], fetched[high]], np.float32)
        collector.update(arrays, samples=len(next(iter(batch.values()))))
        del results, arrays
    logger.info(
        "collected statistics of %d tensors over %d samples in %.1f s",
        len(names),
        collector.samples,
        time.perf_counter() - started,
    )
    return collector


def model_fingerprint(model: ir.Model) -> str:
    """A digest of the graph and its weights."""
    return hashlib.sha256(ir.to_proto(model).SerializeToString(deterministic=True)).hexdigest()


class StatisticsCache:
    """Statistics on disk, keyed by model, data and tensor-set fingerprints (``.npz`` per key)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        default = (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "onnxslim"
            / "calibration"
        )
        self.directory = Path(directory) if directory is not None else default

    def key(self, model_digest: str, data_digest: str, names: Sequence[str], bins: int) -> str:
        payload = json.dumps([model_digest, data_digest, sorted(names), bins])
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def load(self, key: str) -> StatisticsCollector | None:
        path = self.directory / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return StatisticsCollector.from_arrays({k: archive[k] for k in archive.files})
        except (OSError, ValueError, KeyError) as error:
            logger.warning("ignoring unreadable statistics cache %s (%s)", path, error)
            return None

    def store(self, key: str, collector: StatisticsCollector) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npz"
        staging = path.with_suffix(".tmp.npz")
        np.savez(staging, **collector.to_arrays())
        os.replace(staging, path)
        return path
