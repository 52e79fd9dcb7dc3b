"""The one interleaved timer: run order, round counts and round-by-round ratios on real ORT sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.benchmark import benchmark
from onnxslim.benchmark._benchmark import _timed_rounds
from onnxslim.benchmark._runner import SessionRunner
from onnxslim.runtime import (
    create_session,
    interleaved_timing,
    rotation,
    session_options,
    session_run,
)

_RELU = (
    '<ir_version: 8, opset_import: ["" : 13]> g (float[N,4] x) => (float[N,4] y) { y = Relu(x) }'
)
_TANH = (
    '<ir_version: 8, opset_import: ["" : 13]> g (float[N,4] x) => (float[N,4] y) { y = Tanh(x) }'
)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("timing")
    result = []
    for name, text in (("relu", _RELU), ("tanh", _TANH), ("relu2", _RELU)):
        path = folder / f"{name}.onnx"
        onnx.save(onnx.parser.parse_model(text), path)
        result.append(path)
    return result


_FEEDS = [{"x": np.full((1, 4), float(i), np.float32)} for i in range(2)]


class _Logged:
    """A real SessionRunner that records (label, feed index) of every timed run."""

    def __init__(self, path: Path, label: str, log: list[tuple[str, int]]) -> None:
        options = session_options(allow_spinning=False)
        self.runner = SessionRunner(path, "CPUExecutionProvider", options, None, _FEEDS)
        self.label, self.log = label, log

    def run(self, index: int = 0) -> float:
        self.log.append((self.label, index))
        return self.runner.run(index)


def test_benchmark_rounds_rotate_the_order_every_round(paths):
    log: list[tuple[str, int]] = []
    runners = [_Logged(path, label, log) for path, label in zip(paths, "ABC")]
    timings = _timed_rounds(runners, 4, None)
    assert [len(seconds) for seconds in timings] == [4, 4, 4]
    assert log == [
        ("A", 0), ("B", 0), ("C", 0),
        ("B", 1), ("C", 1), ("A", 1),
        ("C", 2), ("A", 2), ("B", 2),
        ("A", 3), ("B", 3), ("C", 3),
    ]  # fmt: skip
    assert all(s > 0 for seconds in timings for s in seconds)


def test_benchmark_time_budget_runs_exactly_three_rounds_when_spent(paths):
    log: list[tuple[str, int]] = []
    runners = [_Logged(path, label, log) for path, label in zip(paths[:2], "AB")]
    timings = _timed_rounds(runners, None, 0.0)
    assert [len(seconds) for seconds in timings] == [3, 3]
    assert log == [("A", 0), ("B", 0), ("B", 1), ("A", 1), ("A", 2), ("B", 2)]


def test_benchmark_ratio_is_the_median_of_round_by_round_ratios(paths):
    result = benchmark(paths, runs=7, warmup=1, coverage=False)
    reference = result.measurements[0]
    assert reference.latency_ratio is None
    for candidate in result.measurements[1:]:
        ratios = [c / r for c, r in zip(candidate.latencies_ms, reference.latencies_ms)]
        assert candidate.latency_ratio.pairs == 7 == len(candidate.latencies_ms)
        assert candidate.latency_ratio.median == pytest.approx(float(np.median(ratios)), rel=1e-9)
        assert candidate.latency_ratio.p10 == pytest.approx(np.percentile(ratios, 10), rel=1e-9)
        assert candidate.latency_ratio.p90 == pytest.approx(np.percentile(ratios, 90), rel=1e-9)


def test_latency_guard_returns_one_figure_per_model(paths):
    from onnxslim.passes.quantization import interleaved_latency

    latencies = interleaved_latency(paths, _FEEDS[0], runs=3, warmup=1)
    assert len(latencies) == 3 and all(isinstance(s, float) and s > 0 for s in latencies)


# ---------------------------------------------------------------- the timer itself


def _logged_runs(paths: list[Path], log: list[tuple[int, int]]) -> list:
    """A real session per model; each run records (model index, feed index)."""
    runs = []
    for model_index, path in enumerate(paths):
        run = session_run(
            create_session(path, "cpu", session_options(allow_spinning=False)), _FEEDS
        )

        def logged(index: int, run=run, model_index=model_index) -> object:
            log.append((model_index, index))
            return run(index)

        runs.append(logged)
    return runs


def test_rotation_is_a_left_shift_by_the_round():
    assert [rotation(r, 3) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert [rotation(r, 1) for r in range(2)] == [[0], [0]]


def test_timer_records_order_rounds_and_round_by_round_ratios(paths):
    log: list[tuple[int, int]] = []
    timing = interleaved_timing(_logged_runs(paths, log), rounds=4, warmup=2)
    # warm-up: each model alone, feeds 0..warmup-1; then one run of each model per round
    assert log[:6] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert log[6:] == [(m, r) for r in range(4) for m in rotation(r, 3)]
    assert timing.rounds == 4 and timing.repeat == 1
    assert timing.order == [rotation(r, 3) for r in range(4)]
    assert [len(s) for s in timing.seconds] == [4, 4, 4]
    assert timing.ratios(2) == [c / r for c, r in zip(timing.seconds[2], timing.seconds[0])]
    assert timing.ratios(0, reference=1) == [
        c / r for c, r in zip(timing.seconds[0], timing.seconds[1])
    ]
    assert timing.quantiles() == [float(np.median(s)) for s in timing.seconds]
    assert timing.quantiles(0.1) == [float(np.quantile(s, 0.1)) for s in timing.seconds]


def test_timer_budget_runs_the_minimum_rounds_then_stops(paths):
    log: list[tuple[int, int]] = []
    timing = interleaved_timing(_logged_runs(paths[:2], log), time_budget_s=0.0, min_rounds=5)
    assert timing.rounds == 5 and len(log) == 10
    assert timing.order == [[0, 1], [1, 0], [0, 1], [1, 0], [0, 1]]


def test_timer_blocks_fast_models_in_equal_counts(paths):
    """A sub-millisecond model is timed in blocks; the count is capped at 1000 runs a block."""
    log: list[tuple[int, int]] = []
    timing = interleaved_timing(_logged_runs(paths[:2], log), rounds=2, warmup=1, min_block_s=60.0)
    assert timing.repeat == 1000
    assert len(log) == 2 + 2 * 2 * 1000
    assert log[2:1002] == [(0, 0)] * 1000 and log[1002:2002] == [(1, 0)] * 1000
    assert [len(s) for s in timing.seconds] == [2, 2]


def test_timer_needs_rounds_or_a_budget(paths):
    with pytest.raises(ValueError, match="give rounds or time_budget_s"):
        interleaved_timing([lambda index: None])


def test_session_run_cycles_through_the_feeds(paths):
    run = session_run(create_session(paths[0], "cpu"), _FEEDS)
    assert [float(run(i)[0][0, 0]) for i in range(4)] == [0.0, 1.0, 0.0, 1.0]
