"""Benchmarks on ONNX Runtime providers: interleaved latency ratios, fidelity, int8 coverage, reports."""

from onnxslim.benchmark._benchmark import Metric, benchmark
from onnxslim.benchmark._coverage import Int8Coverage, int8_coverage
from onnxslim.benchmark._gates import GATE_EXIT_CODE, Gates, check_gates
from onnxslim.benchmark._records import SCHEMA_VERSION, LatencyStats, Measurement, RatioStats
from onnxslim.benchmark._results import BenchmarkResult
from onnxslim.runtime import MachineInfo, machine_info

__all__ = [
    "GATE_EXIT_CODE",
    "SCHEMA_VERSION",
    "BenchmarkResult",
    "Gates",
    "Int8Coverage",
    "LatencyStats",
    "MachineInfo",
    "Measurement",
    "Metric",
    "RatioStats",
    "benchmark",
    "check_gates",
    "int8_coverage",
    "machine_info",
]
