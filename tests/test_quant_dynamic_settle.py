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


def test_a_latency_variant_goes_ahead_of_its_base_only_when_timed_at_least_as_fast(tmp_path):
    # the digits ResNet: the 1-channel stem's int8 kernel took 58 us against 16 us in float;
    # within the 10 % window the earlier (more int8) candidate goes first, except for the
    # variant that moves a profiled slow kernel back to float and was timed no slower
    path = tmp_path / "unused.onnx"
    base = _candidate("all quantizable ops", path, 1.60, dynamic=False)
    other = _candidate("elementwise ops in float", path, 1.58, dynamic=False)

    def variant(speedup: float) -> Candidate:
        entry = _candidate("all quantizable ops, slowest int8 node in float", path, speedup, False)
        return entry.replace(variant_of=base.label)

    assert _best_first([base, other, variant(1.63)], [0, 1, 2]) == [2, 0, 1]
    assert _best_first([base, other, variant(1.60)], [0, 1, 2]) == [2, 0, 1]  # a tie: the evidence
    assert _best_first([base, other, variant(1.57)], [0, 1, 2]) == [0, 1, 2]
    # far faster than everything (outside the window) leads on speed alone, as any candidate
    assert _best_first([base, other, variant(2.0)], [0, 1, 2])[0] == 2
