"""Fusion before placement: the graph fusions ORT would apply at load, applied to the prepared
copy first, so ORT's QDQ quantizer wraps the fused ops (one DequantizeLinear -> HardSwish ->
QuantizeLinear instead of four float elementwise ops between int8 Convs).

Only fusions to standard ONNX ops (the QDQ quantizer and every provider take them): BatchNorm
into Conv/ConvTranspose/Gemm, Conv + constant Mul/Add, HardSigmoid/HardSwish chains, the
decomposed LayerNorm. Each is verified like a cleanup step: the fused model's outputs must
match the unfused model's on the samples within a scale-aware tolerance, else that fusion is
dropped for this model with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.inputs import DefaultSizeError, random_inputs, runnable_sizes
from onnxslim.model import SEGMENT_THRESHOLD_BYTES, onnx_opset
from onnxslim.runtime import create_session

__all__ = ["FusionReport", "fuse_for_quantization", "outputs_match"]

Feeds = Mapping[str, np.ndarray]
# The opset each fusion's op needs. From 13 to 17 no op's inference semantics changed (types and
# new ops were added; ReduceMean takes axes as an input only from 18), so a model at 13..16 is
# declared at the needed opset for that fusion; the exactness check verifies it.
FUSION_OPSETS = {"batchnorm": 1, "conv_affine": 1, "hardswish": 14, "layer_norm": 17}
# The op types a rule's patterns need (any one set of them, all present): a model without
# them skips the rule untried, and one without any skips onnxscript's import (0.3 s) as well.
FUSION_ANCHORS: dict[str, tuple[frozenset[str], ...]] = {
    "batchnorm": (frozenset({"BatchNormalization"}),),
    "conv_affine": (frozenset({"Conv", "Mul", "Add"}),),  # Conv(x * s + o), Conv(x) * s + o
    "hardswish": (frozenset({"HardSigmoid", "Mul"}), frozenset({"Clip"})),
    "layer_norm": (frozenset({"ReduceMean"}),),
}
BUMPABLE_OPSETS = range(13, 18)


@dataclasses.dataclass(frozen=True)
class FusionReport:
    """Fusions applied (name -> count, verified exact), dropped or not tried (name -> why), and
    the declared opset change a fusion's op needed ("13 -> 14"; None: none)."""

    applied: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    opset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"applied": dict(self.applied), "skipped": dict(self.skipped), "opset": self.opset}


def outputs_match(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> str | None:
    """None when every output is within ``atol + rtol * max|reference output|``, else why not."""
    for sample, (ref_outputs, cand_outputs) in enumerate(zip(reference, candidate, strict=True)):
        for index, (ref, cand) in enumerate(zip(ref_outputs, cand_outputs, strict=True)):
            ref, cand = np.asarray(ref), np.asarray(cand)
            if ref.shape != cand.shape:
                return f"output {index} changed shape {ref.shape} -> {cand.shape}"
            if not np.issubdtype(ref.dtype, np.floating):
                if not np.array_equal(ref, cand):
                    return f"output {index} (integer) differs on sample {sample}"
                continue
            ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
            scale = float(np.nanmax(np.abs(ref64))) if ref.size else 0.0
            error = float(np.nanmax(np.abs(ref64 - cand64))) if ref.size else 0.0
            if not np.array_equal(np.isnan(ref64), np.isnan(cand64)) or error > atol + rtol * scale:
                return (
                    f"output {index} moved by {error:.3g} on sample {sample} "
                    f"(allowed {atol + rtol * scale:.3g}: {rtol:g} of its scale {scale:.3g})"
                )
    return None


def _run(model: ir.Model, samples: Sequence[Feeds]) -> list[list[np.ndarray]]:
    session = create_session(model)
    return [list(session.run(None, dict(feeds))) for feeds in samples]


def _write_default_keepdims(model: ir.Model) -> None:
    """Writes out ReduceMean's default ``keepdims=1`` where the node leaves it implicit: the
    LayerNorm pattern names it, and torch's exporter omits defaults (MiniLM at opset 14 fused
    none of its 13 LayerNorms for that reason alone). Same semantics; the check verifies it."""
    for graph in model.graphs():
        for node in graph:
            if node.op_type == "ReduceMean" and node.domain in ("", "ai.onnx"):
                if "keepdims" not in node.attributes:
                    node.attributes["keepdims"] = ir.Attr("keepdims", ir.AttributeType.INT, 1)


def fuse_for_quantization(
    model: ir.Model,
    *,
    fuse: bool = True,
    samples: Sequence[Feeds] | None = None,
    sizes: Mapping[str, Any] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> tuple[ir.Model, FusionReport]:
    """``model`` with the exact fusions applied (a new model when any is; ``model`` itself is
    not modified), and what was applied or dropped.

    ``samples`` (default: two random feeds) are the inputs the exactness check runs on.
    """
    report = FusionReport()
    if not fuse:
        return model, report
    weights = sum(
        value.const_value.nbytes
        for graph in model.graphs()
        for value in graph.initializers.values()
        if value.const_value is not None
    )
    if weights > SEGMENT_THRESHOLD_BYTES:
        # the exactness check runs the whole model at once: past the segmenting threshold that
        # would hold every weight in memory (2.7 GiB on a 2.25 GiB model instead of 0.9 GiB)
        report.skipped["all"] = (
            f"{weights / (1 << 30):.2f} GiB of weights: fusions are skipped above "
            f"{SEGMENT_THRESHOLD_BYTES >> 30} GiB (their check would load the whole model)"
        )
        return model, report
    first_opset = onnx_opset(model) or 0
    present = {node.op_type for graph in model.graphs() for node in graph}
    anchored = [n for n, sets in FUSION_ANCHORS.items() if any(s <= present for s in sets)]
    if not anchored:
        return model, report
    from onnxslim.compat.onnxscript import quantization_fusion_rules  # onnxscript: when used

    rules = {n: apply for n, apply in quantization_fusion_rules().items() if n in anchored}
    if not samples:  # sizes at which the model runs (a decoder's cache: a decode step)
        with contextlib.suppress(DefaultSizeError):
            sizes = runnable_sizes(model, sizes)
    feeds = list(samples or [random_inputs(model, sizes, seed=seed) for seed in range(2)])
    reference = None  # the float outputs, run only once a rule has something to fuse
    current = model
    for name, apply in rules.items():
        needed = FUSION_OPSETS[name]
        declared = onnx_opset(current) or 0
        if declared < needed and declared not in BUMPABLE_OPSETS:
            report.skipped[name] = f"opset {declared} < {needed} (upgrade to 13 or more first)"
            continue
        candidate = current.clone()  # weights shared; a rewrite replaces, never mutates, them
        if declared < needed:
            candidate.opset_imports[""] = needed
        if name == "layer_norm":  # its check reads x's rank: shapes first (a copy's)
            _write_default_keepdims(candidate)
            ir.passes.common.ShapeInferencePass(strict_mode=False)(candidate)
        count = apply(candidate)
        if not count:
            continue
        if reference is None:
            reference = _run(model, feeds)
        problem = outputs_match(reference, _run(candidate, feeds), rtol=rtol, atol=atol)
        if problem is None:
            current = candidate
            report.applied[name] = int(count)
        else:
            report.skipped[name] = f"not exact on this model: {problem}"
    final_opset = onnx_opset(current) or 0
    if final_opset != first_opset:
        report = dataclasses.replace(report, opset=f"{first_opset} -> {final_opset}")
    return current, report
