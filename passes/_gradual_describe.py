"""The prune_distill pass's summary as a few lines for people: one line per prune -> distill step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxslim.formatting import human_count

__all__ = ["describe"]


def _step_line(record: Mapping[str, Any]) -> str:
    parts: list[str] = []
    fraction, macs = record.get("macs_fraction"), record.get("macs")
    if isinstance(fraction, (int, float)):
        count = f" ({human_count(macs)})" if isinstance(macs, int) else ""
        parts.append(f"MACs {fraction:.0%} of the input{count}")
    params = record.get("params")
    if isinstance(params, int):
        parts.append(f"params {human_count(params)}")
    fidelity = record.get("fidelity")
    if isinstance(fidelity, Mapping):
        top1, sqnr = fidelity.get("top1_agreement"), fidelity.get("sqnr_db")
        if isinstance(top1, (int, float)):
            parts.append(f"top-1 agreement {top1:.1%}")
        if isinstance(sqnr, (int, float)):
            parts.append(f"SQNR {sqnr:.1f} dB")
    latency, ratio = record.get("latency_ms"), record.get("latency_fraction")
    if isinstance(latency, (int, float)):
        share = f" ({ratio:.0%} of the input)" if isinstance(ratio, (int, float)) else ""
        parts.append(f"latency {latency:.3g} ms{share}")
    metric = record.get("metric")
    if isinstance(metric, (int, float)):
        parts.append(f"metric {metric:.4g}")
    seconds = record.get("seconds")
    if isinstance(seconds, (int, float)):
        parts.append(f"{seconds:.0f} s")
    return f"step {record.get('step', '?')}: " + (", ".join(parts) or "no figures")


def describe(summary: Mapping[str, Any]) -> list[str]:
    """``Pruned in 3 step(s) to 25% of the MACs (target 25%).`` then a line per step."""
    steps = [s for s in summary.get("steps") or [] if isinstance(s, Mapping)]
    target = summary.get("target_macs")
    fraction = summary.get("macs_fraction")
    head = f"Pruned and distilled in {len(steps)} step(s)"
    if isinstance(fraction, (int, float)):
        head += f" to {fraction:.0%} of the MACs"
    if isinstance(target, (int, float)):
        head += f" (target {target:.0%})"
    lines = [head + "."]
    resumed = summary.get("resumed_steps")
    if isinstance(resumed, int) and resumed:
        lines.append(f"Resumed {resumed} finished step(s) from the state file.")
    lines.extend("  " + _step_line(s) for s in steps)
    return lines
