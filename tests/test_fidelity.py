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
