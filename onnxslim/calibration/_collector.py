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
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.model import ValueProbe

__all__ = [
    "StreamingHistogram",
    "TensorStatistics",
    "StatisticsCollector",
    "collect_statistics",
    "augment_with_statistics",
    "StatisticsCache",
    "model_fingerprint",
]

logger = logging.getLogger(__name__)

DEFAULT_BINS = 2048
# Histograms take at most this many evenly strided elements per tensor per batch (min/max
# see every element): with dozens of samples that is ample for the tails and bounds the cost.
HISTOGRAM_SAMPLE_CAP = 1 << 16


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
        stride = -(-values.size // max_histogram_elements)
        # Evenly strided elements of big tensors; the start moves so batches cover all phases.
        sample = values[self.batches % stride :: stride] if stride > 1 else values
        self.update_reduced(
            float(values.min()),
            float(values.max()),
            sample if histogram else None,
            values.size,
            averaging_constant,
            values if not histogram else None,
        )

    def update_reduced(
        self,
        low: float,
        high: float,
        sample: np.ndarray | None,
        elements: int,
        averaging_constant: float = 0.01,
        finite_source: np.ndarray | None = None,
    ) -> None:
        """One batch given as its exact min/max and (for the histogram) a strided sample."""
        if not (np.isfinite(low) and np.isfinite(high)):
            source = sample if sample is not None else finite_source
            if source is None:
                return
            source = np.asarray(source, np.float32).reshape(-1)
            source = source[np.isfinite(source)]
            if source.size == 0:
                return
            low, high = float(source.min()), float(source.max())
            if sample is not None:
                sample = source
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        if self.average_minimum is None or self.average_maximum is None:
            self.average_minimum, self.average_maximum = low, high
        else:
            self.average_minimum += averaging_constant * (low - self.average_minimum)
            self.average_maximum += averaging_constant * (high - self.average_maximum)
        self.batches += 1
        self.elements += int(elements)
        if sample is not None and np.size(sample):
            sample = np.asarray(sample, np.float32).reshape(-1)
            self.histogram.update(np.clip(sample, low, high), low, high)

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


PHASE_INPUT = "__onnxslim_calibration_phase"


def augment_with_statistics(
    model: ir.Model, names: Sequence[str], sample_cap: int | None = HISTOGRAM_SAMPLE_CAP
) -> tuple[ir.Model, dict[str, tuple[str, ...]]]:
    """A copy of ``model`` that reduces tensors ``names`` inside the graph.

    Per tensor it outputs ReduceMin, ReduceMax and Size, and (with ``sample_cap``) at most
    ``sample_cap`` evenly strided elements starting at ``phase mod stride`` (``phase`` is the
    int64[1] input ``PHASE_INPUT``). ORT then frees every full activation after its last use
    as in plain inference: peak memory is inference memory plus ``sample_cap`` floats per tensor.
    """
    augmented = model.clone()  # weights shared, not copied
    graph = augmented.graph
    values = {v.name: v for v in graph.inputs}
    for node in graph:
        for output in node.outputs:
            values[output.name] = output

    def constant(name: str, array: np.ndarray) -> ir.Value:
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        graph.register_initializer(value)
        return value

    pending: list[ir.Node] = []

    def add(op: str, inputs: list, name: str, **attributes) -> ir.Value:
        node = ir.node(op, inputs, attributes=attributes, num_outputs=1)
        node.outputs[0].name = name
        pending.append(node)
        return node.outputs[0]

    phase = None
    if sample_cap is not None and names:
        prefix = "__onnxslim_calibration"
        phase = ir.Value(
            name=PHASE_INPUT, type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([1])
        )
        graph.inputs.append(phase)
        flat_shape = constant(f"{prefix}_flat", np.array([-1], np.int64))
        one_shape = constant(f"{prefix}_one_shape", np.array([1], np.int64))
        cap = constant(f"{prefix}_cap", np.array([sample_cap], np.int64))
        one = constant(f"{prefix}_one", np.array([1], np.int64))
        end = constant(f"{prefix}_end", np.array([np.iinfo(np.int64).max], np.int64))
        axis = constant(f"{prefix}_axis", np.array([0], np.int64))
    outputs: dict[str, tuple[str, ...]] = {}
    for name in names:
        if name not in values:
            continue
        value = values[name]
        low = add("ReduceMin", [value], f"{name}__min", keepdims=0)
        high = add("ReduceMax", [value], f"{name}__max", keepdims=0)
        size = add("Size", [value], f"{name}__size")
        fetched = [low, high, size]
        if phase is not None:
            # stride = size // cap + 1 keeps fewer than cap elements and is never 0.
            size1 = add("Reshape", [size, one_shape], f"{name}__size1")
            stride = add("Add", [add("Div", [size1, cap], f"{name}__div"), one], f"{name}__stride")
            start = add("Mod", [phase, stride], f"{name}__start")
            flat = add("Reshape", [value, flat_shape], f"{name}__flat")
            fetched.append(add("Slice", [flat, start, end, axis, stride], f"{name}__sample"))
        # Right after the producer: ORT runs nodes in graph order, and reductions placed at the
        # end would keep every full activation alive until then.
        producer = value.producer()
        if producer is not None:
            graph.insert_after(producer, pending)
        elif len(graph):
            graph.insert_before(next(iter(graph)), pending)
        else:
            graph.extend(pending)
        pending.clear()
        for output in fetched:
            graph.outputs.append(output)
        outputs[name] = tuple(str(o.name) for o in fetched)
    return augmented, outputs


def collect_statistics(
    model: ir.Model,
    names: Sequence[str],
    reader: Iterable[Mapping[str, np.ndarray]],
    *,
    bins: int = DEFAULT_BINS,
    histograms: bool = True,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    sample_cap: int = HISTOGRAM_SAMPLE_CAP,
) -> StatisticsCollector:
    """Runs the model batch by batch and streams the statistics of tensors ``names``.

    The graph itself reduces every tensor to min/max/size and a strided sample of at most
    ``sample_cap`` elements, so no full activation leaves ORT and memory does not grow with
    the number of tensors, batches or samples.
    """
    import onnxruntime as ort

    from onnxslim.runtime import session_options

    augmented, fetched = augment_with_statistics(model, names, sample_cap if histograms else None)
    output_names = [o for group in fetched.values() for o in group]
    options = session_options(intra_op_threads=intra_op_threads, optimization_level="basic")
    # Ready nodes run lowest graph index first, so each reduction (placed right after its
    # producer) runs as soon as it can and the full activation is freed as in inference.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # Weights beside the copy: no serialized in-memory proto of them on the way to ORT.
    probe = ValueProbe(
        augmented, output_names, providers=providers, options=options, external_data=True
    )
    del augmented  # ORT keeps its own copy of the weights: no second one in Python
    collector = StatisticsCollector(names, bins=bins, histograms=histograms)
    phased = PHASE_INPUT in probe.input_names
    started = time.perf_counter()
    for batch_index, batch in enumerate(reader):
        feeds = dict(batch)
        if phased:
            feeds[PHASE_INPUT] = np.array([batch_index], np.int64)
        results = probe.run(feeds)
        for name, group in fetched.items():
            low, high, size = (float(results[o]) for o in group[:3])
            sample = results[group[3]] if histograms else None
            collector.tensors[name].update_reduced(
                low, high, sample, int(size), collector.averaging_constant
            )
        collector.samples += len(next(iter(batch.values())))
        del results
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
        arrays: dict[str, Any] = collector.to_arrays()
        np.savez(staging, **arrays)
        os.replace(staging, path)
        return path
