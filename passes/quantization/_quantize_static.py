"""QuantizeStatic: we own calibration (streamed statistics, threshold search), ORT emits the QDQ graph.

Then two guards decide what is returned: the latency guard times the candidates against the float
model (interleaved medians) and never returns a slower model; the accuracy guard keeps the most
sensitive layers in float until a fidelity bound holds. Each stage lives in its own module:
_prepare, _tensors, _calibrate, _emit, _accuracy_guard, _latency_guard, _candidates, _summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

from onnxslim import (
    PassContext,
    RecipeError,
    SlimPass,
    SlimPassResult,
    UnsupportedModelError,
    input_specs,
    load,
    model_file_size,
    save,
)
from onnxslim.calibration import METHODS
from onnxslim.fidelity import FidelityBounds, TaskMetric
from onnxslim.inputs import BatchedReader
from onnxslim.passes.quantization._accuracy_guard import (
    Evaluator,
    tensor_sqnr,
)
from onnxslim.passes.quantization._calibrate import (
    Calibration,
    CalibrationSettings,
    collect_ranges,
    open_calibration_data,
)
from onnxslim.passes.quantization._candidates import (
    Candidate,
    Rejected,
    candidate_op_sets,
    unranged_exclusions,
    user_exclusions,
)
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.passes.quantization._judging import JudgingData, split_for_judging
from onnxslim.passes.quantization._latency_guard import (
    rank_and_confirm,
    slow_int8_nodes,
    timing_feeds,
)
from onnxslim.passes.quantization._options import QuantizeOptions
from onnxslim.passes.quantization._prepare import Prepared, prepare
from onnxslim.passes.quantization._profiles import TargetProfile, target_profile
from onnxslim.passes.quantization._pruning import guarded_candidates
from onnxslim.passes.quantization._recovery import check_recovery_options, recover
from onnxslim.passes.quantization._summary import (
    candidates_summary,
    excluded_reasons,
    fidelity_summary,
    float_nodes_after_optimization,
    optimized_graph,
    quantized_nodes,
    start_summary,
    tensors_summary,
)
from onnxslim.passes.quantization._tensors import tensors_to_calibrate

__all__ = ["QuantizeStatic"]

logger = logging.getLogger(__name__)

_PROFILE_OVERRIDES = (
    "per_channel",
    "reduce_range",
    "activation_type",
    "weight_type",
    "activation_symmetric",
    "weight_symmetric",
)


@dataclasses.dataclass(frozen=True)
class _Run:
    """The working state of one run, shared by the stages after calibration."""

    model: ir.Model
    context: PassContext
    workdir: Path
    input_path: Path
    prepared: Prepared
    calibration: Calibration
    op_sets: list[tuple[str, tuple[str, ...] | None]]  # (label, op types; None: dynamic)
    static_ops: list[str]
    excluded: dict[str, str]  # node -> why it stays float (user, NaN/Inf tensors)
    emitter: Emitter
    evaluator: Evaluator
    summary: dict[str, Any]
    started: float
    batch_axes: dict[str, int | None]  # the reader's batch axis per input (absent: 0)


class QuantizeStatic(SlimPass):
    """Static int8 quantization with streamed calibration, target profiles and guards.

    Options are declared once, with their defaults and help, in :class:`QuantizeOptions`:
    ``QuantizeStatic("calibration.npz", method="entropy", exclude=["op:Add"])`` (the calibration
    data may come first) or ``QuantizeStatic(QuantizeOptions(...))``.
    """

    Options: ClassVar[type] = QuantizeOptions
    settings: QuantizeOptions
    name = "quantize"
    description = "Static int8 quantization: streamed calibration, ORT QDQ emission, latency and accuracy guards."
    exact = False

    def __init__(self, calibration: Any = None, /, **values: Any) -> None:
        # The calibration data may come first, as before options were declared.
        if isinstance(calibration, QuantizeOptions):
            super().__init__(calibration, **values)
        else:
            if calibration is not None:
                values["calibration"] = calibration
            super().__init__(**values)
        # the report echoes the exclusions as a list, [] when none (as before)
        self.settings = dataclasses.replace(self.settings, exclude=list(self.exclude or []))
        _check_options(self.settings)
        self.profile = target_profile(self.target)  # fails early on an unknown target

    # -- configuration -------------------------------------------------------------------
    def resolved_profile(self) -> TargetProfile:
        overrides = {
            key: getattr(self, key) for key in _PROFILE_OVERRIDES if getattr(self, key) is not None
        }
        return dataclasses.replace(self.profile, **overrides) if overrides else self.profile

    def bound(self) -> FidelityBounds:
        if not self.accuracy_guard:
            return FidelityBounds.off()
        return FidelityBounds(min_sqnr_db=self.min_sqnr_db, min_top1_agreement=self.min_top1)

    def task_metric(self) -> TaskMetric | None:
        """The metric the user named (it alone is then the bound); None: chosen per output."""
        if not self.accuracy_guard or self.metric is None:
            return None
        return _parse_metric(self.metric, self.min_score)

    def calibration_settings(self) -> CalibrationSettings:
        return CalibrationSettings(
            self.method,
            self.percentile,
            self.moving_average,
            self.bins,
            self.batch_size,
            self.cache_dir,
            threads=self.threads,  # ORT's numerics depend on its thread count
        )

    # -- the pass ------------------------------------------------------------------------
    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        started = time.perf_counter()
        _refuse_empty_batches(model)
        profile = self.resolved_profile()
        reader, smoke = self._open_reader(model, context)
        reader, judging = self._judging_data(model, reader, smoke, context)
        with _scratch_folder(context.workdir) as workdir:
            summary = start_summary(reader, smoke, self.method, profile)
            summary["judged_on"] = judging.judged_on
            if judging.warning is not None and self.accuracy_guard:
                logger.warning("%s", judging.warning)
                summary["warnings"].append(judging.warning)
            run = self._prepare_and_calibrate(
                model, context, reader, profile, workdir, summary, started, judging.batches
            )
            tried = self._accuracy_guard(run)
            tried = recover(self, run, reader, tried)  # _recovery: CLE, SmoothQuant, bias, QAT-KD
            tried, chosen = self._latency_guard(run, tried)
            evaluator = run.evaluator
            summary["evaluations"] = {
                "run": evaluator.evaluations,
                "stopped_early": evaluator.stopped_early,
            }
            summary["candidates"] = candidates_summary(tried, chosen)
            summary["size_bytes_before"] = model_file_size(run.input_path)
            if chosen is None:
                return self._fallback(run, tried)
            return self._return_chosen(run, tried[chosen])

    # -- the stages ----------------------------------------------------------------------
    def _open_reader(self, model: ir.Model, context: PassContext) -> tuple[BatchedReader, bool]:
        data = self.calibration if self.calibration is not None else context.data
        smoke = data is None
        if smoke:
            logger.warning(
                "no calibration data given: using random smoke data; the ranges are meaningless"
            )
            data = "random"
        # with a sample limit, the guard's held-out samples may come from just past it
        most = max(self.eval_samples, self.max_eval_samples)
        limit = None if self.samples is None else self.samples + most
        reader = open_calibration_data(data, model, self.batch_size, limit, context.sizes)
        return reader, smoke or reader.smoke

    def _judging_data(
        self, model: ir.Model, reader: BatchedReader, smoke: bool, context: PassContext
    ) -> tuple[BatchedReader, JudgingData]:
        """The calibration reader and the guard's samples, unseen by the calibration if possible."""
        own_data = self.calibration is not None and context.data is not None
        verification = list(context.sample_inputs) if own_data else []
        if verification and _same_first_sample(reader, verification[0]):
            verification = []  # the pipeline verifies on the calibration data itself
        judged = smoke or not self.accuracy_guard or not isinstance(reader, BatchedReader)
        return split_for_judging(self.settings, model, reader, judged, verification, smoke)

    def _prepare_and_calibrate(
        self,
        model: ir.Model,
        context: PassContext,
        reader: Any,
        profile: TargetProfile,
        workdir: Path,
        summary: dict[str, Any],
        started: float,
        batches: list[dict],
    ) -> _Run:
        input_path = workdir / "input.onnx"
        save(model, input_path, link_external_data=True)  # external weights linked, not copied
        # the fusions' exactness check: on the pipeline's samples, else two of the guard's
        # batches (real inputs, and no probing of the sizes a random feed could run at)
        inputs = {v.name for v in model.graph.inputs}
        own = [{k: v for k, v in b.items() if k in inputs} for b in batches[:2]]
        prepared = prepare(model, workdir, fuse=self.fuse, samples=context.sample_inputs or own)
        summary["fusions"] = prepared.fusions
        excluded, unmatched = user_exclusions(prepared.proto, self.exclude)
        for message in unmatched:
            logger.warning(message)
            summary["warnings"].append(message)
        op_sets = candidate_op_sets(prepared.proto, self.op_types, self.mode)
        static_ops = sorted({op for _, ops in op_sets if ops for op in ops})
        names = tensors_to_calibrate(prepared.proto, static_ops)
        calibration = collect_ranges(prepared.model, names, reader, self.calibration_settings())
        summary["calibration"] = calibration.summary()
        evaluator = Evaluator(input_path, prepared, batches, self.bound(), self.task_metric())
        summary.update(evaluator.summary())
        excluded.update(unranged_exclusions(prepared.proto, names, calibration.ranges, excluded))
        emitter = Emitter(prepared.path, workdir, profile, calibration.ranges)
        return _Run(
            model,
            context,
            workdir,
            input_path,
            prepared,
            calibration,
            op_sets,
            static_ops,
            excluded,
            emitter,
            evaluator,
            summary,
            started,
            dict(getattr(reader, "batch_axes", {}) or {}),
        )

    def _accuracy_guard(self, run: _Run) -> list[Candidate]:
        # op classes, widened ranges, placement searches, sensitive layers; what cannot beat
        # an accurate candidate is skipped (_pruning)
        return guarded_candidates(run, self.settings)

    def _latency_guard(
        self, run: _Run, tried: list[Candidate]
    ) -> tuple[list[Candidate], int | None]:
        feeds = timing_feeds(run.model, run.evaluator.batches, self.latency_batch, run.batch_axes)
        first = next(iter(feeds))
        run.summary["latency_batch"] = np.shape(feeds[first])[run.batch_axes.get(first, 0) or 0]
        base = next((c for c in tried if c.evaluation.accurate and not c.dynamic), None)
        if base is not None and self.latency_guard:
            # Per node: the int8 kernels that cost far more per MAC than the rest (a 1-channel
            # stem, depthwise or tiny layers, a conversion-bound island) go back to float in
            # an extra candidate; the timing round below decides whether that is faster.
            slow = slow_int8_nodes(
                base,
                run.prepared,
                feeds,
                run.context.sizes,
                runs=self.latency_runs,
                threads=self.threads,
            )
            run.summary["slow_int8_nodes"] = dict(slow)
            if slow:  # the node losing most time alone, and all of them
                first = dict([next(iter(slow.items()))])
                label = f"{base.label}, slowest int8 node in float"
                tried.append(self._without_slow_nodes(run, base, first, label))
                if len(slow) > 1:
                    label = f"{base.label}, slow int8 nodes in float"
                    tried.append(self._without_slow_nodes(run, base, slow, label))
        tried = [
            c
            if c.evaluation.accurate
            else c.replace(rejected=Rejected("accuracy: " + "; ".join(c.evaluation.problems)))
            for c in tried
        ]
        accurate = [i for i, c in enumerate(tried) if c.rejected is None]
        if not accurate or not self.latency_guard:
            return tried, (accurate[0] if accurate else None)
        verdict = rank_and_confirm(
            tried,
            run.input_path,
            feeds,
            runs=self.latency_runs,
            threads=self.threads,
            min_speedup=self.min_speedup,
        )
        run.summary["latency_ms_before"] = round(verdict.float_latency_ms, 3)
        return verdict.candidates, verdict.chosen

    def _without_slow_nodes(
        self, run: _Run, base: Candidate, slow: dict[str, str], label: str
    ) -> Candidate:
        """The base's op types and (widened) ranges, with the slow nodes in float too."""
        extra = {**base.excluded, **slow}
        path = run.emitter.emit(label, base.op_types, [*run.excluded, *extra], base.ranges)
        return base.replace(
            label=label,
            path=path,
            evaluation=run.evaluator.evaluate(path),
            excluded=extra,
            variant_of=base.label,
        )

    def _fallback(self, run: _Run, tried: list[Candidate]) -> SlimPassResult:
        summary = run.summary
        reasons = "; ".join(f"{c.label}: {c.rejected}" for c in tried)
        summary["fallback"] = (
            f"returned the float model: no int8 candidate was both accurate and faster ({reasons})"
        )
        summary["size_bytes_after"] = summary["size_bytes_before"]
        summary["seconds"] = round(time.perf_counter() - run.started, 3)
        logger.warning("%s", summary["fallback"])
        return SlimPassResult(run.model, modified=False, summary=summary)

    def _return_chosen(self, run: _Run, chosen: Candidate) -> SlimPassResult:
        summary = run.summary
        excluded = {**run.excluded, **chosen.excluded}
        ranges = run.calibration.ranges
        summary["chosen"] = chosen.label
        summary["fidelity"] = fidelity_summary(chosen.evaluation)
        if chosen.latency_ms is not None:
            # the input's latency over the reported speed-up (the lower of the ranking and the
            # confirming round's): the two latencies printed side by side agree with it
            before, speedup = summary.get("latency_ms_before"), chosen.speedup or 0.0
            after = before / speedup if before and speedup else chosen.latency_ms
            summary["latency_ms_after"] = round(after, 3)
            summary["speedup"] = round(speedup, 3)
        summary["size_bytes_after"] = model_file_size(chosen.path)
        run.emitter.release()  # nothing is emitted from here on
        # the report's per-tensor SQNR runs two probes: before the result is loaded (peak RSS)
        sqnr = tensor_sqnr(run.prepared, chosen, ranges, run.evaluator.batches)
        result_model = load(chosen.path)
        proto = run.prepared.proto
        summary["nodes_quantized"] = quantized_nodes(proto, result_model, chosen.op_types)
        summary["nodes_excluded"] = excluded_reasons(
            proto, excluded, chosen.op_types, run.static_ops
        )
        if excluded and not chosen.dynamic:
            verdict = float_nodes_after_optimization(
                optimized_graph(chosen.path, run.workdir), list(excluded)
            )
            # warned for the nodes the run was told to keep float (the user's, the unranged);
            # the guards' own choices were judged and timed on the graph ORT runs
            requantized = [
                n
                for n, v in verdict.items()
                if v not in ("float", "fused or renamed") and n in run.excluded
            ]
            if requantized:
                message = f"ORT re-quantized {len(requantized)} excluded node(s) at load: {', '.join(requantized)}"
                logger.warning(message)
                summary["warnings"].append(message)
            summary["excluded_verified_on_ort_graph"] = verdict
        summary["tensors"] = tensors_summary(ranges, chosen.ranges or ranges, self.method, sqnr)
        summary["seconds"] = round(time.perf_counter() - run.started, 3)
        _materialize_workdir_weights(result_model, run.workdir)
        _replace_contents_in_place(run.model, result_model)
        return SlimPassResult(run.model, modified=True, summary=summary)


