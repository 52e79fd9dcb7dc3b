"""The ``quantize_int4`` pass's summary as a few lines for people (the JSON report keeps every key).

Written against missing keys, like the int8 story: a fallback's or an older report's summary reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxslim.formatting import human_bytes
from onnxslim.passes.quantization._describe import _end, _names, _number, _plain

__all__ = ["describe"]


def _scheme(summary: Mapping[str, Any]) -> str:
    parts = [str(summary.get("algorithm", "?"))]
    if summary.get("block_size") is not None:
        parts.append(f"block {summary['block_size']}")
    parts.append("symmetric" if summary.get("symmetric") else "asymmetric")
    if summary.get("accuracy_level") is not None:
        parts.append(f"accuracy_level {summary['accuracy_level']}")
    converted = summary.get("matmuls_converted")
    skipped = summary.get("matmuls_skipped")
    text = "Int4 weight-only MatMuls (" + ", ".join(parts) + ")"
    if isinstance(converted, int):
        text += f": {converted} MatMul(s) converted"
        if isinstance(skipped, Mapping):
            text += f", {len(skipped)} kept in float"
    return _end(text)


def _kept(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    eight = summary.get("matmuls_8bit")
    if isinstance(eight, list) and eight:
        lines.append(
            f"8-bit blocks for {len(eight)} MatMul(s) the guard found sensitive: {_names(eight)}."
        )
    skipped = summary.get("matmuls_skipped")
    if isinstance(skipped, Mapping) and skipped:
        by_reason: dict[str, list[str]] = {}
        for name, reason in skipped.items():
            by_reason.setdefault(str(reason), []).append(str(name))
        for reason, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"Kept in float ({reason}): {_names(names)}.")
    return lines


def _fidelity(summary: Mapping[str, Any]) -> str | None:
    fidelity = summary.get("fidelity")
    if not isinstance(fidelity, Mapping):
        return None
    parts = []
    cosine = _number(fidelity.get("mean_cosine"), "{:.4f}")
    sqnr = _number(fidelity.get("sqnr_db"))
    if cosine:
        parts.append(f"mean cosine {cosine}")
    if sqnr:
        parts.append(f"SQNR {sqnr} dB")
    if not parts:
        return None
    text = "Outputs vs float: " + ", ".join(parts)
    if "judged_on" in summary:
        text += f" (judged on {_plain(summary['judged_on'])})"
    return _end(text)


def _speed(summary: Mapping[str, Any]) -> str | None:
    before, after = summary.get("latency_ms_before"), summary.get("latency_ms_after")
    if not (_number(before) and _number(after)):
        return None
    speed = _number(summary.get("speedup"), "{:.2f}x")
    return f"Latency {before:.3g} ms -> {after:.3g} ms" + (f" ({speed} faster)." if speed else ".")


def describe(summary: Mapping[str, Any]) -> list[str]:
    """What int4 did: the scheme, what stayed float or went 8-bit and why, fidelity, speed, size."""
    lines = [_scheme(summary)]
    if summary.get("fallback"):
        lines.append(_end(str(summary["fallback"])))
    lines += _kept(summary)
    lines += [line for line in (_fidelity(summary), _speed(summary)) if line]
    before, after = summary.get("size_bytes_before"), summary.get("size_bytes_after")
    if isinstance(before, int) and isinstance(after, int):
        lines.append(f"File size {human_bytes(before)} -> {human_bytes(after)}.")
    return lines
