"""The cleanup pass's summary as a few lines for people (the JSON report keeps every key).

Written against missing keys: any subset of the summary still reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe"]


def _nodes(summary: Mapping[str, Any]) -> str | None:
    before, after = summary.get("nodes_before"), summary.get("nodes_after")
    if not isinstance(before, int) or not isinstance(after, int):
        return None
    if before == after:
        return f"Kept all {after} nodes (nothing to fold or remove)."
    return f"{before} -> {after} nodes ({before - after} folded, fused or removed)."


def _changes(summary: Mapping[str, Any]) -> str | None:
    parts = []
    lifted = summary.get("constant_nodes_lifted")
    if isinstance(lifted, int) and lifted > 0:
        parts.append(f"{lifted} Constant node(s) became initializers")
    if summary.get("batchnorm_folded"):
        parts.append("BatchNormalization folded into the layers before it")
    opset = summary.get("opset")
    if isinstance(opset, str) and "->" in opset:
        old, new = (side.strip() for side in opset.split("->", 1))
        parts.append(f"opset {old} kept" if old == new else f"opset {old} -> {new}")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def describe(summary: Mapping[str, Any]) -> list[str]:
    """What cleanup changed, and which of its steps it dropped (and why)."""
    lines = [line for line in (_nodes(summary), _changes(summary)) if line]
    for dropped in summary.get("dropped_steps") or []:
        if isinstance(dropped, Mapping):
            reason = str(dropped.get("reason", "")).rstrip(".")
            lines.append(f"Dropped step {dropped.get('step', '?')}: {reason or 'no reason given'}.")
    return lines
