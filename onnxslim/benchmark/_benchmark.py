"""``benchmark()``: models x providers x batch sizes, timed interleaved, compared to the first model."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

import onnxslim
from onnxslim._errors import InputDataError, SlimError
from onnxslim._fidelity import compare_outputs
from onnxslim._inputs import DimSizes
from onnxslim.benchmark._coverage import Int8Coverage, int8_coverage
from onnxslim.benchmark._machine import machine_info
from onnxslim.benchmark._results import BenchmarkResult, LatencyStats, Measurement, RatioStats
from onnxslim.benchmark._runner import MemoryProbe, SessionRunner, gpu_memory_used

__all__ = ["benchmark", "Metric"]

logger = logging.getLogger(__name__)

# metric(reference_outputs, candidate_outputs) -> float; one output dict per sample
Metric = Callable[[Sequence[Mapping[str, np.ndarray]], Sequence[Mapping[str, np.ndarray]]], float]

_DEFAULT_RUNS = 30
_MIN_RUNS_IN_BUDGET = 3


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


def _provider_options_for(
    provider: str, provider_options: Mapping[str, Mapping[str, object]] | None
) -> dict | None:
    if not provider_options:
        return None
    for key, options in provider_options.items():
        if onnxslim.resolve_providers([key])[0] == provider:
            return dict(options)
    return None


def _data_batch(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim > 0 else 1


def _read_data(data: Iterable[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    samples = [{name: np.asarray(value) for name, value in feed.items()} for feed in data]
    if not samples:
        raise InputDataError("the data reader yielded no samples; give at least one input dict.")
    return samples


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
    runners: Sequence[SessionRunner], runs: int | None, time_budget_s: float | None
) -> list[list[float]]:
    """Runs every model once per round, rotating the order (A B, B A, ...); seconds per model."""
    timings: list[list[float]] = [[] for _ in runners]
    started = time.perf_counter()
    round_index = 0
    while True:
        if runs is not None and round_index >= runs:
            break
        if (
            runs is None
            and time_budget_s is not None
            and round_index >= _MIN_RUNS_IN_BUDGET
            and time.perf_counter() - started >= time_budget_s
        ):
            break
        shift = round_index % len(runners)
        for position in range(len(runners)):
            index = (position + shift) % len(runners)
            timings[index].append(runners[index].run(round_index))
        round_index += 1
    return timings


def benchmark(
    models: Sequence[str | os.PathLike | ir.Model],
    *,
    providers: str | Sequence[str] = "cpu",
    provider_options: Mapping[str, Mapping[str, object]] | None = None,
    batch_sizes: Sequence[int] | None = None,
    sizes: DimSizes | None = None,
    data: Iterable[Mapping[str, np.ndarray]] | None = None,
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
        batch_sizes: Batch sizes for generated inputs (default ``[1]``); not with ``data``.
        sizes: Sizes for symbolic dims (by input name or dim name), as for ``resolve_shape``.
        data: An iterable of input dicts (a data reader); timed runs cycle through it and
            fidelity uses its first ``fidelity_samples`` items. Inputs are generated otherwise.
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
    resolved_providers = onnxslim.resolve_providers(providers)
    samples = _read_data(data) if data is not None else None
    if samples is not None and batch_sizes:
        raise SlimError(
            "batch sizes apply to generated inputs; with a data reader the batch is the data's own."
        )
    batches = [_data_batch(samples[0])] if samples is not None else list(batch_sizes or [1])

    with contextlib.ExitStack() as stack:
        paths, loaded = [], []
        for model in models:
            if isinstance(model, ir.Model):
                paths.append(stack.enter_context(onnxslim.temporary_model_file(model)))
                loaded.append(model)
            else:
                paths.append(Path(model))
                loaded.append(onnxslim.load(model))
        names = _labels(paths, labels)
        displayed_paths = [
            "<in-memory>" if isinstance(model, ir.Model) else str(path)
            for model, path in zip(models, paths)
        ]
        sizes_on_disk = [onnxslim.model_file_size(path) for path in paths]
        memory_method = MemoryProbe().start().stop().method
        options = onnxslim.session_options(
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            allow_spinning=allow_spinning,
            optimization_level=optimization_level,
        )
        measurements: list[Measurement] = []
        for provider in resolved_providers:
            options_for_provider = _provider_options_for(provider, provider_options)
            coverages = {}
            for batch in batches:
                if samples is not None:
                    timed_feeds, fidelity_feeds = samples, samples[:fidelity_samples]
                else:
                    fidelity_feeds = _generated_feeds(
                        loaded[0], sizes, batch, max(1, fidelity_samples), seed
                    )
                    timed_feeds = fidelity_feeds[:1]
                if coverage and not coverages:
                    for name, path in zip(names, paths):
                        coverages[name] = _coverage_or_note(
                            path,
                            provider,
                            optimization_level,
                            fidelity_feeds[0],
                            options_for_provider,
                        )
                runners, memory, gpu_memory = [], [], []
                for name, path in zip(names, paths):
                    gc.collect()
                    gpu_before = gpu_memory_used()
                    probe = MemoryProbe().start()
                    runner = SessionRunner(
                        path, provider, options, options_for_provider, timed_feeds
                    )
                    for warm_index in range(warmup):
                        runner.run(warm_index)
                    memory.append(probe.stop())
                    gpu_after = gpu_memory_used()
                    gpu_memory.append(
                        max(0, gpu_after - gpu_before)
                        if gpu_before is not None and gpu_after is not None
                        else None
                    )
                    runners.append(runner)
                    logger.info(
                        "%s on %s: session in %.2f s", name, provider, runner.create_seconds
                    )
                timings = _timed_rounds(runners, runs, time_budget_s)
                reference_outputs = [runners[0].outputs(feed) for feed in fidelity_feeds]
                for index, (name, path, runner) in enumerate(zip(names, paths, runners)):
                    latency = LatencyStats.from_seconds(timings[index])
                    measurement = Measurement(
                        model=name,
                        path=str(path)
                        if not isinstance(models[index], ir.Model)
                        else "<in-memory>",
                        provider=provider,
                        batch=batch,
                        latency=latency,
                        latencies_ms=[1000.0 * t for t in timings[index]],
                        throughput_per_s=batch / (latency.mean_ms / 1000.0),
                        session_create_s=runner.create_seconds,
                        file_size_bytes=sizes_on_disk[index],
                        io_binding=runner.io_binding,
                        session_memory_bytes=memory[index].increase,
                        peak_rss_bytes=memory[index].peak,
                        gpu_memory_bytes=gpu_memory[index],
                        coverage=coverages.get(name),
                    )
                    if index > 0:
                        measurement.size_ratio = sizes_on_disk[index] / sizes_on_disk[0]
                        measurement.latency_ratio = RatioStats.from_pairs(
                            [c / r for c, r in zip(timings[index], timings[0])]
                        )
                    outputs = (
                        reference_outputs
                        if index == 0
                        else [runner.outputs(feed) for feed in fidelity_feeds]
                    )
                    try:
                        measurement.fidelity = compare_outputs(reference_outputs, outputs)
                    except (KeyError, ValueError) as error:
                        raise SlimError(
                            f"model '{name}' ({path}): its outputs cannot be compared with the "
                            f"reference '{names[0]}' ({error}); benchmark models with the same outputs."
                        ) from None
                    if metric is not None:
                        measurement.metric_name = getattr(metric, "__name__", "metric")
                        measurement.metric_value = float(metric(reference_outputs, outputs))
                    measurements.append(measurement)
                del runners
    settings = {
        "providers": resolved_providers,
        "provider_options": {
            provider: _provider_options_for(provider, provider_options) or {}
            for provider in resolved_providers
        },
        "batch_sizes": batches,
        "intra_op_threads": intra_op_threads,
        "inter_op_threads": inter_op_threads,
        "optimization_level": optimization_level,
        "warmup_runs": warmup,
        "runs": runs,
        "time_budget_s": time_budget_s,
        "inputs": "data" if samples is not None else "generated",
        "fidelity_samples": len(samples[:fidelity_samples])
        if samples is not None
        else fidelity_samples,
        "interleaved": True,
        "allow_spinning": allow_spinning,
        "memory_method": memory_method,
        "notes": [
            *(
                [
                    "WARNING: thread spinning was ON: sessions steal cores from each other, ratios are unreliable"
                ]
                if allow_spinning
                else []
            ),
            "models run interleaved in one process (one run of each per round, order rotated every "
            "round); latency ratios are taken round by round",
            *(
                []
                if allow_spinning
                else [
                    "ORT thread spinning is off (session.intra_op.allow_spinning=0) so an idle session "
                    "cannot steal cores from the timed one"
                ]
            ),
            "memory: each session is created and warmed up alone; its figure is the peak RSS "
            "increase over that window (" + memory_method + ")",
        ],
    }
    return BenchmarkResult(
        measurements=measurements,
        machine=machine_info(),
        settings=settings,
        models=[
            {"label": name, "path": display, "file_size_bytes": size}
            for name, display, size in zip(names, displayed_paths, sizes_on_disk)
        ],
        reference=names[0],
        tool=f"onnxslim {onnxslim.__version__}",
    )
