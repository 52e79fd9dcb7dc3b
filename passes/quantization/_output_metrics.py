"""Which metric judges each graph output in the accuracy guard, and the classic bounds judged
output by output: every output must hold its own bound (issue 17: a candidate kept the logits
while its ArgMax / decoded output went wrong)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxslim.fidelity import (
    DEFAULT_MIN_SCORE,
    FidelityBounds,
    TaskMetric,
    choose_metric,
    compare_outputs,
    ctc_characters,
    looks_like_scores,
)

Feeds = Mapping[str, np.ndarray]


def output_metrics(
    reference: Sequence[Feeds],
    bound: FidelityBounds,
    metric: TaskMetric | None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[list[TaskMetric], list[tuple[str, str]]]:
    """The task metrics, and the outputs the classic bounds judge (with why); a ``ctc`` metric
    gets the character table from the model's ``metadata`` when it holds one.

    Every graph output is judged: the user's ``metric`` on the outputs it names, each other
    output on its own default (integer outputs, e.g. ArgMax/TopK indices, on agreement rate); a
    metric naming no output judges every floating output, the integer ones keep their own."""
    metadata = metadata or {}
    if metric is None:
        return _default_metrics(reference, bound, metadata, list(reference[0]) if reference else [])
    if metric.name == "ctc" and metric.characters is None and reference:
        for name in metric.outputs or list(reference[0]):
            characters = ctc_characters(metadata, np.shape(reference[0][name])[-1])
            if characters is not None:
                metric = dataclasses.replace(
                    metric, characters=characters, reason=metric.reason + _TEXT_REASON
                )
                break
    if not reference or metric.function is not None and metric.outputs is None:
        return [metric], []  # a user function over every output judges them all
    covered = set(metric.outputs or (n for n, a in reference[0].items() if _floating(a)))
    rest = [n for n in reference[0] if n not in covered]
    metrics, proxies = _default_metrics(reference, bound, metadata, rest, always=True)
    return [metric, *metrics], proxies


def _default_metrics(
    reference: Sequence[Feeds],
    bound: FidelityBounds,
    metadata: Mapping[str, str],
    names: Sequence[str],
    always: bool = False,
) -> tuple[list[TaskMetric], list[tuple[str, str]]]:
    """Each of ``names`` on the metric its shape and range call for (``always``: even with the
    bounds off, as beside a user metric)."""
    if not (bound.enabled or always) or not reference:
        return [], []
    metrics, proxies = [], []
    for name in names:
        # atleast_1d: a 0-d output (a scalar per sample) cannot be concatenated
        joined = np.concatenate([np.atleast_1d(r[name]) for r in reference])
        chosen, reason = choose_metric(name, joined)
        if chosen == "agreement":
            metrics.append(_agreement_metric(name, bound, reason))
            continue
        if chosen in ("top1", "sqnr"):
            proxies.append((name, reason))
            continue
        characters = ctc_characters(metadata, joined.shape[-1]) if chosen == "ctc" else None
        if characters is not None:
            reason += _TEXT_REASON
        metrics.append(TaskMetric(chosen, outputs=(name,), reason=reason, characters=characters))
    return metrics, proxies


def _floating(array: Any) -> bool:
    return bool(np.issubdtype(np.asarray(array).dtype, np.floating))


def _agreement_metric(name: str, bound: FidelityBounds, reason: str) -> TaskMetric:
    """The share of an integer output's values kept (a changed shape keeps none), at the top-1
    floor: both count decisions."""

    def agreement(reference: Sequence[Feeds], candidate: Sequence[Feeds]) -> float:
        kept, total = 0, 0
        for ref_outputs, cand_outputs in zip(reference, candidate):
            ref, cand = np.asarray(ref_outputs[name]), np.asarray(cand_outputs[name])
            total += ref.size
            kept += int(np.sum(ref == cand)) if ref.shape == cand.shape else 0
        return kept / total if total else 1.0

    floor = bound.min_top1_agreement
    floor = DEFAULT_MIN_SCORE["top1"] if floor is None else floor
    return TaskMetric("agreement", floor, (name,), agreement, reason)


def proxy_violations(
    bound: FidelityBounds,
    reference: Sequence[Feeds],
    candidate: Sequence[Feeds],
    names: Sequence[str],
    label: str = "output",
) -> list[str]:
    """The classic bounds on each of ``names`` on its own, each line naming its output (pooled,
    a large output's signal hides a small one gone wrong); the bounds' user ``metric`` runs
    once, on them all."""
    per_output = dataclasses.replace(bound, metric=None)
    problems: list[str] = []
    for name in names:
        ref, cand = only_outputs(reference, [name]), only_outputs(candidate, [name])
        found = per_output.violations(compare_outputs(ref, cand), ref, cand)
        found = [p.replace("output SQNR", f"{label} SQNR") for p in found]
        problems += [p if f"'{name}'" in p else f"{p} on {name}" for p in found]
    if bound.metric is not None:
        ref, cand = only_outputs(reference, names), only_outputs(candidate, names)
        if not bound.metric(ref, cand):
            problems.append("the user metric failed")
    return problems


# Why a CTC output with a character table is judged on text: a user reads the decoded string,
# and edge spaces (and how many spaces stand between words) change neither what it says nor
# what any OCR pipeline keeps (PaddleOCR and rapidocr strip them); every other character counts.
_TEXT_REASON = (
    "; judged on the text it reads (the model's character table; edge whitespace stripped and "
    "inner runs of it one space, as an OCR user reads it, every other character counted)"
)


def proxy_kind(array: np.ndarray) -> str:
    return "top1" if looks_like_scores(array) and array.ndim == 2 else "sqnr"


def only_outputs(outputs: Sequence[Feeds], names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    return [{n: o[n] for n in names} for o in outputs]
