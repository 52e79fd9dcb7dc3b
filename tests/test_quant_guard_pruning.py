"""Stages that cannot beat the current best are skipped (issue 17: det spent 146 s keeping
layers in float on op-class candidates slower than the int8 model already found accurate)."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxslim.fidelity import Fidelity
from onnxslim.passes.quantization._candidates import Candidate, Evaluation
from onnxslim.passes.quantization._pruning import beaten, beaten_by, settled
from onnxslim.runtime import InterleavedTiming

WIDTH = 64


def _chain(folder, name: str, layers: int) -> str:
    """x [1, 64] -> ``layers`` x (MatMul 64x64, width-wide): work grows with ``layers``."""
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        inits.append(
            numpy_helper.from_array(rng.normal(size=(WIDTH, WIDTH)).astype(np.float32) / 8, f"w{i}")
        )
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [out], name=f"mm{i}"))
        current = out
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])],
        inits,
    )
    path = folder / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


FIDELITY = Fidelity(max_abs_error=0.0, mean_abs_error=0.0, sqnr_db=40.0, samples=1)


def _candidate(label: str, path, accurate: bool, op_types=("MatMul",)) -> Candidate:
    problems = () if accurate else ("iou@0.5 0.9 < 0.95 on m",)
    return Candidate(label, op_types, path, Evaluation(FIDELITY, problems))


def test_a_failing_candidate_slower_than_an_accurate_one_is_not_searched(tmp_path):
    small, large = _chain(tmp_path, "small", 1), _chain(tmp_path, "large", 400)
    feeds = {"x": np.ones((1, WIDTH), np.float32)}
    tried = [
        _candidate("fast and accurate", small, True),
        _candidate("slow and failing", large, False),
        _candidate("dynamic", large, False, op_types=None),  # never timed here
        _candidate("rescued", large, False),
    ]
    skipped = beaten(tried, {"rescued"}, feeds, runs=5, threads=1)
    assert list(skipped) == ["slow and failing"]
    assert re.fullmatch(
        r"not searched: [0-9.e+-]+ ms, not 10% faster than the accurate 'fast and accurate' "
        r"\([0-9.e+-]+ ms\); widening its ranges or keeping its layers in float cannot make it "
        r"faster",
        skipped["slow and failing"],
    )
    # 400x the work: the failing one may still win, so it is searched
    swapped = [
        _candidate("slow and accurate", large, True),
        _candidate("fast, failing", small, False),
    ]
    assert beaten(swapped, (), feeds, runs=5, threads=1) == {}
    # nothing accurate: nothing to beat, nothing timed
    assert beaten(tried[1:], (), feeds, runs=5, threads=1) == {}


def test_a_failing_candidate_is_searched_only_when_clearly_faster():
    """Within SEARCH_MARGIN (10 %) of the fastest accurate candidate a failing one is not
    searched: a search only puts more of it in float (the timings as the interleaved round
    gives them; the real rounds are timed in the test above)."""
    accurate = {"accurate": 4.0e-3, "slower accurate": 5.0e-3}
    failing = {"as fast": 4.0e-3, "5 % faster": 3.8e-3, "12 % faster": 3.5e-3, "slower": 6e-3}
    skipped = beaten_by(accurate, failing)
    assert list(skipped) == ["as fast", "5 % faster", "slower"]
    assert skipped["5 % faster"] == (
        "not searched: 3.8 ms, not 10% faster than the accurate 'accurate' (4 ms); widening its "
        "ranges or keeping its layers in float cannot make it faster"
    )


def test_the_timing_of_failing_candidates_ends_once_each_is_clearly_on_one_side():
    """beaten's rounds stop (after 4, an even count) once each failing candidate ran, in every
    round, clearly over or clearly under 1/SEARCH_MARGIN of the fastest accurate one's time
    (MiniLM: five failing candidates within 5 % of the accurate one, decided in 4 of 10)."""

    def timing(*seconds: list[float]) -> InterleavedTiming:
        return InterleavedTiming(seconds=list(seconds), order=[[0, 1]] * len(seconds[0]))

    until = settled(accurate=2)
    slow_accurate, accurate = [5.0] * 4, [4.0] * 4
    assert until(timing(slow_accurate, accurate, [4.1] * 4, [2.0] * 4)) is True
    assert until(timing([5.0] * 3, [4.0] * 3, [4.1] * 3, [2.0] * 3)) is False  # 3 rounds
    # 3.6 / 4.0 = 0.9: at the margin itself in one round, undecided
    assert until(timing(slow_accurate, accurate, [4.1, 4.1, 3.6, 4.1])) is False
    # compared with the fastest accurate one: against the slower one 4.1 would be 18 % faster
    assert until(timing([4.0] * 4, [5.0] * 4, [4.1] * 4)) is True


def test_a_candidate_keeping_less_in_float_than_a_failed_one_is_not_emitted(tmp_path):
    from onnxslim.passes.quantization._accuracy_guard import FailedSets

    graph = onnx.load(_chain(tmp_path, "four", 4)).graph
    failed = FailedSets(graph, {"mm0": "user"})
    assert failed.float_nodes(("MatMul",), ["mm3"]) == {"mm0", "mm3"}
    assert failed.float_nodes(("Conv",), []) == {"mm0", "mm1", "mm2", "mm3"}
    failed.add(("MatMul",), ["mm2", "mm3"], None)
    # a subset of the failed float nodes at the same (calibrated) ranges: it cannot pass
    assert failed.covers(("MatMul",), ["mm3"], None)
    assert failed.covers(("MatMul",), [], None)
    # more in float, or other ranges: it may pass
    assert not failed.covers(("MatMul",), ["mm1"], None)
    assert not failed.covers(("MatMul",), ["mm3"], {"h0": (0.0, 1.0)})


def test_automatic_recovery_of_a_base_an_accurate_candidate_beat_is_skipped(tmp_path):
    """The guard timed the recovery base no faster than an accurate candidate (beaten): CLE,
    SmoothQuant and bias correction keep its kernels, so the automatic recovery is skipped with
    the timing as its reason (MiniLM: 56 -> 48 s, same choice); a method asked for still runs."""
    from onnxslim.passes.quantization import QuantizeStatic
    from onnxslim.passes.quantization._recovery import beaten_base

    small, large = _chain(tmp_path, "small", 1), _chain(tmp_path, "large", 400)
    feeds = {"x": np.ones((1, WIDTH), np.float32)}
    tried = [
        _candidate("weight MatMuls int8", small, True),
        _candidate("only Conv/MatMul/Gemm", large, False),
    ]
    skipped = beaten(tried, (), feeds, runs=5, threads=1)
    automatic = QuantizeStatic(calibration=[feeds]).settings
    reason = beaten_base(automatic, skipped, "only Conv/MatMul/Gemm")
    assert list(skipped) == ["only Conv/MatMul/Gemm"]
    assert reason == (
        "'only Conv/MatMul/Gemm' was timed no faster than an accurate candidate (see "
        "searches_skipped): recovering its weights and scales cannot make it faster"
    )
    assert beaten_base(automatic, skipped, "weight MatMuls int8") is None  # not beaten
    for asked in ({"smooth_quant": True}, {"bias_correction": True}, {"qat_epochs": 1}):
        settings = QuantizeStatic(calibration=[feeds], **asked).settings
        assert beaten_base(settings, skipped, "only Conv/MatMul/Gemm") is None, asked
