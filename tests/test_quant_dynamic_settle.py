"""The latency guard prefers dynamic MatMuls within 10 % of the fastest candidate (their
fidelity), but only once a head-to-head timing against the fastest static candidate keeps
them within DYNAMIC_SLACK: the ranking round alone, on a busy machine, let a dynamic PP-OCR
rec model lead that ran 15 % slower. Real ORT sessions on two real files."""

from __future__ import annotations

import numpy as np

from onnxslim.fidelity import Fidelity
from onnxslim.passes.quantization._candidates import Candidate, Evaluation
from onnxslim.passes.quantization._latency_guard import _best_first, settle_dynamic
from tests.test_quant_guard_pruning import WIDTH, _chain

FEEDS = {"x": np.ones((1, WIDTH), np.float32)}


def _candidate(label: str, path, speedup: float, dynamic: bool) -> Candidate:
    fidelity = Fidelity(0.0, 0.0, float("inf"), None, 1)
    return Candidate(
        label, None if dynamic else ("MatMul",), path, Evaluation(fidelity), speedup=speedup
    )


def test_a_dynamic_lead_slower_head_to_head_gives_way_to_the_fastest(tmp_path):
    fast, slow = _chain(tmp_path, "fast", 1), _chain(tmp_path, "slow", 400)
    tried = [
        _candidate("all quantizable ops", fast, 1.30, dynamic=False),
        _candidate("dynamic MatMul/Gemm", slow, 1.25, dynamic=True),  # ranked within 10 %
    ]
    ordered = _best_first(tried, [0, 1])
    assert ordered == [1, 0]  # the ranking alone: dynamic first
    assert settle_dynamic(tried, ordered, FEEDS, runs=5, threads=1) == [0, 1]


def test_a_dynamic_lead_that_is_the_fastest_or_a_static_lead_stays_untimed(tmp_path):
    missing = tmp_path / "never-opened.onnx"  # timing it would fail: nothing is timed
    tried = [
        _candidate("all quantizable ops", missing, 1.20, dynamic=False),
        _candidate("dynamic MatMul/Gemm", missing, 1.25, dynamic=True),
    ]
    assert settle_dynamic(tried, [1, 0], FEEDS, runs=5, threads=1) == [1, 0]
    assert settle_dynamic(tried, [0, 1], FEEDS, runs=5, threads=1) == [0, 1]
