"""The one interleaved timer: run order, round counts and round-by-round ratios on real ORT sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.benchmark import benchmark
from onnxslim.benchmark._benchmark import _timed_rounds
from onnxslim.benchmark._runner import SessionRunner
from onnxslim.runtime import session_options

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
