"""``benchmark()``: models x providers x batch sizes, timed interleaved, compared to the first model."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

import onnxslim
from onnxslim._errors import InputDataError, SlimError
from onnxslim.benchmark._coverage import Int8Coverage, int8_coverage
from onnxslim.benchmark._records import LatencyStats, Measurement, RatioStats
from onnxslim.benchmark._results import BenchmarkResult
from onnxslim.benchmark._runner import MemoryProbe, SessionRunner
from onnxslim.benchmark._settings import provider_options_for, settings_record
from onnxslim.fidelity import compare_outputs
from onnxslim.inputs import BatchedReader, DimSizes, benchmark_feeds, open_samples
from onnxslim.runtime import (
    gpu_memory_used,
    interleaved_timing,
    machine_info,
    resolve_providers,
    session_options,
)

__all__ = ["benchmark", "Metric"]

logger = logging.getLogger(__name__)

# metric(reference_outputs, candidate_outputs) -> float; one output dict per sample
Metric = Callable[[Sequence[Mapping[str, np.ndarray]], Sequence[Mapping[str, np.ndarray]]], float]

_DEFAULT_RUNS = 30
_MIN_RUNS_IN_BUDGET = 3
_TIMED_DATA_FEEDS = 16  # timed runs cycle through up to this many feeds of the data


def _labels(paths: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(paths) or len(set(labels)) != len(labels):
            raise SlimError(
                f"labels {list(labels)}: give one distinct label per model ({len(paths)})."
            )
        return list(labels)
    result: list[str] = []
    for path in paths:
        label, suffix = path.stem, 2
        while label in result:
            label, suffix = f"{path.stem}#{suffix}", suffix + 1
        result.append(label)
    return result


def _open_data(data: object, reference: ir.Model) -> BatchedReader:
    """Samples (an .npz, a folder, a reader) fed in batches of the batch sizes; an iterable of
    input dicts is whole feeds, each used as given (its batch is the data's own)."""
    if isinstance(data, (str, os.PathLike, np.ndarray, Mapping, BatchedReader)):
        return open_samples(data, reference)
    return open_samples(feeds=data, model=reference)  # type: ignore[arg-type]


def _generated_feeds(
    model: ir.Model, sizes: DimSizes | None, batch: int, count: int, seed: int
) -> list[dict]:
    feeds = [onnxslim.random_inputs(model, sizes, seed=seed + i, batch=batch) for i in range(count)]
    for spec in onnxslim.input_specs(model):
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch:
            raise InputDataError(
                f"input '{spec.name}' has a fixed batch dim {spec.shape[0]}; batch size {batch} "
                f"cannot be run: use --batch-sizes {spec.shape[0]} or export with a dynamic batch axis."
            )
    return feeds


def _coverage_or_note(
    path: Path, provider: str, optimization_level: str, feeds: dict, provider_options: dict | None
) -> Int8Coverage:
    """The int8 coverage figure; a failure of this side analysis is noted, not fatal to the timing."""
    try:
        return int8_coverage(
            path,
            provider,
            optimization_level=optimization_level,
            feeds=feeds,
            provider_options=provider_options,
        )
    except Exception as error:  # the analysis re-runs ORT on its own output; report, keep timing
        logger.warning("int8 coverage of %s on %s failed: %s", path, provider, error)
        return Int8Coverage(provider, optimization_level, note=f"analysis failed: {error}")


def _timed_rounds(
    runners: Sequence[SessionRunner],
    runs: int | None,
    time_budget_s: float | None,
    label: str = "benchmark",
) -> list[list[float]]:
    """Runs every model once per round, rotating the order (A B, B A, ...); seconds per model."""
    timing = interleaved_timing(
        [runner.run for runner in runners],
        rounds=runs,
        time_budget_s=time_budget_s,
        min_rounds=_MIN_RUNS_IN_BUDGET,
        progress=label,
    )
    return timing.seconds


@dataclasses.dataclass
class _Model:
    """One benchmarked model: its label, the file ORT loads, what the reports show."""

    label: str
    path: Path
    shown_path: str
    file_size_bytes: int
    loaded: ir.Model


@dataclasses.dataclass
class _Session:
    """A model's warmed-up session and the memory its creation and warm-up took."""

    runner: SessionRunner
    memory: MemoryProbe
    gpu_memory_bytes: int | None


def _models(
    models: Sequence[str | os.PathLike | ir.Model],
    labels: Sequence[str] | None,
    stack: contextlib.ExitStack,
) -> list[_Model]:
    """Files for every model (in-memory ones written to temporary files) with distinct labels."""
    paths, loaded = [], []
    for model in models:
        if isinstance(model, ir.Model):
            paths.append(stack.enter_context(onnxslim.temporary_model_file(model)))
            loaded.append(model)
        else:
            paths.append(Path(model))
            loaded.append(onnxslim.load(model))
    return [
        _Model(
            label=label,
            path=path,
            shown_path="<in-memory>" if isinstance(model, ir.Model) else str(path),
            file_size_bytes=onnxslim.model_file_size(path),
            loaded=loaded_model,
        )
        for label, path, model, loaded_model in zip(_labels(paths, labels), paths, models, loaded)
    ]


def _feeds(
    reference: ir.Model,
    reader: BatchedReader | None,
    sizes: DimSizes | None,
    batch: int,
    fidelity_samples: int,
    seed: int,
) -> tuple[list[dict], list[dict]]:
    """(timed feeds, fidelity feeds): the data's feeds of ``batch`` samples (validated before
    any timing), or inputs generated for ``batch``."""
    if reader is not None:
        count = max(1, fidelity_samples, _TIMED_DATA_FEEDS)
        feeds = benchmark_feeds(reader, reference, batch_size=batch, count=count)
        return feeds, feeds[:fidelity_samples]
    fidelity_feeds = _generated_feeds(reference, sizes, batch, max(1, fidelity_samples), seed)
    return fidelity_feeds[:1], fidelity_feeds


def _start_session(
    model: _Model,
    provider: str,
    options: ort.SessionOptions,
    provider_options: dict | None,
    feeds: list[dict],
    warmup: int,
) -> _Session:
    """Creates and warms up one session alone, measuring the memory that window took."""
    gc.collect()
    gpu_before = gpu_memory_used()
    probe = MemoryProbe().start()
    runner = SessionRunner(model.path, provider, options, provider_options, feeds)
    for warm_index in range(warmup):
        runner.run(warm_index)
    probe.stop()
    gpu_after = gpu_memory_used()
    gpu = (
        max(0, gpu_after - gpu_before) if gpu_before is not None and gpu_after is not None else None
    )
    logger.info("%s on %s: session in %.2f s", model.label, provider, runner.create_seconds)
    return _Session(runner, probe, gpu)


def _measurement(
    model: _Model,
    session: _Session,
    provider: str,
    batch: int,
    seconds: list[float],
    coverage: Int8Coverage | None,
) -> Measurement:
    """The latency, size and memory figures of one model (ratios and fidelity come after)."""
    latency = LatencyStats.from_seconds(seconds)
    return Measurement(
        model=model.label,
        path=model.shown_path,
        provider=provider,
        batch=batch,
        latency=latency,
        latencies_ms=[1000.0 * t for t in seconds],
        throughput_per_s=batch / (latency.mean_ms / 1000.0),
        session_create_s=session.runner.create_seconds,
        file_size_bytes=model.file_size_bytes,
        io_binding=session.runner.io_binding,
        session_memory_bytes=session.memory.increase,
        peak_rss_bytes=session.memory.peak,
        gpu_memory_bytes=session.gpu_memory_bytes,
        coverage=coverage,
    )


def _add_fidelity(
    measurement: Measurement,
    model: _Model,
    reference: str,
    reference_outputs: list[dict[str, np.ndarray]],
    outputs: list[dict[str, np.ndarray]],
    metric: Metric | None,
) -> None:
    """Fidelity (and the user metric) of a model's outputs against the reference's."""
    try:
        measurement.fidelity = compare_outputs(reference_outputs, outputs)
    except (KeyError, ValueError) as error:
        raise SlimError(
            f"model '{model.label}' ({model.path}): its outputs cannot be compared with the "
            f"reference '{reference}' ({error}); benchmark models with the same outputs."
        ) from None
    if metric is not None:
        measurement.metric_name = getattr(metric, "__name__", "metric")
        measurement.metric_value = float(metric(reference_outputs, outputs))


def _measure_batch(
    models: list[_Model],
    sessions: list[_Session],
    provider: str,
    batch: int,
    seconds: list[list[float]],
    fidelity_feeds: list[dict],
    coverages: Mapping[str, Int8Coverage],
    metric: Metric | None,
) -> list[Measurement]:
    """Every model's measurement at one provider and batch: figures, ratio, fidelity."""
    runners = [session.runner for session in sessions]
    reference_outputs = [runners[0].outputs(feed) for feed in fidelity_feeds]
    measurements = []
    for index, (model, session) in enumerate(zip(models, sessions)):
        measurement = _measurement(
            model, session, provider, batch, seconds[index], coverages.get(model.label)
        )
        if index > 0:
            measurement.size_ratio = model.file_size_bytes / models[0].file_size_bytes
            measurement.latency_ratio = RatioStats.from_pairs(
                [c / r for c, r in zip(seconds[index], seconds[0])]
            )
        outputs = (
            reference_outputs
            if index == 0
            else [session.runner.outputs(feed) for feed in fidelity_feeds]
        )
        _add_fidelity(measurement, model, models[0].label, reference_outputs, outputs, metric)
        measurements.append(measurement)
    return measurements


@dataclasses.dataclass(frozen=True)
class _RunSettings:
    """What every provider's measurement of one ``benchmark`` call shares."""

    optimization_level: str
    warmup: int
    runs: int | None
    time_budget_s: float | None
    coverage: bool
    metric: Metric | None


def _measure_provider(
    entries: list[_Model],
    provider: str,
    options_for_provider: dict | None,
    feeds: Mapping[int, tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]],
    options: ort.SessionOptions,
    run: _RunSettings,
) -> list[Measurement]:
    """Every model at every batch size on one provider (int8 coverage measured once)."""
    measurements: list[Measurement] = []
    coverages: dict[str, Int8Coverage] = {}
    for batch, (timed_feeds, fidelity_feeds) in feeds.items():
        if run.coverage and not coverages:
            coverages = {
                model.label: _coverage_or_note(
                    model.path,
                    provider,
                    run.optimization_level,
                    fidelity_feeds[0],
                    options_for_provider,
                )
                for model in entries
            }
        sessions = [
            _start_session(model, provider, options, options_for_provider, timed_feeds, run.warmup)
            for model in entries
        ]
        seconds = _timed_rounds(
            [s.runner for s in sessions],
            run.runs,
            run.time_budget_s,
            f"benchmark {provider.removesuffix('ExecutionProvider')} batch {batch}",
        )
        measurements += _measure_batch(
            entries, sessions, provider, batch, seconds, fidelity_feeds, coverages, run.metric
        )
        del sessions
    return measurements


