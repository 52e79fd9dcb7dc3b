"""How many torch threads the training loop uses: by MACs per batch, or timed."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from onnxslim.inputs import Feeds
from onnxslim.passes.distillation._batches import to_device

__all__ = ["THREAD_GRAIN_MACS", "default_thread_count", "fastest_thread_count"]

logger = logging.getLogger(__name__)

# Default torch threads: one per this many MACs of a batch's forward pass. Below it, per-op
# threading overhead, and OpenMP workers waiting for descheduled peers on shared machines, cost
# more than they gain (a 6 M-MAC CNN at batch 32: 36 ms/step on 1 thread, 0.1-2 s on 2 busy cores).
THREAD_GRAIN_MACS = 10**9


def default_thread_count(step_macs: int | None, available: int) -> int:
    """Torch threads for a student whose batch forward pass costs ``step_macs`` MACs."""
    if not step_macs:
        return available
    return max(1, min(available, math.ceil(step_macs / THREAD_GRAIN_MACS)))


def fastest_thread_count(
    student: nn.Module, feeds: Feeds, device: torch.device, channels_last: bool
) -> int:
    """Times training steps with torch's thread count and with one thread; the faster wins.

    Small students on busy or small machines often run faster on one thread (the OpenMP
    team waits for descheduled threads at every op); large ones gain from all cores.
    """
    candidates = [torch.get_num_threads(), 1]
    saved_buffers = [buffer.detach().clone() for buffer in student.buffers()]
    inputs = to_device(feeds, device, channels_last)

    def step() -> float:
        started = time.perf_counter()
        outputs = student(**inputs)
        loss = sum(
            tensor.float().sum()
            for tensor in outputs.values()
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad
        )
        if isinstance(loss, torch.Tensor):
            loss.backward()
        return time.perf_counter() - started

    timings: dict[int, list[float]] = {count: [] for count in candidates}
    try:
        for count in candidates:  # warm-up: oneDNN builds its kernels per thread count
            torch.set_num_threads(count)
            step()
        for _ in range(3):
            for count in candidates:
                torch.set_num_threads(count)
                timings[count].append(step())
            fastest, slowest = sorted(min(values) for values in timings.values())
            if slowest > 2 * fastest:  # a clear winner: stop timing
                break
    finally:
        student.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(student.buffers(), saved_buffers, strict=True):
                buffer.copy_(saved)
    medians = {count: float(np.median(values)) for count, values in timings.items()}
    chosen = min(medians, key=lambda count: medians[count])
    logger.info(
        "distill: %d torch thread(s) (median step %s)",
        chosen,
        ", ".join(f"{1000 * t:.1f} ms with {c}" for c, t in medians.items()),
    )
    return chosen
