"""The distill pass's summary as a few lines for people (the JSON report keeps every key).

Written against missing keys: any subset of the summary still reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe"]

_EPOCHS_SHOWN = 8  # per-epoch SQNRs listed before "…"


def _db(value: Any) -> str | None:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):  # as the JSON report writes them
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "identical (inf)" if value == float("inf") else f"{value:.1f}"
    return None


def _training(summary: Mapping[str, Any]) -> str | None:
    epochs = summary.get("epochs_run")
    if epochs is None:
        return None
    text = f"Trained {epochs} epoch(s)"
    if summary.get("steps") is not None:
        text += f", {summary['steps']} step(s)"
    if summary.get("samples") is not None:
        text += f" on {summary['samples']} sample(s)"
    world = summary.get("world_size")
    if isinstance(world, int) and world > 1:
        text += f" across {world} ranks"
    if summary.get("stopped_early"):
        text += ", stopped early (fidelity stopped improving)"
    return text + "."


def _loss_and_fidelity(summary: Mapping[str, Any]) -> str | None:
    parts = []
    first, last = summary.get("loss_first_epoch"), summary.get("loss_last_epoch")
    if isinstance(first, (int, float)) and isinstance(last, (int, float)):
        parts.append(f"loss {first:.4g} -> {last:.4g}")
    before, after = _db(summary.get("sqnr_before_db")), _db(summary.get("sqnr_after_db"))
    if before or after:
        unit = "" if (after or "").startswith("identical") else " dB"
        parts.append(f"SQNR to the teacher {before or '?'} -> {after or '?'}{unit}")
    top1 = summary.get("fidelity_after")
    if isinstance(top1, Mapping) and isinstance(top1.get("top1_agreement"), (int, float)):
        parts.append(f"top-1 agreement {top1['top1_agreement']:.1%}")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _per_epoch(history: Any) -> str | None:
    if not isinstance(history, list) or not history:
        return None
    values = []
    for record in history[:_EPOCHS_SHOWN]:
        fidelity = record.get("fidelity") if isinstance(record, Mapping) else None
        sqnr = _db(fidelity.get("sqnr_db")) if isinstance(fidelity, Mapping) else None
        values.append("?" if sqnr is None else sqnr.replace("identical (inf)", "inf"))
    more = ", …" if len(history) > _EPOCHS_SHOWN else ""
    return f"SQNR per epoch: {', '.join(values)}{more} dB."


def _kept(summary: Mapping[str, Any]) -> str | None:
    best = summary.get("best_epoch")
    if best is None:
        return None
    if best == 0:
        text = "Kept the starting weights: no epoch beat them on the validation samples"
    else:
        text = f"Kept the weights of epoch {best} (best fidelity on the validation samples)"
    updated = summary.get("initializers_updated")
    if isinstance(updated, int):
        text += f"; {updated} weight tensor(s) updated in the graph"
    return text + "."


def describe(summary: Mapping[str, Any]) -> list[str]:
    """How distillation trained, how close the student came to the teacher, what it kept."""
    lines = []
    for line in (
        _training(summary),
        _loss_and_fidelity(summary),
        _per_epoch(summary.get("history")),
        _kept(summary),
    ):
        if line:
            lines.append(line)
    if summary.get("teacher"):
        student = summary.get("student", "graph")
        who = "the graph's own weights" if student == "graph" else f"a {student} module"
        lines.append(f"Teacher: {summary['teacher']}; student: {who}.")
    return lines
