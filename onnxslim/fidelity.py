"""Output fidelity between a reference and a candidate model: abs errors, SQNR, top-1 agreement,
and the task metrics the quantization guard judges on (top-1, cosine, SQNR, IoU, per-step top-1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxslim._json import json_float
from onnxslim._task_metrics import (
    choose_metric,
    ctc_agreement,
    ctc_characters,
    ctc_decode,
    ctc_texts,
    edit_distance,
    map_iou,
    mean_cosine,
    seq_top1_agreement,
    top1_agreement,
)

__all__ = [
    "DEFAULT_MIN_SCORE",
    "METRICS",
    "Fidelity",
    "FidelityBounds",
    "TaskMetric",
    "choose_metric",
    "compare_outputs",
    "ctc_agreement",
    "ctc_characters",
    "ctc_decode",
    "ctc_texts",
    "edit_distance",
    "decisive_top1_agreement",
    "looks_like_scores",
    "map_iou",
    "mean_cosine",
    "seq_top1_agreement",
    "sqnr_db",
    "top1_agreement",
]


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when identical."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = reference - np.asarray(candidate, dtype=np.float64)
    noise_power = float(np.sum(noise * noise))
    signal_power = float(np.sum(reference * reference))
    if noise_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal_power / noise_power))


def looks_like_scores(array: np.ndarray) -> bool:
    """Class scores [N, C] or per-step token scores [N, T, C], C > 1: logits or probability rows.

    Values in [0, 1] whose rows do not sum to 1 are independent probabilities (a per-frame
    speech probability [N, T], multi-label sigmoids): an argmax over them is no class decision.
    """
    if not (
        np.issubdtype(array.dtype, np.floating) and array.ndim in (2, 3) and array.shape[-1] > 1
    ):
        return False
    finite = array[np.isfinite(array)]
    if finite.size == 0 or finite.min() < 0 or finite.max() > 1 + 1e-6:
        return True
    if finite.max() == finite.min():  # constant (all-zero logits): nothing says probabilities
        return True
    rows = array.reshape(-1, array.shape[-1]).astype(np.float64)
    return bool(np.allclose(np.nan_to_num(rows).sum(-1), 1.0, atol=1e-3))


@dataclasses.dataclass
class Fidelity:
    """Agreement of a candidate's outputs with a reference's, over all samples and outputs."""

    max_abs_error: float
    mean_abs_error: float
    sqnr_db: float
    top1_agreement: float | None = None
    samples: int = 0
    # Outputs whose shape differs (data-dependent lengths: NonZero, TopK, NMS): not comparable.
    changed_shapes: tuple[str, ...] = ()

    def as_record(self) -> dict[str, Any]:
        """The figures as floats for summaries and reports (encoded once, at the JSON edge);
        ``changed_shapes`` only when an output changed shape."""
        record = dataclasses.asdict(self)
        if not self.changed_shapes:
            del record["changed_shapes"]
        else:
            record["changed_shapes"] = list(self.changed_shapes)
        return record

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats as "inf", "-inf", "nan"."""
        record: dict[str, Any] = {
            "max_abs_error": json_float(self.max_abs_error),
            "mean_abs_error": json_float(self.mean_abs_error),
            "sqnr_db": json_float(self.sqnr_db),
            "top1_agreement": json_float(self.top1_agreement),
            "samples": self.samples,
        }
        if self.changed_shapes:
            record["changed_shapes"] = list(self.changed_shapes)
        return record

    def describe(self) -> str:
        text = f"max|Δ| {self.max_abs_error:.3g}, SQNR {self.sqnr_db:.1f} dB"
        if self.changed_shapes:
            text += "; " + "; ".join(self.changed_shapes)
        if self.top1_agreement is not None:
            text += f", top-1 {100 * self.top1_agreement:.1f}%"
        return text


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]]
) -> Fidelity:
    """Compares per-sample output dicts (same names, same order of samples). An output whose
    shape differs is not compared: it is named in ``changed_shapes`` and max|Δ| is inf."""
    max_abs, abs_sum, count = 0.0, 0.0, 0
    signal, noise = 0.0, 0.0
    agree, total = 0, 0
    changed: dict[str, str] = {}
    for ref_outputs, cand_outputs in zip(reference, candidate, strict=True):
        for name, ref in ref_outputs.items():
            cand = cand_outputs[name]
            if ref.shape != cand.shape:
                changed.setdefault(name, _shape_change(name, ref, cand))
                max_abs = float("inf")
                continue
            if not np.issubdtype(ref.dtype, np.number) or ref.size == 0:
                if not np.array_equal(ref, cand):
                    max_abs = float("inf")
                continue
            ref64 = ref.astype(np.float64)
            diff = ref64 - cand.astype(np.float64)
            with np.errstate(invalid="ignore"):
                abs_diff = np.abs(diff)
            if np.isnan(abs_diff).any():
                nan_mismatch = np.isnan(ref64) != np.isnan(cand.astype(np.float64))
                if nan_mismatch.any():
                    max_abs = float("inf")
                abs_diff = np.nan_to_num(abs_diff, nan=0.0)
                diff = np.nan_to_num(diff, nan=0.0)
                ref64 = np.nan_to_num(ref64, nan=0.0)
            max_abs = max(max_abs, float(abs_diff.max()))
            abs_sum += float(abs_diff.sum())
            count += abs_diff.size
            signal += float(np.sum(ref64 * ref64))
            noise += float(np.sum(diff * diff))
            if looks_like_scores(ref):
                agree += int(np.sum(ref.argmax(-1) == cand.argmax(-1)))
                total += int(np.prod(ref.shape[:-1]))
    if noise == 0.0:
        sqnr = float("inf")
    elif signal == 0.0:
        sqnr = float("-inf")
    else:
        sqnr = 10.0 * float(np.log10(signal / noise))
    return Fidelity(
        max_abs_error=max_abs,
        mean_abs_error=abs_sum / count if count else 0.0,
        sqnr_db=sqnr,
        top1_agreement=(agree / total) if total else None,
        samples=len(reference),
        changed_shapes=tuple(changed.values()),
    )


