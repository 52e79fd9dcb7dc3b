"""The quantize_int4 pass's describe hook: exact lines for a shipped run, a fallback and a bare summary."""

from __future__ import annotations

from onnxslim.passes.quantization._describe_int4 import describe
from onnxslim.registry import describe_summary

SHIPPED = {
    "algorithm": "rtn",
    "block_size": 32,
    "symmetric": False,
    "accuracy_level": 4,
    "matmuls_skipped": {"qk": "its B input is an activation, not a constant weight"},
    "matmuls_converted": 3,
    "matmuls_8bit": ["fc2"],
    "judged_on": "verification samples",
    "fidelity": {"mean_cosine": 0.99512, "sqnr_db": 24.31},
    "latency_ms_before": 12.0,
    "latency_ms_after": 8.0,
    "speedup": 1.5,
    "size_bytes_before": 4 << 20,
    "size_bytes_after": 1 << 20,
}


def test_shipped_run_reads_as_scheme_kept_fidelity_speed_size() -> None:
    assert describe_summary("quantize_int4", SHIPPED) == [
        "Int4 weight-only MatMuls (rtn, block 32, asymmetric, accuracy_level 4): 3 MatMul(s) "
        "converted, 1 kept in float.",
        "8-bit blocks for 1 MatMul(s) the guard found sensitive: fc2.",
        "Kept in float (its B input is an activation, not a constant weight): qk.",
        "Outputs vs float: mean cosine 0.9951, SQNR 24.3 dB (judged on verification samples).",
        "Latency 12 ms -> 8 ms (1.50x faster).",
        "File size 4.00 MiB -> 1.00 MiB.",
    ]


def test_fallback_says_why_the_float_model_came_back() -> None:
    summary = {
        "algorithm": "hqq",
        "block_size": 64,
        "symmetric": False,
        "accuracy_level": None,
        "matmuls_skipped": {},
        "matmuls_converted": 0,
        "fallback": "returned the float model: accuracy: mean output cosine 0.9755 < 0.99",
    }
    assert describe_summary("quantize_int4", summary) == [
        "Int4 weight-only MatMuls (hqq, block 64, asymmetric): 0 MatMul(s) converted, 0 kept in "
        "float.",
        "Returned the float model: accuracy: mean output cosine 0.9755 < 0.99.",
    ]


def test_a_bare_summary_still_reads() -> None:
    assert describe({}) == ["Int4 weight-only MatMuls (?, asymmetric)."]
    assert describe_summary("quantize_int4", {}) == []  # the registry shows nothing for nothing