def benchmark(
    models: Sequence[str | os.PathLike | ir.Model],
    *,
    providers: str | Sequence[str] = "cpu",
    provider_options: Mapping[str, Mapping[str, object]] | None = None,
    batch_sizes: Sequence[int] | None = None,
    sizes: DimSizes | None = None,
    data: object = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    optimization_level: str = "all",
    warmup: int = 5,
    runs: int | None = None,
    time_budget_s: float | None = None,
    fidelity_samples: int = 4,
    metric: Metric | None = None,
    coverage: bool = True,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    allow_spinning: bool = False,
) -> BenchmarkResult:
    """Benchmarks models side by side on ORT providers; the first model is the reference.

    Models are timed interleaved (one run of each per round, order rotated every round) with
    ORT's thread spinning off, so an idle session cannot steal cores from the timed one; latency
    ratios to the reference are taken round by round and summarised by their median.

    Args:
        models: Model paths (or in-memory IR models); the first is the reference.
        providers: Short names (``cpu``, ``cuda``, ``tensorrt``, ...) or full ORT names; one that is
            not available is a :class:`~onnxslim.ProviderError` listing the available ones.
        provider_options: ORT options per provider, keyed by short or full name.
        batch_sizes: Batch sizes (default ``[1]``) of generated inputs or of ``data`` samples;
            not with whole feeds.
        sizes: Sizes for symbolic dims (by input name or dim name), as for ``resolve_shape``.
        data: Samples instead of generated inputs: an ``.npz`` (arrays keyed by input name,
            samples stacked on the batch axis, the same stack as ``optimize --data``), a folder
            or a reader (``onnxslim.inputs.open_samples``), fed in feeds of each batch size
            (``onnxslim.inputs.benchmark_feeds``); or an iterable of whole input dicts, each
            used as given. Timed runs cycle through up to 16 feeds, fidelity uses the first
            ``fidelity_samples``. Checked against the reference model before any timing.
        intra_op_threads, inter_op_threads: ORT thread pool sizes (ORT's default when None).
        optimization_level: ``disable``, ``basic``, ``extended`` or ``all``.
        warmup: Untimed runs per session before timing.
        runs: Timed rounds (each model runs once per round); default 30 unless ``time_budget_s``.
        time_budget_s: Time rounds until this many seconds passed (at least 3 rounds).
        fidelity_samples: Samples compared with the reference.
        metric: ``metric(reference_outputs, candidate_outputs) -> float`` reported beside the
            built-in fidelity figures.
        coverage: Measure the int8 MAC coverage of each model on each provider.
        labels: Names for the models in the reports (default: file stems).
        seed: Seed of generated inputs.
        allow_spinning: Let ORT's idle threads spin; only to show the interference it causes
            (on 2 cores a model timed against itself then ranged 0.64-1.39x).
    """
    if not models:
        raise SlimError("no model given to benchmark; pass at least one ONNX file.")
    if runs is not None and runs < 1:
        raise SlimError(f"runs={runs}: give at least 1 timed run.")
    if runs is None and time_budget_s is None:
        runs = _DEFAULT_RUNS
    resolved_providers = resolve_providers(providers)
    memory_method = MemoryProbe().start().stop().method
    options = session_options(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        allow_spinning=allow_spinning,
        optimization_level=optimization_level,
    )
    measurements: list[Measurement] = []
    with contextlib.ExitStack() as stack:
        entries = _models(models, labels, stack)
        reader = _open_data(data, entries[0].loaded) if data is not None else None
        if reader is not None and not reader.rebatches and batch_sizes:
            raise SlimError(
                "batch sizes apply to generated inputs; with a data reader the batch is the data's own."
            )
        whole_feeds = reader is not None and not reader.rebatches
        batches = [reader.batch_size] if whole_feeds else list(batch_sizes or [1])  # type: ignore[union-attr]
        # every batch's feeds are taken (and the data validated) before any timing
        feeds = {
            batch: _feeds(entries[0].loaded, reader, sizes, batch, fidelity_samples, seed)
            for batch in batches
        }
        for provider in resolved_providers:
            measurements += _measure_provider(
                entries,
                provider,
                provider_options_for(provider, provider_options),
                feeds,
                options,
                _RunSettings(optimization_level, warmup, runs, time_budget_s, coverage, metric),
            )
    settings = settings_record(
        resolved_providers,
        provider_options,
        batches,
        len(feeds[batches[0]][1]) if reader is not None else None,
        memory_method,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        optimization_level=optimization_level,
        warmup=warmup,
        runs=runs,
        time_budget_s=time_budget_s,
        fidelity_samples=fidelity_samples,
        allow_spinning=allow_spinning,
    )
    return BenchmarkResult(
        measurements=measurements,
        machine=machine_info(),
        settings=settings,
        models=[
            {"label": m.label, "path": m.shown_path, "file_size_bytes": m.file_size_bytes}
            for m in entries
        ],
        reference=entries[0].label,
        tool=f"onnxslim {onnxslim.__version__}",
    )
