"""ONNX Runtime on this machine: sessions, interleaved timing, per-node profiles, CPU features,
machine facts."""

from onnxslim.runtime._cpu import INT8_ISA_FLAGS, CpuFeatures, cpu_features
from onnxslim.runtime._machine import GpuInfo, MachineInfo, gpu_memory_used, machine_info
from onnxslim.runtime._profile import attribute_kernels, node_kernel_seconds
from onnxslim.runtime._session import (
    OPTIMIZATION_LEVELS,
    PROVIDER_ALIASES,
    create_session,
    ort_log_to_python,
    resolve_providers,
    session_options,
    set_log_severity,
)
from onnxslim.runtime._timing import InterleavedTiming, interleaved_timing, rotation, session_run

__all__ = [
    "INT8_ISA_FLAGS",
    "OPTIMIZATION_LEVELS",
    "PROVIDER_ALIASES",
    "CpuFeatures",
    "GpuInfo",
    "InterleavedTiming",
    "MachineInfo",
    "attribute_kernels",
    "cpu_features",
    "create_session",
    "gpu_memory_used",
    "interleaved_timing",
    "machine_info",
    "node_kernel_seconds",
    "ort_log_to_python",
    "resolve_providers",
    "rotation",
    "session_options",
    "session_run",
    "set_log_severity",
]