def _shape_change(name: str, reference: np.ndarray, candidate: np.ndarray) -> str:
    return (
        f"output '{name}' changed shape {list(reference.shape)} -> {list(candidate.shape)} "
        "(a data-dependent length, e.g. NonZero/TopK/NonMaxSuppression: not comparable)"
    )


def decisive_top1_agreement(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    margin: float = 0.01,
) -> tuple[float | None, int]:
    """Top-1 agreement over rows of class scores whose reference top-1 leads the runner-up by
    more than ``margin`` of the row's range; (None, 0) when there are none.

    A near-tie (e.g. an untrained net whose scores barely depend on the input) flips under any
    noise and says nothing about the candidate's damage; SQNR covers those outputs.
    """
    agree, total = 0, 0
    for ref_outputs, cand_outputs in zip(reference, candidate):
        for name, ref in ref_outputs.items():
            if not looks_like_scores(ref) or ref.shape[-1] < 2:
                continue
            rows = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
            cand = np.asarray(cand_outputs[name]).reshape(rows.shape)
            ordered = np.sort(rows, axis=-1)
            spread = ordered[:, -1] - ordered[:, 0]
            clear = (ordered[:, -1] - ordered[:, -2]) > margin * np.maximum(spread, 1e-30)
            agree += int(np.sum(rows[clear].argmax(-1) == cand[clear].argmax(-1)))
            total += int(clear.sum())
    return (agree / total if total else None), total


