"""QuantizeWeightsInt4: constant MatMul weights as 4-bit blocks (ORT's ``MatMulNBits``), guarded.

Weight-only: activations stay float, so no activation calibration (GPTQ alone reads data, to
weigh the rounding by the inputs' Hessian). ORT's ``matmul_nbits_quantizer`` does the packing
(through ``onnxslim.compat.onnxruntime``); we choose the MatMuls, say why the others stay float,
and keep the two guards of int8: a fidelity bound (mean cosine and/or SQNR of the outputs on the
verification samples) and "never slower" (interleaved medians, confirmed twice).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim import (
    PassContext,
    RecipeError,
    SlimPass,
    SlimPassResult,
    compare_outputs,
    model_file_size,
    save,
)
from onnxslim.fidelity import FidelityBounds
from onnxslim.inputs import open_samples
from onnxslim.options import option
from onnxslim.passes.quantization._accuracy_guard import run_outputs
from onnxslim.passes.quantization._candidates import Candidate, Evaluation, Rejected
from onnxslim.passes.quantization._int4_search import promotion_steps, restore_gains
from onnxslim.passes.quantization._latency_guard import rank_and_confirm, timing_feeds
from onnxslim.passes.quantization._quantize_static import _replace_contents_in_place

__all__ = ["Int4Options", "QuantizeWeightsInt4", "int4_matmuls", "mean_cosine"]

logger = logging.getLogger(__name__)

Outputs = Sequence[Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Int4Options:
    """Options of the ``quantize_int4`` pass."""

    block_size: int | None = option(
        None,
        help="weights per quantization block along K (a power of two >= 16; smaller: more accurate, larger file, slower); None: 128 (rtn, hqq), 32 (gptq)",
    )
    algorithm: Literal["rtn", "hqq", "gptq"] = option(
        "rtn",
        help="rtn (round to nearest, ORT's C++ kernel), hqq (half-quadratic, no data), gptq (needs calibration data)",
    )
    symmetric: bool = option(
        False,
        help="symmetric blocks (no zero points; rtn only): a level less, blocks off zero suffer",
    )
    accuracy_level: int | None = option(
        4,
        help="MatMulNBits accuracy_level: 4 computes in int8 (fastest on CPU), 1 in float32; None: ORT's default",
    )
    calibration: Any = option(
        None,
        help="gptq's calibration data (anything the data door takes); None: the pipeline's data",
    )
    samples: int = option(32, help="calibration samples gptq reads")
    exclude: Sequence[str] = option((), help="MatMul node names kept in float")
    sensitive_bits: int | None = option(
        8,
        help="when 4-bit everywhere breaks the bound, the MatMuls whose float restore gains most get blocks of this many bits (8), top 1, 2, 4 ... then all; None: no fallback",
    )
    sensitive_block_size: int = option(
        128, help="block size of the sensitive MatMuls' 8-bit blocks (symmetric, rtn)"
    )
    accuracy_guard: bool = option(True, help="return the float model when the bound does not hold")
    min_cosine: float | None = option(
        0.99, help="mean cosine of each output to the float model's; None turns it off"
    )
    min_sqnr_db: float | None = option(None, help="output SQNR bound (dB); None turns it off")
    eval_samples: int = option(8, help="samples the guards judge on (the verification data first)")
    latency_guard: bool = option(True, help="time int4 vs the input; never return a slower model")
    latency_runs: int = option(10, help="interleaved timing rounds (medians)")
    latency_batch: int = option(1, help="batch the latency guard times at (the fixed batch wins)")
    min_speedup: float = option(
        1.0, help="int4 must beat the input by this factor in two interleaved measurements"
    )
    threads: int | None = option(None, help="intra-op threads for timing (None: ORT's default)")


def int4_matmuls(
    proto: onnx.ModelProto, exclude: Sequence[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """(MatMuls MatMulNBits can replace, {other MatMul: why it stays float}) in the main graph.

    Unnamed nodes are named here: ORT excludes nodes by name, and gptq's sort keys nodes by name.
    """
    weights = {tensor.name: tensor for tensor in proto.graph.initializer}
    used = {node.name for node in proto.graph.node}
    eligible: list[str] = []
    skipped: dict[str, str] = {}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
            while node.name in used:
                node.name += "_"
            used.add(node.name)
        if node.op_type != "MatMul":
            continue
        weight = weights.get(node.input[1])
        dims = list(weight.dims) if weight is not None else []
        if node.name in exclude:
            skipped[node.name] = "excluded by the user"
        elif weight is None:
            skipped[node.name] = "its B input is an activation, not a constant weight"
        elif weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            skipped[node.name] = (
                f"weight type {onnx.TensorProto.DataType.Name(weight.data_type)} is not float"
            )
        elif len(dims) < 2 or any(d != 1 for d in dims[:-2]):
            skipped[node.name] = (
                f"weight shape {dims} is not [K, N] (MatMulNBits takes 2-D weights)"
            )
        else:
            eligible.append(node.name)
    return eligible, skipped


def mean_cosine(reference: Outputs, candidate: Outputs) -> float:
    """Mean over samples and float outputs of the cosine between the flattened outputs (1.0 when
    a pair is all zeros in both)."""
    values = []
    for ref_outputs, cand_outputs in zip(reference, candidate, strict=True):
        for name, ref in ref_outputs.items():
            if not np.issubdtype(ref.dtype, np.floating) or ref.size == 0:
                continue
            a = ref.astype(np.float64).ravel()
            b = np.asarray(cand_outputs[name], dtype=np.float64).ravel()
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            values.append(
                1.0
                if norms == 0.0 and not a.any() and not b.any()
                else float(a @ b) / max(norms, 1e-300)
            )
    return float(np.mean(values)) if values else 1.0


class QuantizeWeightsInt4(SlimPass):
    """Int4 weight-only MatMuls (``com.microsoft.MatMulNBits``, run natively by ORT's CPU).

    ``QuantizeWeightsInt4(algorithm="hqq", block_size=64)``; options in :class:`Int4Options`.
    """

    Options: ClassVar[type] = Int4Options
    settings: Int4Options
    name = "quantize_int4"
    description = (
        "Int4 weight-only MatMuls (MatMulNBits: RTN, HQQ or GPTQ), cosine and latency guards."
    )
    exact = False

    def __init__(self, options: Any = None, /, **values: Any) -> None:
        super().__init__(options, **values)
        _check_options(self.settings)

    def bound(self) -> FidelityBounds:
        if not self.accuracy_guard:
            return FidelityBounds.off()
        return FidelityBounds(min_sqnr_db=self.min_sqnr_db)

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        started = time.perf_counter()
        proto = ir.to_proto(model)
        eligible, skipped = int4_matmuls(proto, self.exclude)
        summary: dict[str, Any] = {
            "algorithm": self.algorithm,
            "block_size": self._block_size(),
            "symmetric": self.symmetric if self.algorithm == "rtn" else False,
            "accuracy_level": self.accuracy_level,
            "matmuls_skipped": skipped,
        }
        if not eligible:
            return _unchanged(model, summary, "no MatMul with a constant 2-D float weight", started)
        with tempfile.TemporaryDirectory(prefix="onnxslim-int4-", dir=context.workdir) as folder:
            workdir = Path(folder)
            input_path, output_path = workdir / "input.onnx", workdir / "int4.onnx"
            save(model, input_path)
            batches, judged_on = self._guard_samples(model, context)
            summary["judged_on"] = judged_on
            calibration = self._calibration(model, context) if self.algorithm == "gptq" else None
            quantized = self._quantized(proto, skipped, calibration)
            _saved(quantized, output_path)
            converted = sum(node.op_type == "MatMulNBits" for node in quantized.graph.node)
            summary["matmuls_converted"] = summary["matmuls_tried"] = converted
            summary["size_bytes_before"] = model_file_size(input_path)
            candidate = self._judge(input_path, output_path, batches, summary)
            if self._falls_back() and candidate.evaluation.problems:
                original = ir.to_proto(model)  # afresh: ORT consumed the first one
                int4_matmuls(original, self.exclude)  # the same names for unnamed nodes
                found = self._promote(original, quantized, eligible, skipped, calibration, batches)
                if found is not None:
                    quantized, eight = found
                    _saved(quantized, output_path)
                    summary["matmuls_8bit"] = eight
                    candidate = self._judge(input_path, output_path, batches, summary)
            summary["size_bytes_after"] = model_file_size(output_path)
            if candidate.rejected is None and self.latency_guard:
                candidate = self._time(model, input_path, candidate, batches, summary)
            if candidate.rejected is not None:
                summary["size_bytes_after"] = summary["size_bytes_before"]
                return _unchanged(model, summary, str(candidate.rejected), started)
            result = ir.from_proto(quantized)  # weights in memory: the folder goes away
        _replace_contents_in_place(model, result)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        return SlimPassResult(model, modified=True, summary=summary)

    def _block_size(self) -> int:
        """128 unless set: ORT's int8-activation kernel is slower on small blocks (all-MiniLM-L6-v2,
        1 thread, seq 18: blocks of 32 shipped 1.24x over fp32, of 128 1.37x, at a higher cosine).
        gptq keeps 32: ORT's port fails to pack zero points with one block per column."""
        if self.block_size is not None:
            return self.block_size
        return 32 if self.algorithm == "gptq" else 128

    def _falls_back(self) -> bool:
        return self.accuracy_guard and self.sensitive_bits is not None

    def _quantized(
        self,
        proto: onnx.ModelProto,
        skipped: Mapping[str, str],
        calibration: list[dict] | None,
        eight: Sequence[str] = (),
        eligible: Sequence[str] = (),
    ) -> onnx.ModelProto:
        """4-bit MatMulNBits for the eligible MatMuls, 8-bit (rtn, symmetric) for ``eight``."""
        from onnxslim.compat.onnxruntime import matmul_nbits_quantized

        if eight:
            proto = matmul_nbits_quantized(
                proto,
                algorithm="rtn",
                block_size=self.sensitive_block_size,
                symmetric=True,
                accuracy_level=self.accuracy_level,
                nodes_to_exclude=[*skipped, *(n for n in eligible if n not in eight)],
                bits=self.sensitive_bits or 8,
            )
        return matmul_nbits_quantized(
            proto,
            algorithm=self.algorithm,
            block_size=self._block_size(),
            symmetric=self.symmetric,
            accuracy_level=self.accuracy_level,
            nodes_to_exclude=list(skipped),
            calibration=calibration,
        )

    def _promote(
        self,
        original: onnx.ModelProto,
        quantized: onnx.ModelProto,
        eligible: Sequence[str],
        skipped: Mapping[str, str],
        calibration: list[dict] | None,
        batches: list[dict],
    ) -> tuple[onnx.ModelProto, list[str]] | None:
        """The first mix (most sensitive MatMuls at 8-bit) whose score holds the bound, else the
        last one tried when it beats 4-bit everywhere; None when nothing was tried."""
        with tempfile.TemporaryDirectory(prefix="onnxslim-int4-search-") as folder:
            reference = run_outputs(_saved(original, Path(folder) / "float.onnx"), batches)
            score = _scorer(self, reference, batches)
            gains = restore_gains(quantized, original, eligible, score, Path(folder), _saved)
            found = None
            for eight in promotion_steps(gains):
                mixed = self._quantized(
                    copy.deepcopy(original), skipped, calibration, eight, eligible
                )
                found = (mixed, list(eight))
                if self._holds(score(_saved(mixed, Path(folder) / "mixed.onnx"))):
                    break
        return found

    def _holds(self, value: float) -> bool:
        bound = self.min_cosine if self.min_cosine is not None else self.min_sqnr_db
        return bound is None or value >= bound

    def _guard_samples(self, model: ir.Model, context: PassContext) -> tuple[list[dict], str]:
        """The pipeline's verification samples, else the calibration data's, else random inputs."""
        if context.sample_inputs:
            return [
                dict(feeds) for feeds in context.sample_inputs[: self.eval_samples]
            ], "verification samples"
        data = self.calibration if self.calibration is not None else context.data
        origin = "calibration data" if data is not None else "random inputs (no data given)"
        reader = open_samples(
            data if data is not None else "random",
            model,
            limit=self.eval_samples,
            sizes=context.sizes,
        )
        return [dict(feeds) for feeds in reader], origin

    def _calibration(self, model: ir.Model, context: PassContext) -> list[dict]:
        data = self.calibration if self.calibration is not None else context.data
        if data is None:
            raise RecipeError(
                "int4 'gptq' needs calibration data: give calibration= (or --data), or use algorithm 'rtn'."
            )
        reader = open_samples(data, model, limit=self.samples, sizes=context.sizes)
        return [dict(feeds) for feeds in reader]

    def _judge(
        self, input_path: Path, output_path: Path, batches: list[dict], summary: dict[str, Any]
    ) -> Candidate:
        reference = run_outputs(input_path, batches)
        outputs = run_outputs(output_path, batches)
        fidelity = compare_outputs(reference, outputs)
        problems = self.bound().violations(fidelity, reference, outputs)
        cosine = mean_cosine(reference, outputs)
        if self.accuracy_guard and self.min_cosine is not None and cosine < self.min_cosine:
            problems.append(f"mean output cosine {cosine:.4f} < {self.min_cosine:g}")
        summary["fidelity"] = {**fidelity.to_dict(), "mean_cosine": round(cosine, 6)}
        evaluation = Evaluation(fidelity, tuple(problems))
        rejected = Rejected("accuracy: " + "; ".join(problems)) if problems else None
        label = f"int4 {self.algorithm}, block {self._block_size()}"
        return Candidate(label, ("MatMul",), output_path, evaluation, rejected=rejected)

    def _time(
        self,
        model: ir.Model,
        input_path: Path,
        candidate: Candidate,
        batches: list[dict],
        summary: dict[str, Any],
    ) -> Candidate:
        feeds = timing_feeds(model, batches, self.latency_batch)
        verdict = rank_and_confirm(
            [candidate],
            input_path,
            feeds,
            runs=self.latency_runs,
            threads=self.threads,
            min_speedup=self.min_speedup,
        )
        timed = verdict.candidates[0]
        summary["latency_ms_before"] = round(verdict.float_latency_ms, 3)
        if timed.latency_ms is not None:
            summary["latency_ms_after"] = round(timed.latency_ms, 3)
            summary["speedup"] = round(timed.speedup or 0.0, 3)
        return timed


