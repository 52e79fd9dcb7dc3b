"""Target profiles: quantization types and flags per deployment target, from the CPU's int8 features."""

from __future__ import annotations

import dataclasses
import logging

from onnxslim import RecipeError
from onnxslim.runtime import CpuFeatures, cpu_features

__all__ = ["TargetProfile", "target_profile", "TARGETS"]

logger = logging.getLogger(__name__)

TARGETS = ("cpu", "tensorrt", "cuda")


@dataclasses.dataclass(frozen=True)
class TargetProfile:
    """Types and flags for ORT's quantizer on a target, and why they were chosen."""

    target: str
    activation_type: str  # "uint8" | "int8"
    weight_type: str  # "int8" | "uint8"
    per_channel: bool
    reduce_range: bool
    activation_symmetric: bool
    weight_symmetric: bool
    providers: tuple[str, ...]
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def target_profile(target: str = "cpu", features: CpuFeatures | None = None) -> TargetProfile:
    """The profile for ``target`` ("cpu", "tensorrt", "cuda"); "cpu" reads the CPU's features."""
    if target not in TARGETS:
        raise RecipeError(
            f"unknown quantization target '{target}'; choose one of {', '.join(TARGETS)}."
        )
    if target == "tensorrt":
        return TargetProfile(
            target,
            activation_type="int8",
            weight_type="int8",
            per_channel=True,
            reduce_range=False,
            activation_symmetric=True,
            weight_symmetric=True,
            providers=("TensorrtExecutionProvider",),
            reasons=("TensorRT takes symmetric int8 Q/DQ on weights and activations",),
        )
    if target == "cuda":
        message = (
            "the CUDA execution provider runs QDQ models as fake quantization (no int8 kernels): "
            "expect no speed-up; use target='tensorrt' for int8 on NVIDIA GPUs"
        )
        logger.warning(message)
        return TargetProfile(
            target,
            activation_type="int8",
            weight_type="int8",
            per_channel=True,
            reduce_range=False,
            activation_symmetric=True,
            weight_symmetric=True,
            providers=("CUDAExecutionProvider",),
            reasons=("symmetric int8 keeps the graph TensorRT-ready",),
            warnings=(message,),
        )
    return _cpu_profile(target, features or cpu_features())


def _cpu_profile(target: str, features: CpuFeatures) -> TargetProfile:
    """The CPU profile from its int8 dot-product instructions."""
    if features.arch == "x86":
        # Measured with ORT 1.32 on AVX512-VNNI, 2 threads (benchmarks/quant_vs_ort.py --configs):
        # ResNet-18-style fp32/int8 at batch 1: U8S8 3.9x, S8S8 1.5x, S8S8 with
        # session.qdqisint8allowed=1 0.25x; QDQ = QOperator, per-channel = per-tensor in speed.
        reasons = [
            "x86: ORT fuses uint8 activations x int8 weights into its integer kernels; int8 "
            "activations run partly in float (x86 QLinearConv with s8 activations is 4x slower)",
            "per-channel weights: as fast as per-tensor in ORT, more accurate",
        ]
        if features.vnni or features.amx:
            reasons.append(
                f"{features.describe()}: full-range weights (VNNI/AMX dot products do not "
                "saturate; reduce_range only costs accuracy, ~2 dB SQNR on ResNet-18-style)"
            )
        else:
            reasons.append(
                "no VNNI: reduce_range (7-bit weights) avoids the u8s8 16-bit saturation of "
                "AVX2/AVX-512 without VNNI (the alternative, session.x64quantprecision=1, "
                "is a runtime option the deployment would have to set)"
            )
        return TargetProfile(
            target,
            activation_type="uint8",
            weight_type="int8",
            per_channel=True,
            reduce_range=not (features.vnni or features.amx),
            activation_symmetric=False,
            weight_symmetric=True,
            providers=("CPUExecutionProvider",),
            reasons=tuple(reasons),
        )
    if features.arch == "arm":
        # ORT fuses int8 QDQ on ARM by default (QDQIsInt8Allowed) and MLAS has native
        # s8s8 SDOT/SMMLA kernels; not measured on this project's x86 machines.
        if features.arm_dot or features.arm_i8mm:
            arm_reasons = (
                f"{features.describe()}: ORT fuses int8 QDQ on ARM and MLAS runs s8 x s8 "
                "with SDOT/SMMLA (ORT's recommended S8S8); not measured here",
            )
            activation = "int8"
        else:
            arm_reasons = (f"{features.describe()}: uint8 x int8 widening kernels",)
            activation = "uint8"
        return TargetProfile(
            target,
            activation_type=activation,
            weight_type="int8",
            per_channel=True,
            reduce_range=False,
            activation_symmetric=False,
            weight_symmetric=True,
            providers=("CPUExecutionProvider",),
            reasons=arm_reasons,
        )
    return TargetProfile(
        target,
        activation_type="uint8",
        weight_type="int8",
        per_channel=True,
        reduce_range=True,
        activation_symmetric=False,
        weight_symmetric=True,
        providers=("CPUExecutionProvider",),
        reasons=("unknown CPU: conservative uint8/int8 with reduce_range",),
    )
