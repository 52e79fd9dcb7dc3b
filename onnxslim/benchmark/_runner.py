"""Sessions, warm-up, timed runs (IOBinding on CUDA/TensorRT), process and GPU memory probes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxslim.runtime import create_session, gpu_memory_used

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


def _device_id(provider_options: Mapping[str, object] | None) -> int:
    return int(str((provider_options or {}).get("device_id", 0)))  # ORT takes "0" or 0


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
        self.session = create_session(
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

    def infer(self, index: int = 0) -> None:
        """One inference on feed ``index`` (cycled); on the device with IOBinding."""
        if self.io_binding:
            binding = self._bindings[index % len(self._bindings)]
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return
        self.session.run(self.output_names, self._feeds[index % len(self._feeds)])

    def run(self, index: int = 0) -> float:
        """Seconds for one inference on feed ``index`` (cycled)."""
        started = time.perf_counter()
        self.infer(index)
        return time.perf_counter() - started

    def outputs(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs on the host for one feed (for fidelity; not timed)."""
        input_names = {model_input.name for model_input in self.session.get_inputs()}
        results = self.session.run(
            self.output_names, {k: v for k, v in feed.items() if k in input_names}
        )
        return dict(zip(self.output_names, results))