def _check_options(options: Int4Options) -> None:
    from onnxslim.compat.onnxruntime import INT4_ALGORITHMS

    if options.algorithm not in INT4_ALGORITHMS:
        raise RecipeError(
            f"int4 algorithm '{options.algorithm}' is not supported; use one of {', '.join(INT4_ALGORITHMS)}."
        )
    size = options.block_size
    if size is not None and (size < 16 or size & (size - 1)):
        raise RecipeError(f"int4 block_size must be a power of two >= 16, got {size}.")
    if options.accuracy_level not in (None, 0, 1, 2, 3, 4):
        raise RecipeError(
            f"int4 accuracy_level must be 0..4 (or unset), got {options.accuracy_level}."
        )
    if options.sensitive_bits not in (None, 8):
        raise RecipeError(
            f"int4 sensitive_bits must be 8 (or unset), got {options.sensitive_bits}."
        )
    if options.algorithm == "hqq" and options.symmetric:
        logger.info("int4 hqq blocks are asymmetric (zero points); 'symmetric' applies to rtn only")
    for name in ("eval_samples", "latency_runs", "latency_batch", "samples"):
        if getattr(options, name) < 1:
            raise RecipeError(f"int4 {name} must be >= 1, got {getattr(options, name)}.")


def _unchanged(
    model: ir.Model, summary: dict[str, Any], reason: str, started: float
) -> SlimPassResult:
    summary["matmuls_converted"] = 0
    summary["fallback"] = f"returned the float model: {reason}"
    summary["seconds"] = round(time.perf_counter() - started, 3)
    logger.warning("%s", summary["fallback"])
    return SlimPassResult(model, modified=False, summary=summary)


def _saved(proto: onnx.ModelProto, path: Path) -> Path:
    save(ir.from_proto(proto), path)  # onnxslim's save: external data past 2 GB
    return path


def _scorer(pass_: QuantizeWeightsInt4, reference: Outputs, batches: list[dict]) -> Callable:
    """The guard's metric on a file: mean cosine when the cosine bound is on, else output SQNR."""

    def score(path: Path) -> float:
        outputs = run_outputs(path, batches)
        if pass_.min_cosine is not None or pass_.min_sqnr_db is None:
            return mean_cosine(reference, outputs)
        return float(compare_outputs(reference, outputs).sqnr_db)

    return score
