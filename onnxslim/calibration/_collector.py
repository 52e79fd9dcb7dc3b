"""Streaming activation statistics: min/max and a histogram per tensor, merged batch by batch.

The histogram (``_histogram``) keeps ``bins`` counts plus a few scalars per tensor whatever the
number of samples, on a grid that depends on the values seen, not their order: collectors of
disjoint shards merge exactly (:func:`merge_collectors`, ``_distributed`` across ranks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.calibration._distributed import (
    Shard,
    all_reduce_statistics,
    check_same_tensors,
    share_anchors,
)
from onnxslim.calibration._histogram import DEFAULT_BINS, DeferredBinning, StreamingHistogram
from onnxslim.inputs import samples_in
from onnxslim.model import ValueProbe
from onnxslim.progress import task

__all__ = [
    "StreamingHistogram",
    "TensorStatistics",
    "StatisticsCollector",
    "collect_statistics",
    "augment_with_statistics",
    "merge_collectors",
]

logger = logging.getLogger(__name__)

# Histograms take at most this many evenly strided elements per tensor per batch (min/max
# see every element): with dozens of samples that is ample for the tails and bounds the cost.
HISTOGRAM_SAMPLE_CAP = 1 << 16


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
        phase: int | None = None,
    ) -> None:
        """One batch; ``phase`` (default: batches so far) picks the strided sample's start."""
        values = np.asarray(values)
        if values.size == 0:
            return
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        values = values.reshape(-1)
        stride = -(-values.size // max_histogram_elements)
        # Evenly strided elements of big tensors; the start moves so batches cover all phases.
        start = (self.batches if phase is None else phase) % stride
        sample = values[start::stride] if stride > 1 else values
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
        self.batches_seen = 0  # batches given to this collector (a shard's own)

    def update(
        self, arrays: Mapping[str, np.ndarray], samples: int = 1, batch_index: int | None = None
    ) -> None:
        """One batch; ``batch_index`` is its index in the whole data (a shard's batches skip)."""
        index = self.batches_seen if batch_index is None else batch_index
        for name, values in arrays.items():
            if name in self.tensors:
                self.tensors[name].update(
                    values,
                    self.averaging_constant,
                    self.histograms,
                    phase=index,
                )
        self.samples += samples
        self.batches_seen += 1
        if index == 0:
            self.seal()

    # Anchors: the first batch of the whole data fixes each histogram's width lattice.
    def anchors(self) -> np.ndarray:
        """Per tensor (in order) the histogram's anchor, NaN where none (yet)."""
        return np.array(
            [
                np.nan if t.histogram.base is None else t.histogram.base
                for t in self.tensors.values()
            ],
            dtype=np.float64,
        )

    def set_anchors(self, anchors: np.ndarray) -> None:
        """A shard that does not hold the first batch takes the anchors of the one that does."""
        for stats, anchor in zip(self.tensors.values(), anchors):
            stats.histogram.anchor(float(anchor))

    def seal(self) -> None:
        """After the first batch of the whole data: histograms with no anchor become free."""
        for stats in self.tensors.values():
            stats.histogram.seal()

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
            histogram = stats.histogram
            histogram.width, histogram.offset = float(row[6]), int(row[7])
            histogram.counts = hist.astype(np.int64)
            if histogram.width > 0:  # a lattice to go on with: the stored width
                histogram.base, histogram.low, histogram.high = (
                    histogram.width,
                    stats.minimum,
                    stats.maximum,
                )
        collector.samples = int(arrays["samples"])
        return collector


def merge_collectors(collectors: Sequence[StatisticsCollector]) -> StatisticsCollector:
    """The statistics of disjoint shards of the data, exactly those of one collector on all
    of it when the shards were anchored alike (``set_anchors``) and fed global batch indices.
    Moving-average min/max is order-dependent: the merge has none."""
    first = collectors[0]
    names = list(first.tensors)
    if any(list(c.tensors) != names or c.bins != first.bins for c in collectors):
        raise ValueError("merge_collectors needs collectors of the same tensors and bins")
    merged = StatisticsCollector(
        names, first.bins, first.averaging_constant, histograms=first.histograms
    )
    for name, stats in merged.tensors.items():
        parts = [c.tensors[name] for c in collectors]
        stats.minimum = min(p.minimum for p in parts)
        stats.maximum = max(p.maximum for p in parts)
        stats.batches = sum(p.batches for p in parts)
        stats.elements = sum(p.elements for p in parts)
        stats.histogram = StreamingHistogram.merged([p.histogram for p in parts])
    merged.samples = sum(c.samples for c in collectors)
    merged.batches_seen = sum(c.batches_seen for c in collectors)
    return merged


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
    shard: Shard | None = None,
    total_samples: int | None = None,
) -> StatisticsCollector:
    """Runs the model batch by batch and streams the statistics of tensors ``names``.

    The graph itself reduces every tensor to min/max/size and a strided sample of at most
    ``sample_cap`` elements, so no full activation leaves ORT and memory does not grow with
    the number of tensors, batches or samples. With a sharded ``shard`` (see
    :func:`join_process_group`) this rank runs batches ``i % world == rank`` only and returns
    the statistics of all ranks' batches, bit for bit those of one process on all of them.
    """
    import onnxruntime as ort

    from onnxslim.runtime import session_options

    shard = shard or Shard()
    if shard.sharded:
        check_same_tensors(list(names), shard)
        intra_op_threads = intra_op_threads or shard.threads()  # no oversubscribed cores
    augmented, fetched = augment_with_statistics(model, names, sample_cap if histograms else None)
    output_names = [o for group in fetched.values() for o in group]
    # No spinning: between runs this thread bins the samples, and pool threads spinning on its
    # core would take that time (the threads and so ORT's numerics are unchanged).
    options = session_options(
        intra_op_threads=intra_op_threads, optimization_level="basic", allow_spinning=False
    )
    # Ready nodes run lowest graph index first, so each reduction (placed right after its
    # producer) runs as soon as it can and the full activation is freed as in inference.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # Weights beside the copy: no serialized in-memory proto of them on the way to ORT.
    probe = ValueProbe(
        augmented, output_names, providers=providers, options=options, external_data=True
    )
    del augmented  # ORT keeps its own copy of the weights: no second one in Python
    collector = StatisticsCollector(names, bins=bins, histograms=histograms)
    started, cpu = time.perf_counter(), time.process_time()
    _stream(probe, fetched, reader, collector, shard, histograms, total_samples)
    logger.info(
        "rank %d of %d: statistics of %d tensors over %d samples in %.3f s (%.3f s CPU)",
        shard.rank,
        shard.world,
        len(names),
        collector.samples,
        time.perf_counter() - started,
        time.process_time() - cpu,
    )
    if shard.sharded:
        started = time.perf_counter()
        all_reduce_statistics(collector, shard)
        logger.info("merged %d ranks in %.3f s", shard.world, time.perf_counter() - started)
    return collector