Outputs = Sequence[Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class FidelityBounds:
    """What a candidate's outputs must keep against the reference; None = not checked.

    The one bounds type: the pipeline's bounds after lossy passes (recipe ``[bounds]``), the
    quantization accuracy guard, and the fidelity half of the benchmark gates.

    Attributes:
        min_sqnr_db: Output SQNR floor (dB).
        min_top1_agreement: Top-1 agreement floor on class-score outputs, in [0, 1].
        max_abs_error: Largest absolute output difference allowed.
        metric: A user check ``(reference_outputs, candidate_outputs) -> bool`` over lists of
            per-sample output dicts; needs the outputs (see :meth:`violations`).
    """

    min_sqnr_db: float | None = None
    min_top1_agreement: float | None = None
    max_abs_error: float | None = None
    metric: Callable[[list, list], bool] | None = None

    @classmethod
    def off(cls) -> FidelityBounds:
        return cls()

    @property
    def enabled(self) -> bool:
        return any(
            value is not None
            for value in (
                self.min_sqnr_db,
                self.min_top1_agreement,
                self.max_abs_error,
                self.metric,
            )
        )

    def violations(
        self,
        fidelity: Fidelity,
        reference: Outputs | None = None,
        candidate: Outputs | None = None,
    ) -> list[str]:
        """One line per bound ``fidelity`` misses; empty when all hold.

        Without the outputs this is the pipeline's check (top-1 over every row). Given the
        ``reference`` and ``candidate`` outputs (the quantization guard's check), top-1 counts
        only rows with a decisive reference top-1 and the user ``metric`` runs.
        """
        if reference is None or candidate is None:
            return self._summary_violations(fidelity)
        problems = list(fidelity.changed_shapes)
        if self.min_sqnr_db is not None and fidelity.sqnr_db < self.min_sqnr_db:
            problems.append(f"output SQNR {fidelity.sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB")
        if self.min_top1_agreement is not None and fidelity.top1_agreement is not None:
            agreement, decisive = decisive_top1_agreement(reference, candidate)
            if agreement is not None and agreement < self.min_top1_agreement:
                problems.append(
                    f"top-1 agreement {100 * agreement:.1f}% < {100 * self.min_top1_agreement:g}% "
                    f"(on {decisive} samples with a clear float top-1)"
                )
        if self.max_abs_error is not None and fidelity.max_abs_error > self.max_abs_error:
            problems.append(f"max abs error {fidelity.max_abs_error:.3g} > {self.max_abs_error}")
        if self.metric is not None and not self.metric(list(reference), list(candidate)):
            problems.append("the user metric failed")
        return problems

    def _summary_violations(self, fidelity: Fidelity) -> list[str]:
        if self.metric is not None:
            raise TypeError("a fidelity metric needs the outputs: violations(fidelity, ref, cand)")
        problems = list(fidelity.changed_shapes)
        if self.min_sqnr_db is not None and fidelity.sqnr_db < self.min_sqnr_db:
            problems.append(f"SQNR {fidelity.sqnr_db:.1f} dB < {self.min_sqnr_db} dB")
        if (
            self.min_top1_agreement is not None
            and fidelity.top1_agreement is not None
            and fidelity.top1_agreement < self.min_top1_agreement
        ):
            problems.append(
                f"top-1 agreement {fidelity.top1_agreement:.3f} < {self.min_top1_agreement}"
            )
        if self.max_abs_error is not None and fidelity.max_abs_error > self.max_abs_error:
            problems.append(f"max abs error {fidelity.max_abs_error:.3g} > {self.max_abs_error}")
        return problems


# -- task metrics ------------------------------------------------------------------------------
# What the accuracy guard judges a candidate on: the task's own score, not a proxy. Each function
# takes one output's arrays, samples on axis 0 (batches concatenated), and returns a score in which
# higher is better.

MetricFunction = Callable[[list, list], "float | bool"]

# Defaults (decided in issue 17): top-1 keeps 95% of the decisions; an embedding keeps 0.99 mean
# cosine (about 17 dB SQNR on zero-mean features); a map keeps 95% IoU of its thresholded region;
# a sequence keeps 99% of its per-step decisions (a 25-step word then flips under one step in 4).
# A CTC decode keeps 99% of the float model's characters (edit distance), compared as the text a
# user reads when the model names its characters (edge spaces stripped, inner runs collapsed).
DEFAULT_MIN_SCORE = {
    "top1": 0.95,
    "cosine": 0.99,
    "sqnr": 20.0,
    "iou": 0.95,
    "seq-top1": 0.99,
    "ctc": 0.99,
}
METRICS = ("top1", "cosine", "sqnr", "iou@T", "seq-top1", "ctc")  # ctc: greedy decodes, blank 0


@dataclasses.dataclass(frozen=True)
class TaskMetric:
    """A task metric over the guard's outputs and the floor its score must reach.

    ``name``: ``top1``, ``cosine``, ``sqnr`` (dB), ``iou@T`` (maps thresholded at T),
    ``seq-top1`` (per-step argmax), ``ctc`` (greedy CTC decodes, blank 0: characters kept) or
    ``user`` (``function``: ``(reference_outputs,
    candidate_outputs) -> bool | float`` over lists of per-batch output dicts). ``outputs``:
    the outputs it judges (None: every floating output). ``reason``: why it was chosen.
    ``characters``: for ``ctc``, the text of each class (:func:`ctc_characters` reads it from a
    model's metadata); the decodes are then compared as text, else as class ids.
    """

    name: str
    min_score: float | None = None
    outputs: tuple[str, ...] | None = None
    function: MetricFunction | None = None
    reason: str = ""
    characters: tuple[str, ...] | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def parse(cls, spec: str | MetricFunction, min_score: float | None = None) -> TaskMetric:
        """``"cosine"``, ``"iou@0.3"``, ``"ctc"`` ... or a callable; a ValueError names a bad one."""
        if callable(spec):
            return cls("user", min_score, function=spec, reason="given by the user")
        text = str(spec).strip().lower()
        text = "seq-top1" if text in ("per-step-top1", "per-step top1") else text
        base, _, threshold = text.partition("@")
        if base not in DEFAULT_MIN_SCORE or (threshold and base != "iou"):
            raise ValueError(
                f"unknown metric '{spec}'; choose one of {', '.join(METRICS)} (e.g. iou@0.5)."
            )
        if base == "iou":
            try:
                float(threshold or 0.5)
            except ValueError:
                raise ValueError(f"metric '{spec}': the IoU threshold must be a number.") from None
            text = f"iou@{float(threshold or 0.5):g}"
        return cls(text, min_score, reason="given by the user")

    @property
    def bound(self) -> float | None:
        """The floor: ``min_score``, else the metric's default (None for a bool user metric)."""
        if self.min_score is not None:
            return self.min_score
        return DEFAULT_MIN_SCORE.get(self.name.partition("@")[0])

    def score(self, reference: Outputs, candidate: Outputs) -> float:
        """The metric's score; for several outputs the worst one."""
        if self.function is not None:
            return float(self.function(list(reference), list(candidate)))
        if self._changed_shape(reference, candidate) is not None:
            return float("-inf")
        scores = [
            self._score_one(np.concatenate([r[n] for r in reference]), _joined(candidate, n))
            for n in self._judged(reference)
        ]
        return min(scores) if scores else float("inf")

    def violation(self, reference: Outputs, candidate: Outputs) -> str | None:
        """One line when the score misses the floor (a bool user metric: when it is False)."""
        return self.judge(reference, candidate)[1]

    def judge(self, reference: Outputs, candidate: Outputs) -> tuple[float, str | None]:
        """The score and the violation line (None: it holds), computing the metric once."""
        changed = self._changed_shape(reference, candidate)
        if changed is not None:
            return float("-inf"), changed
        value, bound = self.score(reference, candidate), self.bound
        if self.function is not None and bound is None:
            return value, (None if value else "the user metric failed")
        if bound is None or value >= bound:
            return value, None
        unit = " dB" if self.name == "sqnr" else ""
        return value, f"{self.name} {value:.4g}{unit} < {bound:g}{unit}"

    def _changed_shape(self, reference: Outputs, candidate: Outputs) -> str | None:
        """The first judged output whose shape differs in some sample (None: all comparable)."""
        if self.function is not None:
            return None
        for name in self._judged(reference):
            for ref, cand in zip(reference, candidate):
                if np.shape(ref[name]) != np.shape(cand[name]):
                    return _shape_change(name, np.asarray(ref[name]), np.asarray(cand[name]))
        return None

    def _judged(self, reference: Outputs) -> list[str]:
        first = reference[0] if reference else {}
        names = self.outputs if self.outputs is not None else list(first)
        return [n for n in names if np.issubdtype(np.asarray(first[n]).dtype, np.floating)]

    def _score_one(self, reference: np.ndarray, candidate: np.ndarray) -> float:
        base, _, threshold = self.name.partition("@")
        if base == "top1":
            return top1_agreement(reference, candidate)
        if base == "seq-top1":
            return seq_top1_agreement(reference, candidate)
        if base == "ctc":
            return ctc_agreement(reference, candidate, characters=self.characters)
        if base == "cosine":
            return mean_cosine(reference, candidate)
        if base == "iou":
            return map_iou(reference, candidate, float(threshold or 0.5))
        return sqnr_db(reference, candidate)


def _joined(outputs: Outputs, name: str) -> np.ndarray:
    return np.concatenate([o[name] for o in outputs])
