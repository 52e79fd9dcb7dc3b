"""The quantize pass's summary as a few lines for people (the JSON report keeps every key).

Written against missing keys: a summary from a fallback, an older report or a newer pass
(``metric``, ``judged_on``, int4 fields) still reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxslim.formatting import human_bytes

__all__ = ["describe"]

_SHOWN = 3  # names listed before "+N more"


def _number(value: Any, pattern: str = "{:.1f}") -> str | None:
    return pattern.format(value) if isinstance(value, (int, float)) and value == value else None


def _end(text: str) -> str:
    """A sentence: capitalised, one full stop."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text[-1] in ".!?" else ".")


def _names(names: list[str]) -> str:
    more = f" +{len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _plain(value: Any) -> str:
    """A metric or ``judged_on`` entry, whatever its shape: text, number or a small mapping."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_number(v, '{:.4g}') or v}" for k, v in value.items())
    return _number(value, "{:.4g}") or str(value)


def _scheme(summary: Mapping[str, Any]) -> str | None:
    profile = summary.get("profile")
    method = summary.get("method")
    parts = []
    if isinstance(profile, Mapping) and profile.get("activation_type"):
        channel = "per-channel" if profile.get("per_channel") else "per-tensor"
        parts.append(
            f"Static int8 for {profile.get('target', 'cpu')}: {profile.get('activation_type')} "
            f"activations x {profile.get('weight_type', 'int8')} {channel} weights"
        )
    calibration = summary.get("calibration")
    samples = calibration.get("samples") if isinstance(calibration, Mapping) else None
    if method or summary.get("data"):
        data = f" on {samples} sample(s) of {summary.get('data')}" if samples else ""
        if not data and summary.get("data"):
            data = f" on {summary.get('data')}"
        parts.append(f"ranges by {method or '?'}{data}")
    if not parts:
        return None
    text = "; ".join(parts)
    if summary.get("smoke_data"):
        text += " (random smoke data: not fit for deployment)"
    return _end(text)


def _chosen(summary: Mapping[str, Any]) -> str | None:
    chosen = summary.get("chosen")
    if not chosen:
        return None
    text = f"Chose '{chosen}'"
    before, after = summary.get("latency_ms_before"), summary.get("latency_ms_after")
    speed = _number(summary.get("speedup"), "{:.2f}x")
    if _number(before) and _number(after):
        batch = summary.get("latency_batch")
        at = f" at batch {batch}" if batch is not None else ""
        text += f": {before:.3g} ms -> {after:.3g} ms{at}" + (f" ({speed} faster)" if speed else "")
    elif speed:
        text += f" ({speed})"
    fidelity = summary.get("fidelity")
    if isinstance(fidelity, Mapping):
        sqnr = _number(fidelity.get("sqnr_db"))
        top1 = _number(fidelity.get("top1_agreement"), "{:.1%}")
        if sqnr or top1:
            text += ", " + ", ".join(
                p for p in (f"SQNR {sqnr} dB" if sqnr else "", f"top-1 {top1}" if top1 else "") if p
            )
            text += " vs float"
    if "metric" in summary:
        text += f"; metric {_plain(summary['metric'])}"
    if "judged_on" in summary:
        text += f" (judged on {_plain(summary['judged_on'])})"
    return _end(text)


def _candidates(summary: Mapping[str, Any]) -> str | None:
    tried = summary.get("candidates")
    if not isinstance(tried, list) or not tried:
        return None
    parts = []
    for candidate in tried:
        if not isinstance(candidate, Mapping):
            continue
        label = candidate.get("label", "?")
        if candidate.get("rejected"):
            parts.append(f"'{label}' rejected ({candidate['rejected']})")
        else:
            speed = _number(candidate.get("speedup"), "{:.2f}x")
            confirmed = _number(candidate.get("speedup_confirmed"), "{:.2f}x")
            note = ""
            if candidate.get("chosen"):
                note = f" (chosen, confirmed {confirmed})" if confirmed else " (chosen)"
            parts.append(f"'{label}'" + (f" {speed}" if speed else "") + note)
    return f"Tried {len(tried)} candidate(s): " + "; ".join(parts) + "."


def _kept_in_float(summary: Mapping[str, Any]) -> list[str]:
    excluded = summary.get("nodes_excluded")
    quantized = summary.get("nodes_quantized")
    lines = []
    if isinstance(quantized, list) and isinstance(excluded, Mapping):
        lines.append(f"{len(quantized)} node(s) run in int8, {len(excluded)} kept in float.")
    if isinstance(excluded, Mapping) and excluded:
        by_reason: dict[str, list[str]] = {}
        for name, reason in excluded.items():
            by_reason.setdefault(str(reason), []).append(str(name))
        for reason, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))[:_SHOWN]:
            lines.append(f"Kept in float ({reason}): {_names(names)}.")
        if len(by_reason) > _SHOWN:
            lines.append(f"Kept in float for {len(by_reason) - _SHOWN} more reason(s).")
    return lines


def _int4(summary: Mapping[str, Any]) -> list[str]:
    """Whatever int4 figures the pass reports, as ``int4 <field>: <value>`` lines."""
    lines = []
    for key, value in summary.items():
        if "int4" in key.lower() and not isinstance(value, (list, dict)):
            lines.append(_end(f"{key.replace('_', ' ')}: {_plain(value)}"))
        elif "int4" in key.lower() and isinstance(value, list):
            lines.append(_end(f"{key.replace('_', ' ')}: {len(value)}"))
    return lines


def describe(summary: Mapping[str, Any]) -> list[str]:
    """What quantization did, why, what stayed float and how fast the chosen model runs."""
    lines = [line for line in (_scheme(summary),) if line]
    if summary.get("fallback"):
        lines.append(_end(str(summary["fallback"])))
    for line in (_chosen(summary), _candidates(summary)):
        if line:
            lines.append(line)
    lines += _kept_in_float(summary)
    lines += _int4(summary)
    before, after = summary.get("size_bytes_before"), summary.get("size_bytes_after")
    if isinstance(before, int) and isinstance(after, int):
        lines.append(f"File size {human_bytes(before)} -> {human_bytes(after)}.")
    for warning in summary.get("warnings") or []:
        lines.append(_end(f"Warning: {warning}"))
    return lines
