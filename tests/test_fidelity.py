"""Fidelity: the one bounds type, today's violation messages pinned, NaN encoded as "nan"."""

from __future__ import annotations

import json

import numpy as np

import onnxslim
from onnxslim import Fidelity


def scores(rows: list[list[float]]) -> dict[str, np.ndarray]:
    return {"y": np.asarray(rows, dtype=np.float32)}


def test_bounds_violation_messages() -> None:
    fidelity = Fidelity(max_abs_error=0.5, mean_abs_error=0.1, sqnr_db=12.34, top1_agreement=0.9)
    bounds = onnxslim.Bounds(min_sqnr_db=20.0, min_top1_agreement=0.95, max_abs_error=0.25)
    assert bounds.violations(fidelity) == [
        "SQNR 12.3 dB < 20.0 dB",
        "top-1 agreement 0.900 < 0.95",
        "max abs error 0.5 > 0.25",
    ]
    assert onnxslim.Bounds().violations(fidelity) == []
    # top-1 undefined (no class scores): not a violation
    no_top1 = Fidelity(max_abs_error=0.0, mean_abs_error=0.0, sqnr_db=30.0)
    assert bounds.violations(no_top1) == []


def test_fidelity_nan_is_written_as_nan() -> None:
    fidelity = Fidelity(
        max_abs_error=float("inf"),
        mean_abs_error=float("nan"),
        sqnr_db=float("-inf"),
        top1_agreement=None,
        samples=2,
    )
    assert fidelity.to_dict() == {
        "max_abs_error": "inf",
        "mean_abs_error": "nan",
        "sqnr_db": "-inf",
        "top1_agreement": None,
        "samples": 2,
    }
    assert json.loads(json.dumps(fidelity.to_dict()))["mean_abs_error"] == "nan"


def guard_case() -> tuple[list, list, Fidelity]:
    # row 0 decisive (5 vs 1), row 1 a near-tie (1.0 vs 0.999): only row 0 counts when decisive
    reference = [scores([[5.0, 1.0, 0.0], [1.0, 0.999, 0.0]])]
    candidate = [scores([[0.0, 1.0, 5.0], [0.999, 1.0, 0.0]])]
    return reference, candidate, onnxslim.compare_outputs(reference, candidate)


def test_guard_form_matches_the_quantization_accuracy_bound() -> None:
    from onnxslim.fidelity import FidelityBounds, decisive_top1_agreement

    reference, candidate, fidelity = guard_case()
    assert fidelity.top1_agreement == 0.0
    assert decisive_top1_agreement(reference, candidate) == (0.0, 1)
    expected = [
        f"output SQNR {fidelity.sqnr_db:.1f} dB < 20 dB",
        "top-1 agreement 0.0% < 95% (on 1 samples with a clear float top-1)",
        "the user metric failed",
    ]

    def metric(ref: list, cand: list) -> bool:
        return len(ref) == len(cand) == 2

    new = FidelityBounds(min_sqnr_db=20.0, min_top1_agreement=0.95, metric=metric)
    assert new.violations(fidelity, reference, candidate) == expected
    assert not FidelityBounds.off().enabled and new.enabled
    assert FidelityBounds.off().violations(fidelity, reference, candidate) == []


def test_summary_form_counts_every_row() -> None:
    from onnxslim.fidelity import FidelityBounds

    _, _, fidelity = guard_case()
    assert FidelityBounds(min_top1_agreement=0.5).violations(fidelity) == [
        "top-1 agreement 0.000 < 0.5"
    ]


def test_json_safe_is_the_one_encoding() -> None:
    from pathlib import Path

    from onnxslim._json import json_float, json_safe

    assert [json_float(v) for v in (1.5, float("inf"), float("-inf"), float("nan"), None)] == [
        1.5,
        "inf",
        "-inf",
        "nan",
        None,
    ]
    document = {
        1: (np.float32("nan"), np.int64(3), Path("a/b")),
        "x": [True, {"y": np.float64("-inf")}],
    }
    assert json_safe(document) == {"1": ["nan", 3, "a/b"], "x": [True, {"y": "-inf"}]}
    assert type(json_safe(np.int64(3))) is int and json_safe(True) is True


def test_independent_probabilities_are_not_class_scores():
    """A per-frame speech probability [N, T] (sigmoids, rows not summing to 1) has no top-1:
    an argmax over time once made distillation rank an untrained epoch first."""
    from onnxslim.fidelity import compare_outputs, looks_like_scores

    rng = np.random.default_rng(0)
    frames = 1 / (1 + np.exp(-rng.normal(size=(4, 50)))).astype(np.float32)
    logits = rng.normal(size=(4, 10)).astype(np.float32)
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert not looks_like_scores(frames)
    assert looks_like_scores(logits) and looks_like_scores(softmax)
    assert compare_outputs([{"p": frames}], [{"p": frames * 0.9}]).top1_agreement is None
    assert compare_outputs([{"p": softmax}], [{"p": softmax}]).top1_agreement == 1.0
