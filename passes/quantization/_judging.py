"""How many samples the accuracy guard judges on, and when an evaluation may stop early.

The judging size: a score that counts errors per unit (characters of a CTC decode, per-step
argmaxes) has, at the bound's error rate ``p = 1 - bound`` over ``n`` units, a standard error of
``sqrt(p (1 - p) / n)``; it is at most half the slack ``p`` from ``n >= 4 (1 - p) / p`` units
(ctc 0.99: 396 characters, about 50 rendered words, not the 8 words that let a 0.984 model pass
as 1.0). The units per sample are read from the float model's outputs on the first sample.

Early stop: each judged metric is a weighted mean over samples of a score at most 1 (top-1
rows, map IoU and cosine per sample, CTC per reference character), so after ``k`` batches the
final score is at most ``(sum of the scores so far, weighted, + the weight left) / total weight``;
once that is under the bound the candidate fails whatever the rest gives. The stop is exact:
it never rejects a candidate the full evaluation passes.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.fidelity import TaskMetric, choose_metric, ctc_characters, ctc_decode, ctc_texts
from onnxslim.inputs import samples_in
from onnxslim.model import ValueProbe
from onnxslim.runtime import session_options

__all__ = [
    "HOLDOUT_RATIO",
    "EarlyStop",
    "JudgingData",
    "evaluation_batches",
    "judging_data",
    "judging_size",
    "split_for_judging",
    "units_needed",
]

Feeds = Mapping[str, np.ndarray]


def evaluation_batches(reader: Iterable[dict], samples: int) -> list[dict]:
    """The first batches of the calibration data holding at least ``samples`` samples."""
    batches: list[dict] = []
    for batch in reader:
        batches.append(batch)
        if sum(samples_in(b, reader) for b in batches) >= samples:
            break
    return batches


# The calibration keeps at least this many times the samples it gives up to the guard, or
# CALIBRATION_FLOOR samples (a percentile/entropy range is settled by then: 64 rendered words
# calibrate PP-OCR rec as well as 160) when the guard takes more than a quarter of that.
HOLDOUT_RATIO = 4
CALIBRATION_FLOOR = 64


@dataclasses.dataclass(frozen=True)
class JudgingData:
    """The batches the accuracy guard judges on, the calibration's sample limit (None: the
    reader's own), the report's ``judged_on`` and a warning when calibration samples are reused."""

    batches: list[dict]
    calibration_limit: int | None
    judged_on: dict[str, Any]
    warning: str | None = None


def judging_data(
    reader: Iterable[dict],
    eval_samples: int,
    samples: int | None,
    verification: Sequence[Feeds] = (),
) -> JudgingData:
    """Samples the calibration does not see: the pipeline's ``verification`` feeds when given
    (other data than the calibration's), else the last whole batches of ``reader`` covering
    ``eval_samples`` when the calibration keeps enough (``samples``, or HOLDOUT_RATIO x the
    held-out count); else the first calibration samples again, with a warning."""
    if verification:
        taken = [dict(v) for v in verification[:eval_samples]]
        count = sum(samples_in(b, reader) for b in taken)
        return JudgingData(taken, None, {"source": "verification data", "samples": count})
    tail: collections.deque[tuple[dict, int]] = collections.deque()  # (batch, its samples)
    total = held = 0
    for batch in reader:
        count = samples_in(batch, reader)
        tail.append((batch, count))
        total += count
        held += count
        while len(tail) > 1 and held - tail[0][1] >= eval_samples:
            held -= tail.popleft()[1]
    rest = total - held
    enough = rest >= HOLDOUT_RATIO * held or rest >= max(CALIBRATION_FLOOR, held)
    if (samples is not None and rest >= samples) or enough:
        limit = samples if samples is not None else rest
        judged_on = {"source": "held-out calibration data", "samples": held}
        judged_on["description"] = (
            f"the last {held} of {total} samples; the calibration used the first {limit}"
        )
        return JudgingData([batch for batch, _ in tail], limit, judged_on)
    batches = evaluation_batches(reader, eval_samples)
    count = sum(samples_in(b, reader) for b in batches)
    warning = (
        f"the accuracy guard judged on {count} calibration samples (no unseen samples: give "
        f"verification data or at least {(HOLDOUT_RATIO + 1) * eval_samples} samples)"
    )
    judged_on = {"source": "calibration samples (reused)", "samples": count}
    return JudgingData(batches, samples, judged_on, warning)


# metrics that count errors per unit, with the default bound (onnxslim.fidelity) they judge at
_UNIT_METRICS = {"ctc": 0.99, "seq-top1": 0.99}
# metrics that are weighted means of per-unit scores at most 1 (early stop applies)
_BOUNDED = ("top1", "seq-top1", "ctc", "cosine", "iou")


def units_needed(bound: float) -> int:
    """Units (characters, steps) whose error count pins a score at ``bound`` to half its slack."""
    slack = 1.0 - bound
    return math.ceil(4 * bound / slack) if slack > 0 else 0


def judging_size(
    model: ir.Model,
    first: Sequence[Feeds],
    eval_samples: int,
    most: int,
    metric: TaskMetric | None = None,
) -> tuple[int, str | None]:
    """The samples to judge on (``eval_samples`` .. ``most``) and why when more than
    ``eval_samples``: enough units for the bound's uncertainty where an output is a sequence
    score (CTC, per-step), from the float model's outputs on the ``first`` batches."""
    if not first or most <= eval_samples:
        return eval_samples, None
    probe = ValueProbe(model, [], options=session_options())
    outputs = probe.run(dict(first[0]), probe.outputs)
    metadata = dict(model.metadata_props)
    best, why = eval_samples, None
    for name, array in outputs.items():
        array = np.asarray(array)
        # the user's metric on the outputs it names (None: all), each other its own default
        own = metric if metric is not None and name in (metric.outputs or (name,)) else None
        chosen = own.name if own is not None else choose_metric(name, array)[0]
        if chosen not in _UNIT_METRICS or array.ndim != 3:
            continue
        bound = own.bound if own is not None and own.bound is not None else None
        bound = _UNIT_METRICS[chosen] if bound is None else bound
        # units per sample over the first eval_samples samples (one word says little)
        arrays = [array, *(np.asarray(probe.run(dict(b), [name])[name]) for b in first[1:])]
        samples = max(1, sum(len(a) for a in arrays))
        per_sample = sum(_units(chosen, a, metadata) for a in arrays) / samples
        needed = units_needed(bound)
        if per_sample <= 0 or needed <= 0:
            continue
        count = min(most, max(eval_samples, math.ceil(needed / per_sample)))
        if count > best:
            best = count
            why = (
                f"{chosen} on '{name}' at {bound:g}: {needed} units ({per_sample:.1f} per sample) "
                "put the score's standard error under half the bound's slack"
            )
    return best, why


def _units(chosen: str, array: np.ndarray, metadata: Mapping[str, str]) -> float:
    if chosen == "seq-top1":
        return float(array.shape[0] * array.shape[1])
    characters = ctc_characters(metadata, array.shape[-1])
    if characters is not None:
        return float(sum(len(t) for t in ctc_texts(array, characters)))
    return float(sum(len(d) for d in ctc_decode(array)))


class EarlyStop:
    """Per bounded task metric, the weight of each reference batch; ``check`` after each batch
    says (metric, most it can still score) once a metric can no longer reach its bound."""

    def __init__(self, metrics: Sequence[TaskMetric], reference: Sequence[Feeds]) -> None:
        self.weights: list[tuple[TaskMetric, list[float]]] = []
        for metric in metrics:
            names = metric.outputs
            if metric.function is not None or metric.bound is None or not names:
                continue
            if len(names) != 1 or metric.name.partition("@")[0] not in _BOUNDED:
                continue
            weights = [_weight(metric, np.asarray(r[names[0]])) for r in reference]
            if sum(weights) > 0:
                self.weights.append((metric, weights))

    def start(self) -> list[float]:
        return [0.0] * len(self.weights)

    def check(
        self,
        gained: list[float],
        index: int,
        reference: Feeds,
        candidate: Feeds,
        *,
        bound: bool = True,
        floor: float | None = None,
    ) -> tuple[TaskMetric, float] | None:
        """Adds batch ``index``'s weighted scores to ``gained``; the first metric certain to
        miss its bound (``bound``) or to stay under ``floor`` with the most it can still reach,
        else None."""
        for slot, (metric, weights) in enumerate(self.weights):
            weight = weights[index]
            if weight > 0:
                gained[slot] += weight * metric.score([reference], [candidate])
            total = sum(weights)
            most = (gained[slot] + sum(weights[index + 1 :])) / total
            limits = [metric.bound if bound else None, floor]
            if any(limit is not None and most < limit - 1e-12 for limit in limits):
                return metric, most
        return None


def _weight(metric: TaskMetric, reference: np.ndarray) -> float:
    """The batch's share of the metric's mean: rows (top-1), samples (IoU, cosine), reference
    characters (CTC)."""
    base = metric.name.partition("@")[0]
    if base in ("top1", "seq-top1"):
        return float(np.prod(reference.shape[:-1]))
    if base == "ctc":
        if metric.characters is not None:
            return float(sum(len(t) for t in ctc_texts(reference, metric.characters)))
        return float(sum(len(d) for d in ctc_decode(reference)))
    return float(len(reference))


def split_for_judging(
    options: Any,
    model: ir.Model,
    reader: Any,
    unjudged: bool,
    verification: Sequence[Feeds],
    smoke: bool,
) -> tuple[Any, JudgingData]:
    """The calibration reader and the guard's samples for QuantizeStatic's ``options``: the
    judging size (:func:`judging_size`, on the first sample), then unseen samples where the
    data allows (:func:`judging_data`); ``unjudged`` (smoke data, guard off): the first samples.
    """
    samples, eval_samples = options.samples, options.eval_samples
    if unjudged:
        # nothing to judge (or judged on meaningless data): the timing samples only
        batches = evaluation_batches(reader, eval_samples)
        count = sum(samples_in(b, reader) for b in batches)
        source = "random smoke data" if smoke else "calibration samples (reused)"
        if samples is not None and hasattr(reader, "rewind"):
            reader = copy.copy(reader)
            reader.limit = samples
            reader.rewind()
        return reader, JudgingData(batches, None, {"source": source, "samples": count})
    first = list(verification[:eval_samples]) or evaluation_batches(reader, eval_samples)
    metric = _user_metric(options)
    size, why = judging_size(model, first, eval_samples, options.max_eval_samples, metric)
    judging = judging_data(reader, size, samples, verification)
    if size > eval_samples and judging.judged_on["source"].startswith("calibration samples"):
        # too few samples to hold out the larger set: as many as the data leaves unseen
        fewer = _most_held_out(reader, eval_samples, size, samples)
        judging = judging_data(reader, fewer, samples, verification)
        why = None if fewer == eval_samples else why
    if why is not None:
        judging.judged_on["size_because"] = why
    if judging.calibration_limit is not None and judging.calibration_limit != reader.limit:
        reader = copy.copy(reader)
        reader.limit = judging.calibration_limit
        reader.rewind()
    return reader, judging


def _user_metric(options: Any) -> TaskMetric | None:
    if not options.accuracy_guard or options.metric is None or callable(options.metric):
        return None
    return TaskMetric.parse(options.metric, options.min_score)


def _most_held_out(reader: Iterable[dict], low: int, high: int, samples: int | None) -> int:
    """The largest judging size in [low, high] the data can hold out (low when none can)."""
    total = sum(samples_in(b, reader) for b in reader)
    for size in range(high, low, -1):
        rest = total - size
        fits = rest >= HOLDOUT_RATIO * size or rest >= max(CALIBRATION_FLOOR, size)
        if (samples is not None and rest >= samples) or fits:
            return size
    return low
