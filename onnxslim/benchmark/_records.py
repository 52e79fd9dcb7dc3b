"""Benchmark result types and their JSON form.

JSON schema (``schema_version`` 1; keys are only ever added within a version):

```
{
  "schema_version": 1,
  "tool": "onnxslim <version>",
  "reference": "<label of the first model: fidelity and ratios are against it>",
  "machine": {"cpu_model", "logical_cpus", "int8_isa": [..], "gpus": [{"name", "memory_total_mib", "driver"}],
              "onnxruntime_version", "available_providers": [..], "platform", "python"},
  "settings": {"providers": [..], "provider_options": {provider: {..}}, "batch_sizes": [..],
               "intra_op_threads", "inter_op_threads", "optimization_level", "warmup_runs",
               "runs", "time_budget_s", "inputs": "generated"|"data", "fidelity_samples",
               "interleaved": true, "allow_spinning": false, "memory_method", "notes": [..]},
  "models": [{"label", "path", "file_size_bytes"}],
  "measurements": [{
      "model", "provider", "batch",
      "latency_ms": {"mean", "p50", "p90", "p99", "min", "max", "std"}, "runs",
      "latencies_ms": [..every timed run..],
      "throughput_per_s",            # samples per second = batch / mean latency
      "session_create_s",
      "file_size_bytes", "size_ratio",
      "session_memory_bytes",        # peak RSS increase while the session was created and warmed up
      "peak_rss_bytes",              # process peak RSS in that same window
      "gpu_memory_bytes",            # GPU memory the process gained (nvidia-smi), null without GPU
      "io_binding",                  # inputs/outputs bound on the device
      "latency_ratio": {"median", "p10", "p90", "pairs"},   # per-round candidate/reference, null for the reference
      "fidelity": {"max_abs_error", "mean_abs_error", "sqnr_db", "top1_agreement", "samples"},
      "metric": {"name", "value"} | null,
      "int8_coverage": {"provider", "optimization_level", "integer_macs", "float_macs",
                        "fake_quant_macs", "total_macs", "integer_share", "verdict",
                        "macs_per_kernel", "qdq_nodes_left", "uncounted_ops", "note"} | null
  }]
}
```
Non-finite floats are written as the strings ``"inf"``, ``"-inf"``, ``"nan"``; absent figures as ``null``.
The records keep floats as floats; only ``onnxslim._json.json_safe`` at the JSON edge writes those strings.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from onnxslim._json import json_safe
from onnxslim.benchmark._coverage import Int8Coverage
from onnxslim.fidelity import Fidelity
from onnxslim.runtime import MachineInfo

__all__ = [
    "LatencyStats",
    "RatioStats",
    "Measurement",
    "ResultRecord",
    "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1


def _fidelity_record(fidelity: Fidelity) -> dict:
    return {
        "max_abs_error": fidelity.max_abs_error,
        "mean_abs_error": fidelity.mean_abs_error,
        "sqnr_db": fidelity.sqnr_db,
        "top1_agreement": fidelity.top1_agreement,
        "samples": fidelity.samples,
    }


@dataclasses.dataclass
class LatencyStats:
    """Latency figures in milliseconds over the timed runs."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: list[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        return cls(
            mean_ms=float(ms.mean()),
            p50_ms=float(np.percentile(ms, 50)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            std_ms=float(ms.std()),
            runs=int(ms.size),
        )

    def to_dict(self) -> dict:
        return {
            "mean": self.mean_ms,
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "std": self.std_ms,
        }


@dataclasses.dataclass
class RatioStats:
    """Candidate/reference latency ratios taken round by round (each pair ran back to back)."""

    median: float
    p10: float
    p90: float
    pairs: int

    @classmethod
    def from_pairs(cls, ratios: list[float]) -> RatioStats:
        values = np.asarray(ratios, dtype=np.float64)
        return cls(
            median=float(np.median(values)),
            p10=float(np.percentile(values, 10)),
            p90=float(np.percentile(values, 90)),
            pairs=int(values.size),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Measurement:
    """One model on one provider at one batch size."""

    model: str
    path: str
    provider: str
    batch: int
    latency: LatencyStats
    latencies_ms: list[float]
    throughput_per_s: float
    session_create_s: float
    file_size_bytes: int
    io_binding: bool
    session_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    gpu_memory_bytes: int | None = None
    size_ratio: float | None = None
    latency_ratio: RatioStats | None = None
    fidelity: Fidelity | None = None
    metric_name: str | None = None
    metric_value: float | None = None
    coverage: Int8Coverage | None = None

    def to_dict(self) -> dict:
        """The JSON form (non-finite floats as strings)."""
        return json_safe(self.record())

    def record(self) -> dict:
        """The JSON layout with floats kept as floats."""
        return {
            "model": self.model,
            "provider": self.provider,
            "batch": self.batch,
            "latency_ms": self.latency.to_dict(),
            "runs": self.latency.runs,
            "latencies_ms": [round(value, 6) for value in self.latencies_ms],
            "throughput_per_s": self.throughput_per_s,
            "session_create_s": self.session_create_s,
            "file_size_bytes": self.file_size_bytes,
            "size_ratio": self.size_ratio,
            "session_memory_bytes": self.session_memory_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "io_binding": self.io_binding,
            "latency_ratio": self.latency_ratio.to_dict() if self.latency_ratio else None,
            "fidelity": _fidelity_record(self.fidelity) if self.fidelity else None,
            "metric": (
                {"name": self.metric_name, "value": self.metric_value}
                if self.metric_name is not None
                else None
            ),
            "int8_coverage": self.coverage.to_dict() if self.coverage else None,
        }


@dataclasses.dataclass
class ResultRecord:
    """All measurements of one benchmark run, with the machine and settings they were taken on.

    The data and its JSON form; :class:`~onnxslim.benchmark.BenchmarkResult` adds the reports.
    """

    measurements: list[Measurement]
    machine: MachineInfo
    settings: dict
    models: list[dict]
    reference: str
    tool: str = ""

    def find(
        self, model: str, provider: str | None = None, batch: int | None = None
    ) -> Measurement:
        """The measurement of ``model`` (label) on ``provider`` (full name) at ``batch``."""
        for measurement in self.measurements:
            if (
                measurement.model == model
                and (provider is None or measurement.provider == provider)
                and (batch is None or measurement.batch == batch)
            ):
                return measurement
        raise KeyError(
            f"no measurement for model {model!r}, provider {provider!r}, batch {batch!r}"
        )

    def to_dict(self) -> dict:
        """The JSON form (non-finite floats as strings)."""
        return json_safe(self.record())

    def record(self) -> dict:
        """The JSON layout with floats kept as floats."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": self.tool,
            "reference": self.reference,
            "machine": self.machine.to_dict(),
            "settings": self.settings,
            "models": self.models,
            "measurements": [measurement.record() for measurement in self.measurements],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)
