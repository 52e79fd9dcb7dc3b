"""QuantizeStatic: we own calibration (streamed statistics, threshold search), ORT emits the QDQ graph.

Then two guards decide what is returned: the latency guard times the candidates against the float
model (interleaved medians) and never returns a slower model; the accuracy guard keeps the most
sensitive layers in float until a fidelity bound holds.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxscript.optimizer

from onnxslim._errors import RecipeError, UnsupportedModelError
from onnxslim._fidelity import compare_outputs
from onnxslim._io import load, model_file_size, save
from onnxslim._pass import PassContext, SlimPass, SlimPassResult
from onnxslim._stats import model_stats
from onnxslim.calibration import (
    StatisticsCache,
    collect_statistics,
    compute_range,
    model_fingerprint,
    open_reader,
)
from onnxslim.calibration._thresholds import METHODS
from onnxslim.passes.quantization._guards import (
    AccuracyBound,
    float_nodes_after_optimization,
    interleaved_latency,
    layer_sensitivity,
    node_kernel_seconds,
    optimized_graph,
    output_logits,
    run_outputs,
    run_with_logits,
)
from onnxslim.passes.quantization._profiles import TargetProfile, target_profile

__all__ = ["QuantizeStatic", "select_nodes", "quantizable_op_types"]

logger = logging.getLogger(__name__)

_MIN_OPSET = 13  # per-channel DequantizeLinear (axis attribute) needs opset 13
_COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_ELEMENTWISE_OPS = ("Add", "Mul", "Sub", "Div", "Sigmoid", "HardSigmoid", "Resize", "Where", "Pow")


def quantizable_op_types() -> list[str]:
    """The op types ORT's QDQ quantizer knows how to place Q/DQ around."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def select_nodes(
    graph: onnx.GraphProto, selectors: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Nodes matched by selectors ("name", "re:REGEX", "op:OpType") -> the selector that matched;
    and the selectors that matched nothing."""
    matched: dict[str, str] = {}
    unmatched = []
    for selector in selectors:
        if selector.startswith("re:"):
            pattern = re.compile(selector[3:])
            hits = [n.name for n in graph.node if n.name and pattern.search(n.name)]
        elif selector.startswith("op:"):
            hits = [n.name for n in graph.node if n.op_type == selector[3:]]
        else:
            hits = [n.name for n in graph.node if n.name == selector]
        if not hits:
            unmatched.append(selector)
        for name in hits:
            matched.setdefault(name, selector)
    return matched, unmatched


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if name not in types:
        raise RecipeError(f"quantization type '{name}' is not supported; use 'uint8' or 'int8'.")
    return types[name]


class QuantizeStatic(SlimPass):
    """Static int8 quantization with streamed calibration, target profiles and guards.

    Args:
        calibration: Calibration data: a reader, an ``.npz`` file, a folder of ``.npy``/``.npz``
            or images, an iterable of dicts/arrays (torch DataLoader included), or ``"random"``
            (smoke data, labelled so). ``None`` uses the pipeline's data.
        method: Range method: "minmax", "percentile", "entropy" or "mse".
        percentile: Two-sided percentile kept by "percentile".
        moving_average: "minmax" uses moving-average min/max over batches.
        samples: At most this many calibration samples.
        batch_size: Samples per calibration batch.
        bins: Histogram bins per tensor.
        target: "cpu" (detects VNNI/AMX/ARM dot), "tensorrt" (symmetric int8), "cuda".
        per_channel, reduce_range, activation_type, weight_type, activation_symmetric,
            weight_symmetric: Override the target profile (None keeps it).
        op_types: Op types to quantize; None lets the latency guard pick among op-class sets.
        exclude: Nodes kept in float: names, "re:REGEX" or "op:OpType".
        mode: "auto" (static QDQ or dynamic MatMul quantization, by measurement), "static", "dynamic".
        latency_guard: Time candidates vs the input; never return a slower model.
        latency_runs: Interleaved timing rounds (medians).
        latency_batch: Batch size the latency guard times at: the batch you deploy with
            (default 1, or the model's fixed batch). int8 can win at one batch and lose at another.
        min_speedup: A candidate must beat the input by this factor in two separate interleaved
            measurements (5% margin: a noisy tie must not ship a slower model).
        accuracy_guard: Keep sensitive layers in float until the bound holds.
        min_sqnr_db: Output SQNR bound (dB); None turns it off.
        min_top1: Top-1 agreement bound where outputs look like class scores; None turns it off.
        metric: User callable ``(reference_outputs, candidate_outputs) -> bool``.
        eval_samples: Samples (from the calibration data) used by the guards.
        cache_dir: Folder for the statistics cache; None disables the cache.
        threads: intra-op threads for timing (None: ORT's default).
    """

    name = "quantize"
    description = "Static int8 quantization: streamed calibration, ORT QDQ emission, latency and accuracy guards."
    exact = False

    def __init__(
        self,
        calibration: Any = None,
        *,
        method: str = "percentile",
        percentile: float = 99.999,
        moving_average: bool = False,
        samples: int | None = None,
        batch_size: int = 1,
        bins: int = 2048,
        target: str = "cpu",
        per_channel: bool | None = None,
        reduce_range: bool | None = None,
        activation_type: str | None = None,
        weight_type: str | None = None,
        activation_symmetric: bool | None = None,
        weight_symmetric: bool | None = None,
        op_types: list[str] | None = None,
        exclude: list[str] | None = None,
        mode: str = "auto",
        latency_guard: bool = True,
        latency_runs: int = 10,
        latency_batch: int = 1,
        min_speedup: float = 1.05,
        accuracy_guard: bool = True,
        min_sqnr_db: float | None = 20.0,
        min_top1: float | None = 0.95,
        metric: Callable[[list, list], bool] | None = None,
        eval_samples: int = 8,
        cache_dir: str | None = None,
        threads: int | None = None,
    ):
        super().__init__()
        if method not in METHODS:
            raise RecipeError(
                f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}."
            )
        if mode not in ("auto", "static", "dynamic"):
            raise RecipeError(
                f"unknown quantization mode '{mode}'; choose auto, static or dynamic."
            )
        if not 0.0 < percentile <= 100.0:
            raise RecipeError(f"percentile must be in (0, 100], got {percentile}.")
        # Checked here, before any work: each used to fail late with a ValueError/re.error.
        if bins < 16 or bins % 2:
            raise RecipeError(f"bins must be an even number >= 16, got {bins}.")
        for option, value in (
            ("batch_size", batch_size),
            ("eval_samples", eval_samples),
            ("latency_batch", latency_batch),
            ("latency_runs", latency_runs),
        ):
            if value < 1:
                raise RecipeError(f"{option} must be >= 1, got {value}.")
        if samples is not None and samples < 1:
            raise RecipeError(f"samples must be >= 1 (or unset for all), got {samples}.")
        for option, value in (("activation_type", activation_type), ("weight_type", weight_type)):
            if value not in (None, "int8", "uint8"):
                raise RecipeError(f"{option} '{value}' is not supported; use 'uint8' or 'int8'.")
        for selector in exclude or []:
            if selector.startswith("re:"):
                try:
                    re.compile(selector[3:])
                except re.error as error:
                    raise RecipeError(
                        f"exclude selector '{selector}' is not a valid regular expression ({error})."
                    ) from None
        self.calibration = calibration
        self.method = method
        self.percentile = percentile
        self.moving_average = moving_average
        self.samples = samples
        self.batch_size = batch_size
        self.bins = bins
        self.target = target
        self.per_channel = per_channel
        self.reduce_range = reduce_range
        self.activation_type = activation_type
        self.weight_type = weight_type
        self.activation_symmetric = activation_symmetric
        self.weight_symmetric = weight_symmetric
        self.op_types = op_types
        self.exclude = list(exclude or [])
        self.mode = mode
        self.latency_guard = latency_guard
        self.latency_runs = latency_runs
        self.latency_batch = latency_batch
        self.min_speedup = min_speedup
        self.accuracy_guard = accuracy_guard
        self.min_sqnr_db = min_sqnr_db
        self.min_top1 = min_top1
        self.metric = metric
        self.eval_samples = eval_samples
        self.cache_dir = cache_dir
        self.threads = threads
        self.profile = target_profile(target)  # fails early on an unknown target

    # -- configuration -------------------------------------------------------------------
    def resolved_profile(self) -> TargetProfile:
        overrides = {
            key: getattr(self, key)
            for key in (
                "per_channel",
                "reduce_range",
                "activation_type",
                "weight_type",
                "activation_symmetric",
                "weight_symmetric",
            )
            if getattr(self, key) is not None
        }
        profile = self.profile
        if overrides:
            import dataclasses

            profile = dataclasses.replace(profile, **overrides)
        return profile

    def bound(self) -> AccuracyBound:
        if not self.accuracy_guard:
            return AccuracyBound.off()
        return AccuracyBound(self.min_sqnr_db, self.min_top1, self.metric)

    # -- steps ---------------------------------------------------------------------------
    def _prepare(self, model: ir.Model, workdir: Path) -> tuple[Path, onnx.ModelProto]:
        """A copy with Constant nodes as initializers (ORT quantizes only initializer weights and
        biases), opset >= 13, and inferred shapes; saved for ORT."""
        prepared = model.clone()  # weights shared: the edits below replace, never mutate, tensors
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(
            prepared
        )
        # Exact folding (e.g. Identity of an initializer feeding a Conv bias), so ORT sees the
        # weights and biases as initializers it can quantize.
        onnxscript.optimizer.fold_constants(prepared)
        common_passes.RemoveUnusedNodesPass()(prepared)
        # the opset conversion and shape inference below type sequence values as tensors (ORT
        # then refuses the model): keep their types
        sequence_types = {
            value.name: value.type
            for node in prepared.graph
            for value in node.outputs
            if value.type is not None and not isinstance(value.type, ir.TensorType)
        }
        proto = ir.to_proto(prepared)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is not None and opset < _MIN_OPSET:
            from onnx import version_converter

            try:
                proto = version_converter.convert_version(proto, _MIN_OPSET)
            except Exception as error:
                raise UnsupportedModelError(
                    f"the model's opset {opset} could not be upgraded to {_MIN_OPSET} for per-channel "
                    f"quantization ({type(error).__name__}: {error}); upgrade it with the cleanup pass first."
                ) from error
            logger.info("upgraded opset %d -> %d for QDQ per-channel", opset, _MIN_OPSET)
            prepared = ir.from_proto(proto)
        # onnx-ir's pass hands onnx a copy without the weights (memory: no model-sized copies);
        # shape inference is an aid, ORT's quantizer copes without it (the pass logs failures).
        common_passes.ShapeInferencePass(strict_mode=False)(prepared)
        for node in prepared.graph:
            for value in node.outputs:
                if value.name in sequence_types:
                    value.type = sequence_types[value.name]
        proto = ir.to_proto(prepared)
        path = workdir / "prepared.onnx"
        # the file is exactly ``proto`` (the IR copy may carry stale value types, e.g. sequences)
        saved = ir.from_proto(proto)
        base_dir = _external_base_dir(model)
        if base_dir is not None:  # a copy from a proto lost where the external weights live
            ir.external_data.set_base_dir(saved.graph, base_dir)
        save(saved, path)  # weights > 1 GiB or external go beside it: no 2 GB proto limit
        return path, proto

    @staticmethod
    def _tensors_to_calibrate(proto: onnx.ModelProto, op_types: Sequence[str]) -> list[str]:
        value_types = {}
        for info in [*proto.graph.value_info, *proto.graph.output, *proto.graph.input]:
            if info.type.HasField("tensor_type"):
                value_types[info.name] = info.type.tensor_type.elem_type
        initializers = {i.name for i in proto.graph.initializer}
        wanted = set(op_types)
        names = []
        seen = set()
        for node in proto.graph.node:
            if node.op_type not in wanted:
                continue
            for name in [*node.input, *node.output]:
                if (
                    name
                    and name not in seen
                    and name not in initializers
                    and value_types.get(name) == onnx.TensorProto.FLOAT
                ):
                    seen.add(name)
                    names.append(name)
        return names

    def _statistics(self, prepared: ir.Model, names: list[str], reader, context: PassContext):
        cache = StatisticsCache(self.cache_dir) if self.cache_dir else None
        key = None
        if cache is not None:
            histogram_bins = self.bins if self.method != "minmax" else 0
            # Readers' fingerprints cover the data and the sample limit; moving-average minmax
            # also depends on how the samples are batched.
            data_digest = f"{reader.fingerprint()}|batch={self.batch_size}"
            key = cache.key(model_fingerprint(prepared), data_digest, names, histogram_bins)
            cached = cache.load(key)
            if cached is not None:
                logger.info("statistics cache hit %s", key)
                return cached, True
        collector = collect_statistics(
            prepared,
            names,
            reader,
            bins=self.bins,
            histograms=self.method != "minmax",
            providers=["CPUExecutionProvider"],
        )
        if cache is not None and key is not None:
            cache.store(key, collector)
        return collector, False

    def _ranges(self, collector) -> dict[str, tuple[float, float]]:
        levels = 255
        return {
            name: compute_range(
                stats,
                self.method,
                percentile=self.percentile,
                moving_average=self.moving_average,
                levels=levels,
            )
            for name, stats in collector.tensors.items()
            if stats.batches
        }

    def _quantize_qdq(
        self,
        prepared_path: Path,
        output: Path,
        ranges: dict[str, tuple[float, float]],
        op_types: Sequence[str],
        excluded: Sequence[str],
        profile: TargetProfile,
    ) -> Path:
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
        from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

        proto = load_model_with_shape_infer(prepared_path)
        tensors_range = TensorsData(
            CalibrationMethod.MinMax,
            {
                name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                for name, (lo, hi) in ranges.items()
            },
        )
        quantizer = QDQQuantizer(
            proto,
            profile.per_channel,
            profile.reduce_range,
            _quant_type(profile.weight_type),
            _quant_type(profile.activation_type),
            tensors_range,
            [],
            list(excluded),
            list(op_types),
            {
                "ActivationSymmetric": profile.activation_symmetric,
                "WeightSymmetric": profile.weight_symmetric,
            },
        )
        with _quiet_ort_quantizer():
            quantizer.quantize_model()
        quantizer.model.save_model_to_file(str(output), _has_external_data(prepared_path))
        return output

    def _quantize_dynamic(
        self, prepared_path: Path, output: Path, excluded: Sequence[str], profile: TargetProfile
    ) -> Path:
        from onnxruntime.quantization import quantize_dynamic

        with _quiet_ort_quantizer():
            quantize_dynamic(
                prepared_path,
                output,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=False,
                reduce_range=profile.reduce_range,
                weight_type=_quant_type(profile.weight_type),
                nodes_to_exclude=list(excluded),
                use_external_data_format=_has_external_data(prepared_path),
            )
        return output

    def _candidates(self, proto: onnx.ModelProto) -> list[tuple[str, list[str] | None]]:
        """(label, op types) to try; op types None means dynamic MatMul quantization."""
        present = {n.op_type for n in proto.graph.node}
        all_ops = [op for op in quantizable_op_types() if op in present]
        if self.op_types is not None:
            return [("user op types", list(self.op_types))]
        candidates: list[tuple[str, list[str] | None]] = []
        if self.mode in ("auto", "static"):
            candidates.append(("all quantizable ops", all_ops))
            no_elementwise = [op for op in all_ops if op not in _ELEMENTWISE_OPS]
            if no_elementwise != all_ops:
                candidates.append(("elementwise ops in float", no_elementwise))
            compute_only = [op for op in all_ops if op in _COMPUTE_OPS]
            if compute_only and compute_only != no_elementwise:
                candidates.append(("only Conv/MatMul/Gemm", compute_only))
        initializers = {i.name for i in proto.graph.initializer}
        has_weight_matmul = any(
            n.op_type in ("MatMul", "Gemm") and any(i in initializers for i in n.input[1:2])
            for n in proto.graph.node
        )
        if self.mode == "dynamic" or (self.mode == "auto" and has_weight_matmul):
            candidates.append(("dynamic MatMul/Gemm", None))
        return candidates

    def _slow_int8_nodes(
        self, entry: dict, prepared: ir.Model, proto: onnx.ModelProto, feeds, context
    ) -> dict[str, str]:
        """Compute nodes of ``entry`` whose int8 kernel takes over 3x the median time per
        MAC of its quantized compute nodes, measured with ORT's profiler; with reasons."""
        seconds = node_kernel_seconds(
            entry["path"], feeds, runs=max(5, self.latency_runs), threads=self.threads
        )
        macs = model_stats(prepared, context.sizes).macs_per_node
        already = set(entry.get("excluded", {}))
        quantized = [
            node.name
            for node in proto.graph.node
            if node.op_type in _COMPUTE_OPS
            and node.op_type in entry["op_types"]
            and node.name not in already
        ]
        return slow_nodes(seconds, macs, quantized)

    # -- the pass ------------------------------------------------------------------------
    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        started = time.perf_counter()
        profile = self.resolved_profile()
        data = self.calibration if self.calibration is not None else context.data
        smoke = data is None
        if smoke:
            logger.warning(
                "no calibration data given: using random smoke data; the ranges are meaningless"
            )
            data = "random"
        reader = open_reader(
            data, model, batch_size=self.batch_size, limit=self.samples, sizes=context.sizes
        )
        reader.validate(model)  # before any work
        smoke = smoke or reader.smoke
        with contextlib.ExitStack() as stack:
            workdir = context.workdir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxslim-quant-"))
            )
            workdir = Path(workdir) / "quantize"
            workdir.mkdir(parents=True, exist_ok=True)
            return self._apply(model, context, profile, reader, smoke, workdir, started)

    def _apply(
        self, model, context, profile, reader, smoke, workdir: Path, started: float
    ) -> SlimPassResult:
        summary: dict[str, Any] = {
            "data": reader.describe(),
            "smoke_data": smoke,
            "method": self.method,
            "profile": profile.to_dict(),
            "warnings": list(profile.warnings),
        }
        if smoke:
            summary["warnings"].append("calibrated on random smoke data: not fit for deployment")
        input_path = workdir / "input.onnx"
        save(model, input_path)
        prepared_path, proto = self._prepare(model, workdir)
        prepared = load(prepared_path, check=False)  # external weights resolve beside it
        excluded_by_user, unmatched = select_nodes(proto.graph, self.exclude)
        for selector in unmatched:
            message = f"exclude selector '{selector}' matches no node"
            logger.warning(message)
            summary["warnings"].append(message)
        candidates = self._candidates(proto)
        static_ops = sorted({op for _, ops in candidates if ops for op in ops})
        names = self._tensors_to_calibrate(proto, static_ops)
        calibration_started = time.perf_counter()
        collector, cache_hit = self._statistics(prepared, names, reader, context)
        summary["calibration"] = {
            "samples": collector.samples,
            "tensors": len(names),
            "seconds": round(time.perf_counter() - calibration_started, 3),
            "cache_hit": cache_hit,
            "retained_bytes": collector.retained_bytes(),
        }
        ranges = self._ranges(collector)

        eval_batches = []
        for batch in reader:
            eval_batches.append(batch)
            if sum(len(next(iter(b.values()))) for b in eval_batches) >= self.eval_samples:
                break
        reference_outputs = run_outputs(input_path, eval_batches)
        # The bound is checked on logits where an output is a Sigmoid/Softmax of them.
        logits = output_logits(prepared)
        reference_logits = (
            run_with_logits(prepared_path, eval_batches, logits) if logits else reference_outputs
        )
        bound = self.bound()

        candidate_number = itertools.count()

        def quantize(
            label: str,
            op_types: list[str] | None,
            excluded: Sequence[str],
            entry_ranges: dict[str, tuple[float, float]] | None = None,
        ) -> Path:
            slug = re.sub(r"[^a-z0-9]+", "-", label.lower())
            path = workdir / f"candidate-{next(candidate_number)}-{slug}.onnx"
            if op_types is None:
                return self._quantize_dynamic(prepared_path, path, excluded, profile)
            return self._quantize_qdq(
                prepared_path, path, entry_ranges or ranges, op_types, excluded, profile
            )

        def evaluate(path: Path) -> tuple[Any, list[str]]:
            outputs = run_outputs(path, eval_batches)
            fidelity = compare_outputs(reference_outputs, outputs)
            if not logits:
                return fidelity, bound.violations(fidelity, reference_outputs, outputs)
            candidate_logits = run_with_logits(path, eval_batches, logits)
            logit_fidelity = compare_outputs(reference_logits, candidate_logits)
            fidelity.logits_sqnr_db = logit_fidelity.sqnr_db
            problems = bound.violations(logit_fidelity, reference_logits, candidate_logits)
            return fidelity, [p.replace("output SQNR", "logits SQNR") for p in problems]

        excluded = dict.fromkeys(excluded_by_user, "excluded by the user")
        for name, selector in excluded_by_user.items():
            excluded[name] = f"excluded by the user ('{selector}')"
        # ORT needs a range for every tensor it quantizes: one never finite on the data has none.
        unranged = set(names) - set(ranges)
        for node in proto.graph.node:
            if node.name and node.name not in excluded and unranged & {*node.input, *node.output}:
                excluded[node.name] = "no finite calibration values on its tensors (NaN/Inf)"
        tried = []
        for label, op_types in candidates:
            path = quantize(label, op_types, list(excluded))
            fidelity, problems = evaluate(path)
            tried.append(
                {
                    "label": label,
                    "op_types": op_types,
                    "path": path,
                    "fidelity": fidelity,
                    "problems": problems,
                }
            )

        # Accuracy guard, step 1: a clipping method (percentile/entropy/mse) can cut off the
        # rare large values that carry the signal (digit strokes on a blank page): widen the
        # most clipped ranges back to min/max, most clipped first, until the bound holds.
        clipped = _clipped_tensors(ranges, collector)
        for entry in tried:
            if not entry["problems"] or entry["op_types"] is None or not clipped:
                continue
            best = entry
            counts = sorted({max(1, round(f * len(clipped))) for f in (0.25, 0.5, 1.0)})
            for count in counts:
                widened = {**ranges, **{n: clipped[n] for n in list(clipped)[:count]}}
                path = quantize(entry["label"], entry["op_types"], list(excluded), widened)
                fidelity, problems = evaluate(path)
                trial = dict(fidelity=fidelity, problems=problems, path=path, ranges=widened)
                if not problems or _score(fidelity) > _score(best["fidelity"]):
                    best = {**trial, "widened": count}
                if not problems:
                    break
            if best is not entry:
                entry.update(best)

        # Step 2: on static candidates that still break the bound, keep the most sensitive
        # layers in float.
        sensitivity: dict[str, float] = {}
        for entry in tried:
            if not entry["problems"] or entry["op_types"] is None:
                continue
            node_outputs = {
                n.name: n.output[0]
                for n in proto.graph.node
                if n.op_type in entry["op_types"] and n.output and n.name
            }
            sensitivity, _ = layer_sensitivity(prepared, entry["path"], node_outputs, eval_batches)
            ranked = [
                n
                for n, loss in sorted(sensitivity.items(), key=lambda kv: -kv[1])
                if n not in excluded
            ]
            count = 1
            # At most 6 retries (up to 32 layers in float): beyond that int8 is not worth it here.
            while entry["problems"] and count <= min(len(ranked), 32):
                extra = {
                    n: f"accuracy guard: SQNR loss {sensitivity[n]:.1f} dB" for n in ranked[:count]
                }
                path = quantize(
                    entry["label"], entry["op_types"], [*excluded, *extra], entry.get("ranges")
                )
                fidelity, problems = evaluate(path)
                entry.update(path=path, fidelity=fidelity, problems=problems, excluded=extra)
                count *= 2
        summary["sensitivity_db"] = {
            n: round(v, 2) for n, v in sorted(sensitivity.items(), key=lambda kv: -kv[1])[:20]
        }

        timing_feeds = _timing_feeds(model, eval_batches, self.latency_batch)
        summary["latency_batch"] = len(next(iter(timing_feeds.values())))
        base = next((e for e in tried if not e["problems"] and e["op_types"] is not None), None)
        if base is not None and self.latency_guard:
            # Per node: the int8 kernels that cost far more per MAC than the rest (a 1-channel
            # stem, depthwise or tiny layers, a conversion-bound island) go back to float in
            # an extra candidate; the timing round below decides whether that is faster.
            slow = self._slow_int8_nodes(base, prepared, proto, timing_feeds, context)
            summary["slow_int8_nodes"] = {n: reason for n, reason in slow.items()}
            if slow:
                label = f"{base['label']}, slow int8 nodes in float"
                extra = {**base.get("excluded", {}), **slow}
                path = quantize(label, base["op_types"], [*excluded, *extra], base.get("ranges"))
                fidelity, problems = evaluate(path)
                # the base's op types and (widened) ranges, with the slow nodes in float too
                tried.append(
                    {
                        **base,
                        "label": label,
                        "path": path,
                        "fidelity": fidelity,
                        "problems": problems,
                        "excluded": extra,
                    }
                )
        acceptable = [e for e in tried if not e["problems"]]
        for entry in tried:
            if entry["problems"]:
                entry["rejected"] = "accuracy: " + "; ".join(entry["problems"])
        if acceptable and self.latency_guard:
            # Ranking round: lower quartiles (stable under interference); acceptance below
            # re-measures the chosen one against the input with medians.
            latencies = interleaved_latency(
                [input_path, *[e["path"] for e in acceptable]],
                timing_feeds,
                runs=self.latency_runs,
                threads=self.threads,
                quantile=0.25,
            )
            float_latency = latencies[0]
            for entry, latency in zip(acceptable, latencies[1:]):
                entry["latency_ms"] = latency * 1e3
                entry["speedup"] = float_latency / latency
            summary["latency_ms_before"] = round(float_latency * 1e3, 3)
            fast = [e for e in acceptable if e["speedup"] > self.min_speedup]
            for entry in acceptable:
                if entry not in fast:
                    entry["rejected"] = (
                        f"latency: {entry['speedup']:.2f}x of the input (needs > {self.min_speedup:g}x)"
                    )
            chosen = None
            # Best first; a second, independent interleaved measurement must confirm the gain
            # (one noisy round on a shared machine must not let a slower model through).
            best = max((e["speedup"] for e in fast), default=0.0)

            def preference(entry: dict) -> tuple:
                # Within 10% of the fastest: dynamic MatMuls first (per-batch activation ranges,
                # the best fidelity), then the earlier static candidate (more int8: tensors
                # flowing between integer kernels beat a noisy few percent).
                tied = entry["speedup"] >= 0.9 * best
                if not tied:
                    return (True, -entry["speedup"])
                return (False, -1 if entry["op_types"] is None else tried.index(entry))

            for entry in sorted(fast, key=preference):
                # Sessions created in the other order than in the ranking round, so a bias of
                # creation order (thread pools, memory placement) cannot confirm itself.
                after, before = interleaved_latency(
                    [entry["path"], input_path],
                    timing_feeds,
                    runs=self.latency_runs,
                    threads=self.threads,
                )
                entry["speedup_confirmed"] = before / after
                if before / after > self.min_speedup:
                    entry["speedup"] = min(entry["speedup"], before / after)
                    entry["latency_ms"] = max(entry["latency_ms"], after * 1e3)
                    chosen = entry
                    break
                entry["rejected"] = (
                    f"latency: {before / after:.2f}x of the input on re-measurement "
                    f"(needs > {self.min_speedup:g}x)"
                )
        else:
            chosen = acceptable[0] if acceptable else None
        summary["candidates"] = [
            {
                "label": e["label"],
                "op_types": e["op_types"] if e["op_types"] is not None else "dynamic MatMul/Gemm",
                "fidelity": _fidelity_dict(e["fidelity"]),
                "speedup": round(e["speedup"], 3) if "speedup" in e else None,
                "speedup_confirmed": round(e["speedup_confirmed"], 3)
                if "speedup_confirmed" in e
                else None,
                "extra_float_nodes": len(e.get("excluded", {})),
                "ranges_widened_to_minmax": e.get("widened", 0),
                "chosen": e is chosen,
                "rejected": e.get("rejected"),
            }
            for e in tried
        ]
        size_before = model_file_size(input_path)
        summary["size_bytes_before"] = size_before
        if chosen is None:
            reasons = "; ".join(f"{e['label']}: {e.get('rejected')}" for e in tried)
            summary["fallback"] = (
                f"returned the float model: no int8 candidate was both accurate and faster ({reasons})"
            )
            summary["size_bytes_after"] = size_before
            summary["seconds"] = round(time.perf_counter() - started, 3)
            logger.warning("%s", summary["fallback"])
            return SlimPassResult(model, modified=False, summary=summary)

        excluded.update(chosen.get("excluded", {}))
        chosen_ranges = chosen.get("ranges", ranges)
        summary["chosen"] = chosen["label"]
        summary["fidelity"] = _fidelity_dict(chosen["fidelity"])
        if "latency_ms" in chosen:
            summary["latency_ms_after"] = round(chosen["latency_ms"], 3)
            summary["speedup"] = round(chosen["speedup"], 3)
        summary["size_bytes_after"] = model_file_size(chosen["path"])
        op_types = chosen["op_types"]
        quantized_proto = onnx.load(str(chosen["path"]), load_external_data=False)
        summary["nodes_quantized"] = _quantized_nodes(proto, quantized_proto, op_types)
        not_chosen_ops = sorted(
            {
                n.op_type
                for n in proto.graph.node
                if op_types is not None and n.op_type in static_ops and n.op_type not in op_types
            }
        )
        reasons = {name: reason for name, reason in excluded.items()}
        for node in proto.graph.node:
            if node.op_type in not_chosen_ops and node.name not in reasons:
                reasons[node.name] = f"latency guard: {node.op_type} runs faster in float here"
        summary["nodes_excluded"] = reasons
        if excluded and op_types is not None:
            verdict = float_nodes_after_optimization(
                optimized_graph(chosen["path"], workdir), list(excluded)
            )
            requantized = {
                n: v for n, v in verdict.items() if v not in ("float", "fused or renamed")
            }
            if requantized:
                message = f"ORT re-quantized {len(requantized)} excluded node(s) at load: {', '.join(requantized)}"
                logger.warning(message)
                summary["warnings"].append(message)
            summary["excluded_verified_on_ort_graph"] = verdict
        tensor_sqnr: dict[str, float] = {}
        if op_types is not None:
            # One pass with the chosen model: the SQNR of every tensor that kept its name.
            outputs_of = {f"tensor {name}": name for name in ranges}
            _, tensor_sqnr = layer_sensitivity(
                prepared, chosen["path"], outputs_of, eval_batches[:2]
            )
        summary["tensors"] = {
            name: {
                "range": [round(lo, 6), round(hi, 6)],
                "method": self.method
                if chosen_ranges[name] == ranges[name]
                else f"minmax (accuracy guard: {self.method} clipped too much)",
                "sqnr_db": _finite(tensor_sqnr.get(name)),
            }
            for name, (lo, hi) in chosen_ranges.items()
        }
        summary["seconds"] = round(time.perf_counter() - started, 3)
        result_model = load(chosen["path"])
        _materialize_workdir_weights(result_model, workdir)
        _replace_contents(model, result_model)
        return SlimPassResult(model, modified=True, summary=summary)


def _clipped_tensors(
    ranges: dict[str, tuple[float, float]], collector
) -> dict[str, tuple[float, float]]:
    """Tensors whose range the method clipped below min/max -> their min/max range, the most
    clipped (smallest share of the min/max width kept) first."""
    shares = {}
    for name, (low, high) in ranges.items():
        stats = collector.tensors[name]
        width = stats.maximum - stats.minimum
        if width > 0 and (high - low) < 0.999 * width:
            shares[name] = (high - low) / width
    return {
        name: (collector.tensors[name].minimum, collector.tensors[name].maximum)
        for name in sorted(shares, key=shares.get)
    }


def _score(fidelity) -> float:
    """Higher is better: the logits SQNR where the guard checks logits, else the output SQNR."""
    value = getattr(fidelity, "logits_sqnr_db", None)
    value = fidelity.sqnr_db if value is None else value
    if value is None or np.isnan(value):
        return float("-inf")
    return float(value)


def _external_base_dir(model: ir.Model) -> str | None:
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            return value.const_value.base_dir
    return None


def _has_external_data(path: Path) -> bool:
    """Whether onnxslim's save wrote the model's weights to a side file (> 1 GiB or external)."""
    return Path(f"{path}.data").is_file()


def _materialize_workdir_weights(model: ir.Model, workdir: Path) -> None:
    """Weights memory-mapped from the pass's scratch folder move to memory: the folder goes away
    when the pipeline ends (int8 weights are a quarter of the float model)."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and Path(tensor.base_dir) == workdir.resolve():
            value.const_value = ir.Tensor(np.array(tensor.numpy()), name=tensor.name)


def _fidelity_dict(fidelity) -> dict:
    values = fidelity.to_dict()
    if hasattr(fidelity, "logits_sqnr_db"):
        values["logits_sqnr_db"] = _finite(fidelity.logits_sqnr_db)
    return values


def _finite(value: float | None) -> float | str | None:
    if value is None:
        return None
    return round(float(value), 2) if np.isfinite(value) else ("inf" if value > 0 else "-inf")


def slow_nodes(
    seconds: dict[str, float], macs: dict[str, int], names: Sequence[str], factor: float = 3.0
) -> dict[str, str]:
    """Among ``names`` (at least 4 timed, with MACs), those whose kernel time per MAC is over
    ``factor`` x the median, slowest first, each with the reason."""
    cost = {n: seconds[n] / macs[n] for n in names if n in seconds and macs.get(n)}
    if len(cost) < 4:
        return {}
    median = float(np.median(list(cost.values())))
    return {
        name: (
            f"latency guard: its int8 kernel takes {value / median:.1f}x the median time per "
            f"MAC ({seconds[name] * 1e6:.0f} us per run)"
        )
        for name, value in sorted(cost.items(), key=lambda kv: -kv[1])
        if value > factor * median
    }


def _timing_feeds(model: ir.Model, batches: Sequence[dict], batch: int) -> dict:
    """Feeds of ``batch`` samples (the model's fixed batch wins), cycling the eval samples."""
    feeds = {}
    for name in batches[0]:
        if np.ndim(batches[0][name]) == 0:
            feeds[name] = batches[0][name]
            continue
        size = _fixed_batch(model, name) or batch
        pool = np.concatenate([b[name] for b in batches])
        feeds[name] = np.take(pool, np.arange(size) % len(pool), axis=0)
    return feeds


def _fixed_batch(model: ir.Model, name: str) -> int:
    value = next((v for v in model.graph.inputs if v.name == name), None)
    if (
        value is not None
        and value.shape is not None
        and len(value.shape)
        and isinstance(value.shape[0], int)
    ):
        return value.shape[0]
    return 0


def _quantized_nodes(
    before: onnx.ModelProto, after: onnx.ModelProto, op_types: list[str] | None
) -> list[str]:
    producers = {o: n.op_type for n in after.graph.node for o in n.output}
    after_nodes = {n.name: n for n in after.graph.node}
    quantized = []
    for node in before.graph.node:
        current = after_nodes.get(node.name)
        if current is None or current.op_type != node.op_type:
            if op_types is None and node.op_type in ("MatMul", "Gemm"):
                quantized.append(
                    node.name
                )  # replaced by integer ops (dynamic quantization renames)
        elif op_types is not None and any(
            producers.get(i) == "DequantizeLinear" for i in current.input
        ):
            quantized.append(node.name)
    return quantized


def _replace_contents(model: ir.Model, source: ir.Model) -> None:
    """Makes ``model`` (an in-place pass's object) carry ``source``'s graph."""
    model.graph = source.graph
    model.ir_version = source.ir_version
    model.meta.update(source.meta)


@contextlib.contextmanager
def _quiet_ort_quantizer():
    # ORT's quantizer logs a warning per non-initializer bias through the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
