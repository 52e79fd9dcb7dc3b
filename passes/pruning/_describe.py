"""The prune pass's summary as a few lines for people (the JSON report keeps every key).

Written against missing keys: any subset of the summary still reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxslim.formatting import human_count

__all__ = ["describe"]

_SHOWN = 3  # layers or blocked groups listed before "+N more"


def _before_after(figures: Any, what: str) -> str | None:
    if not isinstance(figures, Mapping):
        return None
    before, after = figures.get("before"), figures.get("after")
    if not isinstance(before, int) or not isinstance(after, int):
        return None
    share = f" ({after / before:.0%} kept)" if before else ""
    return f"{what} {human_count(before)} -> {human_count(after)}{share}"


def _widest_cuts(channels: Any) -> str | None:
    """The layers that lost the most units, ``name 64 -> 32``."""
    if not isinstance(channels, Mapping):
        return None
    cuts = [
        (size - kept, name, size, kept)
        for name, pair in channels.items()
        if isinstance(pair, (list, tuple)) and len(pair) == 2
        for size, kept in [pair]
        if isinstance(size, int) and isinstance(kept, int) and kept < size
    ]
    if not cuts:
        return None
    cuts.sort(key=lambda cut: (-cut[0], cut[1]))
    shown = ", ".join(f"{name} {size} -> {kept}" for _, name, size, kept in cuts[:_SHOWN])
    more = f" +{len(cuts) - _SHOWN} more" if len(cuts) > _SHOWN else ""
    return f"Narrowed {len(cuts)} layer(s): {shown}{more}."


def _blocked(blocked: Any) -> list[str]:
    if not isinstance(blocked, list) or not blocked:
        return []
    lines = [f"{len(blocked)} group(s) left whole:"]
    for group in blocked[:_SHOWN]:
        if not isinstance(group, Mapping):
            continue
        producers = ", ".join(str(p) for p in (group.get("producers") or [])[:2]) or "-"
        reasons = "; ".join(str(r) for r in (group.get("reasons") or [])[:1]) or "unknown reason"
        lines.append(f"  group #{group.get('group', '?')} ({producers}): {reasons}")
    if len(blocked) > _SHOWN:
        lines.append(f"  +{len(blocked) - _SHOWN} more (onnxslim inspect --groups lists them)")
    return lines


def describe(summary: Mapping[str, Any]) -> list[str]:
    """What pruning removed, what it cost in MACs and parameters, and what it could not touch."""
    lines = []
    pruned, prunable = summary.get("pruned_groups"), summary.get("prunable_groups")
    if pruned is not None:
        text = f"Pruned {pruned} of {prunable if prunable is not None else '?'} prunable group(s)"
        if summary.get("groups") is not None:
            text += f" ({summary['groups']} in all)"
        if summary.get("units_removed") is not None:
            text += f", {summary['units_removed']} channel(s)/unit(s) removed"
        lines.append(text + ".")
    figures = [
        _before_after(summary.get("macs"), "MACs"),
        _before_after(summary.get("parameters"), "parameters"),
    ]
    if any(figures):
        text = "; ".join(f for f in figures if f)
        lines.append(text[0].upper() + text[1:] + ".")
    cuts = _widest_cuts(summary.get("channels_kept"))
    if cuts:
        lines.append(cuts)
    lines += _blocked(summary.get("blocked"))
    lines += [f"Warning: {w}." for w in summary.get("warnings") or [] if isinstance(w, str)]
    return lines
