"""Calibrate: streamed statistics of the chosen tensors (cached), then a range per tensor."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxslim import RecipeError
from onnxslim.calibration import (
    METHODS,
    Shard,
    StatisticsCache,
    collect_statistics,
    compute_range,
    join_process_group,
    leave_if_worker,
    model_fingerprint,
    refuse_moving_average,
)
from onnxslim.inputs import BatchedReader, DimSizes, open_samples
from onnxslim.passes.quantization._candidates import quantizable_op_types
from onnxslim.passes.quantization._prepare import prepare
from onnxslim.passes.quantization._tensors import tensors_to_calibrate

__all__ = [
    "Calibration",
    "CalibrationSettings",
    "calibrate",
    "collect_ranges",
    "open_calibration_data",
    "run_calibration",
]

logger = logging.getLogger(__name__)

Ranges = dict[str, tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """How ranges are computed from the statistics (the pass's calibration options)."""

    method: str = "percentile"
    percentile: float = 99.999
    moving_average: bool = False
    bins: int = 2048
    batch_size: int = 1
    cache_dir: str | None = None
    # Sharded over torch.distributed ranks: None shards when launched (torchrun) or in a group.
    distributed: bool | None = None
    # ORT intra-op threads (None: ORT's default; sharded: the cores over the local ranks).
    # ORT's numerics depend on it (reductions split by thread): equal ranges need equal threads.
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RecipeError(
                f"unknown calibration method '{self.method}'; choose one of {', '.join(METHODS)}."
            )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Statistics and ranges of the calibrated tensors; ``ranges`` lacks never-finite tensors."""

    names: tuple[str, ...]
    collector: Any  # onnxslim.calibration's StatisticsCollector
    ranges: Ranges
    cache_hit: bool
    seconds: float

    def summary(self) -> dict:
        return {
            "samples": self.collector.samples,
            "tensors": len(self.names),
            "seconds": round(self.seconds, 3),
            "cache_hit": self.cache_hit,
            "retained_bytes": self.collector.retained_bytes(),
        }

    def clipped(self) -> Ranges:
        """Tensors whose range the method clipped below min/max -> their min/max range, the
        most clipped (smallest share of the min/max width kept) first."""
        shares = {}
        for name, (low, high) in self.ranges.items():
            stats = self.collector.tensors[name]
            width = stats.maximum - stats.minimum
            if width > 0 and (high - low) < 0.999 * width:
                shares[name] = (high - low) / width
        return {
            name: (self.collector.tensors[name].minimum, self.collector.tensors[name].maximum)
            for name in sorted(shares, key=shares.__getitem__)
        }


def collect_ranges(
    prepared: ir.Model, names: Sequence[str], reader: Any, settings: CalibrationSettings
) -> Calibration:
    """Streams ``reader`` through ``prepared`` once (or reads the cache) and computes ranges."""
    started = time.perf_counter()
    collector, cache_hit = _statistics(prepared, list(names), reader, settings)
    ranges = {
        name: compute_range(
            stats,
            settings.method,
            percentile=settings.percentile,
            moving_average=settings.moving_average,
            levels=255,
        )
        for name, stats in collector.tensors.items()
        if stats.batches
    }
    return Calibration(tuple(names), collector, ranges, cache_hit, time.perf_counter() - started)


def _statistics(prepared: ir.Model, names: list[str], reader: Any, settings: CalibrationSettings):
    shard = join_process_group(settings.distributed)
    if shard.sharded:
        refuse_moving_average(shard, settings.method == "minmax" and settings.moving_average)
        collector = _collect(prepared, names, reader, settings, shard)
        # Ranks other than 0 of a CLI launch end here; rank 0 goes on to write the outputs.
        leave_if_worker(shard)
        # No cache: every rank would have to agree on a hit, and merged statistics have no
        # moving averages for a later one-process run to find.
        return collector, False
    cache = StatisticsCache(settings.cache_dir) if settings.cache_dir else None
    key = None
    if cache is not None:
        histogram_bins = settings.bins if settings.method != "minmax" else 0
        # Readers' fingerprints cover the data and the sample limit; moving-average minmax
        # also depends on how the samples are batched.
        data_digest = f"{reader.fingerprint()}|batch={settings.batch_size}"
        key = cache.key(model_fingerprint(prepared), data_digest, names, histogram_bins)
        cached = cache.load(key)
        if cached is not None:
            logger.info("statistics cache hit %s", key)
            return cached, True
    collector = _collect(prepared, names, reader, settings, Shard())
    if cache is not None and key is not None:
        cache.store(key, collector)
    return collector, False


def _collect(
    prepared: ir.Model, names: list[str], reader: Any, settings: CalibrationSettings, shard: Shard
):
    return collect_statistics(
        prepared,
        names,
        reader,
        bins=settings.bins,
        histograms=settings.method != "minmax",
        providers=["CPUExecutionProvider"],
        intra_op_threads=settings.threads,
        shard=shard,
        total_samples=getattr(reader, "limit", None),
    )


def open_calibration_data(
    data: Any, model: ir.Model, batch_size: int, samples: int | None, sizes: DimSizes | None
) -> BatchedReader:
    """The calibration samples through the one data door (a reader is taken as it is),
    checked against the model's inputs before any work."""
    reader = open_samples(data, model, batch_size=batch_size, limit=samples, sizes=sizes)
    reader.validate(model)
    return reader


def run_calibration(
    model: ir.Model,
    data: Any,
    *,
    method: str = "percentile",
    percentile: float = 99.999,
    moving_average: bool = False,
    bins: int = 2048,
    batch_size: int = 1,
    samples: int | None = None,
    op_types: Sequence[str] | None = None,
    cache_dir: str | None = None,
    sizes: Mapping[str, int] | None = None,
    distributed: bool | None = None,
    threads: int | None = None,
) -> Calibration:
    """Calibration only, with its statistics: what QuantizeStatic computes before emitting.

    ``data`` is anything QuantizeStatic's ``calibration`` takes; ``op_types`` (default: every op
    ORT can quantize) picks the nodes whose float activations are calibrated. ``model`` is not
    modified. The same code path as the pass: on the same data the ranges are equal.

    ``distributed``: True shards the batches over the torch.distributed ranks (batch i on rank
    i % world; every rank returns the same, one-process result); None (default) does so when
    launched by torchrun with more than one rank or inside an initialised process group.
    ``threads``: ORT intra-op threads (default: ORT's; sharded: cores / local ranks). ORT's
    arithmetic depends on it, so compare runs on equal threads.
    """
    settings = CalibrationSettings(
        method, percentile, moving_average, bins, batch_size, cache_dir, distributed, threads
    )
    reader = open_calibration_data(data, model, batch_size, samples, sizes)
    with tempfile.TemporaryDirectory(prefix="onnxslim-calibrate-") as folder:
        prepared = prepare(model, Path(folder))
        ops = quantizable_op_types() if op_types is None else op_types
        names = tensors_to_calibrate(prepared.proto, ops)
        prepared_model = prepared.model
        del prepared  # its proto is a second copy of the weights: not kept while calibrating
        return collect_ranges(prepared_model, names, reader, settings)


def calibrate(model: ir.Model, data: Any, **options: Any) -> Ranges:
    """Calibration only: tensor name -> the (low, high) range QuantizeStatic would use.

    Takes :func:`run_calibration`'s options (method, percentile, moving_average, bins,
    batch_size, samples, op_types, cache_dir, sizes, distributed, threads).
    """
    return run_calibration(model, data, **options).ranges
