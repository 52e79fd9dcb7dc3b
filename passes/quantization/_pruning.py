"""Stages that cannot beat the current best are skipped: once a placement search (float islands
or the per-tensor search) has an accurate candidate, "keep sensitive layers in float" runs only
on the failing op-class candidates that are faster than it. Its variants quantize a subset of
such a candidate's nodes (more layers in float), so none of them runs faster than the candidate
itself does; a candidate already slower than the accurate one cannot give the winner. The timing
is one interleaved round of the latency guard's settings; nothing is skipped without it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._latency_guard import interleaved_latency

__all__ = ["beaten"]


def beaten(
    tried: Sequence[Candidate],
    skip: Collection[str],
    feeds: Mapping[str, np.ndarray],
    runs: int,
    threads: int | None,
) -> dict[str, str]:
    """Label -> why, for each failing static candidate (not in ``skip``) no faster than the
    fastest accurate static one; empty when no static candidate is accurate."""
    accurate = [c for c in tried if c.evaluation.accurate and not c.dynamic]
    failing = [
        c for c in tried if not (c.evaluation.accurate or c.op_types is None or c.label in skip)
    ]
    if not accurate or not failing:
        return {}
    models = [*accurate, *failing]
    seconds = interleaved_latency([c.path for c in models], feeds, runs=runs, threads=threads)
    best = min(range(len(accurate)), key=seconds.__getitem__)
    result = {}
    for candidate, took in zip(failing, seconds[len(accurate) :]):
        if took >= seconds[best]:
            result[candidate.label] = (
                f"not searched: {1e3 * took:.3g} ms, no faster than the accurate "
                f"'{accurate[best].label}' ({1e3 * seconds[best]:.3g} ms); keeping layers in "
                "float cannot make it faster"
            )
    return result