def _refuse_empty_batches(model: ir.Model) -> None:
    """A batch dim declared 0 is fixed at 0 for ORT (-1 and named dims are dynamic): such a model
    runs only empty batches, so neither calibration nor the latency guard could run it."""
    for spec in input_specs(model):
        if spec.shape and spec.shape[0] == 0:
            raise UnsupportedModelError(
                f"input '{spec.name}' declares its batch dim as 0, so ONNX Runtime runs it only on "
                "empty batches; re-export it with a dynamic batch (a named or -1 dim)."
            )


def _same_first_sample(reader: BatchedReader, feeds: Any) -> bool:
    first = next(iter(reader), None)
    if first is None or set(first) != set(feeds):
        return False
    return all(
        np.shape(first[n])[1:] == np.shape(feeds[n])[1:]
        and np.array_equal(np.atleast_1d(first[n])[:1], np.atleast_1d(feeds[n])[:1])  # 0-d: sr
        for n in first
    )


def _parse_metric(metric: Any, min_score: float | None) -> TaskMetric:
    try:
        return TaskMetric.parse(metric, min_score)
    except ValueError as error:
        raise RecipeError(str(error)) from None


def _check_options(options: QuantizeOptions) -> None:
    """Refuses bad options before any work (each used to fail late with a ValueError/re.error)."""
    if options.metric is not None:
        _parse_metric(options.metric, options.min_score)
    check_recovery_options(options)
    method, mode, percentile, bins = options.method, options.mode, options.percentile, options.bins
    samples, exclude = options.samples, options.exclude
    if method not in METHODS:
        raise RecipeError(
            f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}."
        )
    if mode not in ("auto", "static", "dynamic"):
        raise RecipeError(f"unknown quantization mode '{mode}'; choose auto, static or dynamic.")
    if not 0.0 < percentile <= 100.0:
        raise RecipeError(f"percentile must be in (0, 100], got {percentile}.")
    if bins < 16 or bins % 2:
        raise RecipeError(f"bins must be an even number >= 16, got {bins}.")
    for option, value in (
        ("batch_size", options.batch_size),
        ("eval_samples", options.eval_samples),
        ("latency_batch", options.latency_batch),
        ("latency_runs", options.latency_runs),
    ):
        if value < 1:
            raise RecipeError(f"{option} must be >= 1, got {value}.")
    if samples is not None and samples < 1:
        raise RecipeError(f"samples must be >= 1 (or unset for all), got {samples}.")
    for option, kind in (
        ("activation_type", options.activation_type),
        ("weight_type", options.weight_type),
    ):
        if kind not in (None, "int8", "uint8"):
            raise RecipeError(f"{option} '{kind}' is not supported; use 'uint8' or 'int8'.")
    for selector in exclude or []:
        if selector.startswith("re:"):
            try:
                re.compile(selector[3:])
            except re.error as error:
                raise RecipeError(
                    f"exclude selector '{selector}' is not a valid regular expression ({error})."
                ) from None


@contextlib.contextmanager
def _scratch_folder(workdir: str | Path | None) -> Iterator[Path]:
    """``<workdir>/quantize`` (the pipeline's folder), else a temporary folder removed after."""
    with contextlib.ExitStack() as stack:
        base = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxslim-quant-"))
        folder = Path(base) / "quantize"
        folder.mkdir(parents=True, exist_ok=True)
        yield folder


def _materialize_workdir_weights(model: ir.Model, workdir: Path) -> None:
    """Weights memory-mapped from the pass's scratch folder move to memory: the folder goes away
    when the pipeline ends (int8 weights are a quarter of the float model)."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and Path(tensor.base_dir) == workdir.resolve():
            value.const_value = ir.Tensor(np.array(tensor.numpy()), name=tensor.name)


def _replace_contents_in_place(model: ir.Model, source: ir.Model) -> None:
    """Makes ``model`` carry ``source``'s graph: SlimPass is an onnx-ir InPlacePass (the result
    must be the input object) and ORT emits the int8 model as a new file, so the one way to keep
    that promise is to move the loaded result's graph into the input object, here and only here."""
    model.graph = source.graph
    model.ir_version = source.ir_version
    model.meta.update(source.meta)
