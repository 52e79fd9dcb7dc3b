"""Sessions, warm-up, timed runs (IOBinding on CUDA/TensorRT), process and GPU memory probes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxslim

__all__ = ["SessionRunner", "MemoryProbe", "gpu_memory_used", "DEVICE_PROVIDERS"]

logger = logging.getLogger(__name__)

# Providers whose inputs/outputs live on a CUDA device: timed through IOBinding, no host copies.
DEVICE_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemoryProbe:
    """Peak resident memory of this process between :meth:`start` and :meth:`stop`.

    Linux lets a process reset its high-water mark (``echo 5 > /proc/self/clear_refs``), so the
    peak is ``VmHWM`` after a reset: exact, no sampling. Where that is refused, a thread samples
    ``VmRSS`` every millisecond (short peaks can be missed); the method used is recorded.
    """

    def __init__(self) -> None:
        self.method = "unavailable"
        self.baseline: int | None = None
        self.peak: int | None = None
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> MemoryProbe:
        self.baseline = _status_bytes("VmRSS")
        if self.baseline is None:
            return self
        try:
            _CLEAR_REFS.write_text("5")
            self.method = "VmHWM after reset (/proc/self/clear_refs)"
        except OSError:
            self.method = "VmRSS sampled every 1 ms"
            self.peak = self.baseline
            self._stop.clear()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            rss = _status_bytes("VmRSS")
            if rss is not None and (self.peak is None or rss > self.peak):
                self.peak = rss

    def stop(self) -> MemoryProbe:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None
        elif self.method.startswith("VmHWM"):
            self.peak = _status_bytes("VmHWM")
        return self

    @property
    def increase(self) -> int | None:
        if self.peak is None or self.baseline is None:
            return None
        return max(0, self.peak - self.baseline)


def _nvidia_smi(query: str) -> list[list[str]] | None:
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None
    try:
        output = subprocess.run(
            [nvidia_smi, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[part.strip() for part in line.split(",")] for line in output.strip().splitlines()]


def gpu_memory_used(pid: int | None = None) -> int | None:
    """GPU memory (bytes) held by process ``pid`` (nvidia-smi); None without an NVIDIA GPU.

    In a container nvidia-smi may list host PIDs only; then the device-wide figure is used
    (other processes on the same GPU would then count too; the benchmark records a delta).
    """
    pid = os.getpid() if pid is None else pid
    apps = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if apps is None:
        return None
    mine = [
        int(row[1]) for row in apps if len(row) == 2 and row[0] == str(pid) and row[1].isdigit()
    ]
    if mine:
        return sum(mine) * 1024 * 1024
    devices = _nvidia_smi("--query-gpu=memory.used") or []
    used = [int(row[0]) for row in devices if row and row[0].isdigit()]
    return sum(used) * 1024 * 1024 if used else None


def _device_id(provider_options: Mapping[str, object] | None) -> int:
    return int((provider_options or {}).get("device_id", 0))


class SessionRunner:
    """One model's session on one provider, ready to time: feeds prepared once.

    On CUDA/TensorRT the inputs are copied to the device once and outputs are bound to the
    device (IOBinding), so a timed run measures the model, not host<->device copies.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str,
        options: ort.SessionOptions,
        provider_options: Mapping[str, object] | None,
        feeds: Sequence[Mapping[str, np.ndarray]],
    ) -> None:
        started = time.perf_counter()
        self.session = onnxslim.create_session(
            path, [provider], options, [dict(provider_options)] if provider_options else None
        )
        self.create_seconds = time.perf_counter() - started
        self.provider = provider
        self.io_binding = provider in DEVICE_PROVIDERS
        self.output_names = [output.name for output in self.session.get_outputs()]
        input_names = {model_input.name for model_input in self.session.get_inputs()}
        # ORT rejects feeds for names the graph does not have; users' readers may carry extras
        self._feeds = [{k: v for k, v in feed.items() if k in input_names} for feed in feeds]
        self._bindings: list[ort.IOBinding] = []
        if self.io_binding:
            device_id = _device_id(provider_options)
            for feed in self._feeds:
                binding = self.session.io_binding()
                for name, array in feed.items():
                    device_value = ort.OrtValue.ortvalue_from_numpy(
                        np.ascontiguousarray(array), "cuda", device_id
                    )
                    binding.bind_ortvalue_input(name, device_value)
                for name in self.output_names:
                    binding.bind_output(name, "cuda", device_id)
                self._bindings.append(binding)

    def run(self, index: int = 0) -> float:
        """Seconds for one inference on feed ``index`` (cycled)."""
        if self.io_binding:
            binding = self._bindings[index % len(self._bindings)]
            started = time.perf_counter()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return time.perf_counter() - started
        feed = self._feeds[index % len(self._feeds)]
        started = time.perf_counter()
        self.session.run(self.output_names, feed)
        return time.perf_counter() - started

    def outputs(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs on the host for one feed (for fidelity; not timed)."""
        input_names = {model_input.name for model_input in self.session.get_inputs()}
        results = self.session.run(
            self.output_names, {k: v for k, v in feed.items() if k in input_names}
        )
        return dict(zip(self.output_names, results))