def _stream(
    probe: ValueProbe,
    fetched: Mapping[str, tuple[str, ...]],
    reader: Iterable[Mapping[str, np.ndarray]],
    collector: StatisticsCollector,
    shard: Shard,
    histograms: bool,
    total_samples: int | None,
) -> None:
    """The loop over this shard's batches; batch 0 fixes every rank's histogram lattice."""
    phased = PHASE_INPUT in probe.input_names
    anchored = False
    # Rank 0's bar only; its share of the samples is about 1/world of them.
    share = None if total_samples is None else -(-total_samples // shard.world)
    progress = task("calibration", total=share, unit="sample")
    deferred = DeferredBinning()  # small tensors' samples: binned many batches at once
    with progress if shard.rank == 0 else contextlib.nullcontext() as bar:
        for batch_index, batch in enumerate(reader):
            if batch_index > 0 and not anchored:
                _seal(collector, shard)
                anchored = True
            if not shard.owns(batch_index):
                continue
            feeds = dict(batch)
            if phased:  # the index in the whole data: the strided sample as in one process
                feeds[PHASE_INPUT] = np.array([batch_index], np.int64)
            results = probe.run(feeds)
            for name, group in fetched.items():
                low, high, size = (float(results[o]) for o in group[:3])
                sample = results[group[3]] if histograms else None
                stats = collector.tensors[name]
                if anchored and deferred.take(stats.histogram, low, high, sample):
                    sample = None  # binned later, with other batches' samples
                stats.update_reduced(low, high, sample, int(size), collector.averaging_constant)
            samples = samples_in(batch, reader)  # a [3, H, W] input: 1 sample, not 3
            collector.samples += samples
            collector.batches_seen += 1
            del results
            if bar is not None:
                bar.advance(samples)
        if not anchored:
            _seal(collector, shard)
        deferred.flush()


def _seal(collector: StatisticsCollector, shard: Shard) -> None:
    if shard.sharded:
        share_anchors(collector, shard)  # rank 0 holds batch 0; NaN anchors mean free
    collector.seal()
