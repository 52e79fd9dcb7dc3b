"""Accuracy recovery before falling back to float: cross-layer equalization, SmoothQuant, bias
correction and quantization-aware distillation (QAT-KD), each a candidate the guards measure.

``recover`` runs after the accuracy guard. A method set to True is always tried, None (the
default for the cheap ones) only when no candidate met the bound, False never; QAT-KD runs when
``qat_epochs`` > 0 and the cheap ones left the bound failing. The report's ``recovery`` entry
says what each method did and the score (dB) it reached against the best candidate before.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim import RecipeError
from onnxslim.inputs import samples_in
from onnxslim.model import SEGMENT_THRESHOLD_BYTES, ValueProbe, proto_weight_bytes
from onnxslim.passes.quantization._bias_correction import bias_shifts, fold_bias_shifts
from onnxslim.passes.quantization._calibrate import collect_ranges
from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.passes.quantization._equalize import equalize
from onnxslim.passes.quantization._smoothquant import smooth, smoothing_targets
from onnxslim.passes.quantization._tensors import tensors_to_calibrate

__all__ = ["Variant", "beaten_base", "check_recovery_options", "recover"]

logger = logging.getLogger(__name__)

Ranges = Mapping[str, tuple[float, float]]

# samples the per-channel statistics (SmoothQuant maxima, bias shifts) read: means and maxima
# settle long before the calibration data ends, and big models pay per sample
STATISTICS_SAMPLES = 64


@dataclasses.dataclass(frozen=True)
class Variant:
    """A float model the candidates are emitted from (the prepared one, or a recovered copy)."""

    proto: onnx.ModelProto
    emitter: Emitter
    ranges: Ranges


def check_recovery_options(options: Any) -> None:
    """Refuses bad recovery options before any work."""
    if not 0.0 <= options.smooth_quant_alpha <= 1.0:
        raise RecipeError(
            f"smooth_quant_alpha must be in [0, 1], got {options.smooth_quant_alpha}."
        )
    if options.qat_epochs < 0 or not options.qat_lr > 0:
        raise RecipeError(
            f"qat_epochs must be >= 0 and qat_lr > 0, got {options.qat_epochs} and {options.qat_lr}."
        )


def _wanted(setting: bool | None, failing: bool) -> bool:
    return setting is True or (setting is None and failing)


def _base_candidate(tried: list[Candidate]) -> Candidate | None:
    """The static candidate to recover: fewest extra float nodes, then the best score."""
    static = [c for c in tried if not c.dynamic and c.rejected is None]
    if not static:
        return None
    return max(static, key=lambda c: (-len(c.excluded), c.evaluation.score))


def beaten_base(options: Any, searches_skipped: Mapping[str, str], label: str) -> str | None:
    """Why automatic recovery of the candidate ``label`` cannot win (None: it may): the
    accuracy guard timed it no faster than an accurate candidate (``searches_skipped``), and CLE,
    SmoothQuant and bias correction change weights and scales, not the kernels that run. A
    method the user asked for (or QAT-KD) always runs."""
    requested = options.qat_epochs > 0 or True in (
        options.equalize,
        options.smooth_quant,
        options.bias_correction,
    )
    if label not in searches_skipped or requested:
        return None
    return (
        f"'{label}' was timed no faster than an accurate candidate (see searches_skipped): "
        "recovering its weights and scales cannot make it faster"
    )


def recover(quantize: Any, run: Any, reader: Any, tried: list[Candidate]) -> list[Candidate]:
    """``tried`` plus a candidate per recovery method that ran; the report in ``run.summary``."""
    options = quantize.settings
    # the bound failed before the accuracy guard kept layers in float: recovering int8 beats it
    failing = not any(c.evaluation.accurate for c in tried if not c.excluded)
    plan = [
        name
        for name, setting in (
            ("equalize", options.equalize),
            ("smooth_quant", options.smooth_quant),
            ("bias_correction", options.bias_correction),
        )
        if _wanted(setting, failing)
    ]
    if options.qat_epochs > 0:
        plan.append("qat")
    if not plan:
        return tried
    report: dict[str, Any] = {"triggered_by": "bound failed" if failing else "requested"}
    run.summary["recovery"] = report
    base = _base_candidate(tried)
    if base is None or base.op_types is None:
        report["skipped"] = "no static int8 candidate to recover"
        return tried
    cannot_win = beaten_base(options, run.summary.get("searches_skipped", {}), base.label)
    if cannot_win is not None:
        report["skipped"] = cannot_win
        return tried
    external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in run.prepared.proto.graph.initializer
    )
    if external or proto_weight_bytes(run.prepared.proto.graph) > SEGMENT_THRESHOLD_BYTES:
        report["skipped"] = (
            "the weights are external or exceed 1 GiB (recovery edits a copy in memory)"
        )
        return tried
    if base.excluded:  # recover the op set with every layer in int8, not the guard's fallback
        path = run.emitter.emit(f"{base.label}, all int8", base.op_types, run.excluded, base.ranges)
        base = base.replace(path=path, evaluation=run.evaluator.evaluate(path), excluded={})
    report["base"] = {"candidate": base.label, "score_db": _rounded(base.evaluation.score)}
    recovery = _Recovery(quantize, run, reader, base, report)
    best = (base, Variant(run.prepared.proto, run.emitter, base.ranges or run.calibration.ranges))
    for method in ("equalize", "smooth_quant"):
        if method in plan:
            best = recovery.try_variant(method, best)
    if "bias_correction" in plan:
        best = recovery.try_bias_correction(best)
    if "qat" in plan and not any(
        c.evaluation.accurate for c in [*tried, *recovery.added] if not c.excluded
    ):
        recovery.try_qat(best)
    elif "qat" in plan:
        report["qat"] = {"skipped": "an all-int8 candidate already meets the bound"}
    return [*tried, *recovery.added]


def _rounded(value: float) -> float | None:
    return round(value, 2) if np.isfinite(value) else None


class _Recovery:
    """One run's recovery attempts: each emits a candidate, evaluates it and reports."""

    def __init__(
        self, quantize: Any, run: Any, reader: Any, base: Candidate, report: dict[str, Any]
    ) -> None:
        self.quantize, self.run, self.reader, self.base = quantize, run, reader, base
        self.report = report
        self.added: list[Candidate] = []

    def _record(
        self,
        method: str,
        candidate: Candidate,
        best: tuple[Candidate, Variant],
        variant: Variant,
        **facts: Any,
    ) -> tuple[Candidate, Variant]:
        self.added.append(candidate)
        before = best[0].evaluation.score
        after = candidate.evaluation.score
        self.report[method] = {
            "candidate": candidate.label,
            "score_db_before": _rounded(before),
            "score_db": _rounded(after),
            "accurate": candidate.evaluation.accurate,
            **facts,
        }
        logger.info("recovery %s: %.2f dB -> %.2f dB", method, before, after)
        better = candidate.evaluation.accurate or after > before
        return (candidate, variant) if better else best

    def _emit(self, method: str, variant: Variant, label: str) -> Candidate:
        base = self.base
        excluded = [*self.run.excluded, *base.excluded]
        path = variant.emitter.emit(label, base.op_types, excluded, variant.ranges)
        return base.replace(
            label=label,
            path=path,
            evaluation=self.run.evaluator.evaluate(path),
            ranges=variant.ranges,
            widened=0,
        )

    def _variant(self, method: str, proto: onnx.ModelProto, ranges: Ranges | None) -> Variant:
        """``proto`` saved in its own folder with an emitter; calibrated anew unless ``ranges``."""
        folder = Path(self.run.workdir) / f"recovery-{method.replace('_', '-')}"
        folder.mkdir(exist_ok=True)
        proto = onnx.shape_inference.infer_shapes(proto)
        path = folder / "prepared.onnx"
        onnx.save(proto, str(path))
        if ranges is None:
            names = tensors_to_calibrate(proto, self.run.static_ops)
            settings = self.quantize.calibration_settings()
            ranges = collect_ranges(ir.from_proto(proto), names, self.reader, settings).ranges
        profile = self.quantize.resolved_profile()
        return Variant(proto, Emitter(path, folder, profile, ranges), ranges)

    def try_variant(
        self, method: str, best: tuple[Candidate, Variant]
    ) -> tuple[Candidate, Variant]:
        """Equalization or SmoothQuant of the prepared model, recalibrated and emitted."""
        proto = copy.deepcopy(self.run.prepared.proto)
        if method == "equalize":
            changed = equalize(proto)
            facts: dict[str, Any] = {"pairs": changed}
            none = "no Conv -> ReLU -> Conv pairs"
        else:
            alpha = self.quantize.settings.smooth_quant_alpha
            smoothed = smooth(proto, self._channel_max(proto), alpha)
            changed = len(smoothed)
            facts = {"alpha": alpha, "tensors": smoothed}
            none = "no MatMul input with outlier channels"
        if not changed:
            self.report[method] = {"skipped": none}
            return best
        variant = self._variant(method, proto, None)
        candidate = self._emit(method, variant, f"{self.base.label}, {method.replace('_', ' ')}")
        return self._record(method, candidate, best, variant, **facts)

    def _statistics_batches(self) -> Iterator[dict]:
        """The first STATISTICS_SAMPLES samples of the calibration data, in its batches."""
        seen = 0
        for batch in self.reader:
            yield batch
            seen += samples_in(batch, self.reader)
            if seen >= STATISTICS_SAMPLES:
                return

    def _channel_max(self, proto: onnx.ModelProto) -> dict[str, np.ndarray]:
        """Per-channel (last axis) max |x| of each SmoothQuant target's input on the data."""
        names = list(smoothing_targets(proto))
        if not names:
            return {}
        probe = ValueProbe(ir.from_proto(proto), names)
        maxima: dict[str, np.ndarray] = {}
        for batch in self._statistics_batches():
            for name, value in probe.run(batch, names).items():
                value = np.abs(np.asarray(value, dtype=np.float32))
                found = value.reshape(-1, value.shape[-1]).max(axis=0)
                maxima[name] = np.maximum(maxima[name], found) if name in maxima else found
        return maxima

    def try_bias_correction(self, best: tuple[Candidate, Variant]) -> tuple[Candidate, Variant]:
        candidate, variant = best
        shifts = bias_shifts(candidate.path, variant.proto, self._statistics_batches())
        if not shifts:
            self.report["bias_correction"] = {
                "skipped": "no Conv/Gemm/MatMul+Add with int8 weights"
            }
            return best
        proto = fold_bias_shifts(variant.proto, shifts)
        corrected = self._variant("bias_correction", proto, variant.ranges)
        emitted = self._emit("bias_correction", corrected, f"{candidate.label}, bias corrected")
        largest = max(float(np.abs(s).max()) for s in shifts.values())
        return self._record(
            "bias_correction", emitted, best, corrected, layers=len(shifts), largest_shift=largest
        )

    def try_qat(self, best: tuple[Candidate, Variant]) -> None:
        from onnxslim.passes.quantization._qat import qat_candidate

        candidate, variant = best
        try:
            trained, facts = qat_candidate(
                self.quantize, self.run, self.reader, candidate, variant.proto
            )
        except ImportError as error:  # torch is an extra
            self.report["qat"] = {"skipped": f"needs PyTorch ({error})"}
            return
        self._record("qat", trained, best, variant, **facts)
