"""The accuracy guard judges on enough unseen samples for its bound, and stops an evaluation
once the bound can no longer be met (issue 17: rec shipped 0.984 judged 1.0 on 8 words)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim import PassContext
from onnxslim.fidelity import TaskMetric
from onnxslim.passes.quantization import QuantizeStatic
from onnxslim.passes.quantization._judging import EarlyStop, judging_data, units_needed

TABLE = ("", "a", "b", "c", " ")


def _scores(paths: list[list[int]], classes: int = 5) -> np.ndarray:
    return np.stack([np.eye(classes, dtype=np.float32)[p] for p in paths])


def test_units_put_the_standard_error_under_half_the_slack():
    # n >= 4 b / (1 - b): sqrt(p (1 - p) / n) <= p / 2 at p = 1 - b
    assert units_needed(0.99) == 396
    assert units_needed(0.95) == 76
    assert units_needed(1.0) == 0
    p, n = 0.01, units_needed(0.99)
    assert np.sqrt(p * (1 - p) / n) <= p / 2


def _ctc_batches(count: int) -> list[dict]:
    return [{"p": _scores([[1, 0, 2, 0, 3, 0]])} for _ in range(count)]  # "abc" each


def test_early_stop_fires_at_the_first_batch_the_bound_is_out_of_reach():
    metric = TaskMetric("ctc", outputs=("p",), characters=TABLE)  # bound 0.99
    reference = _ctc_batches(10)  # 30 characters: 0.3 errors allowed
    stop = EarlyStop([metric], reference)
    assert stop.weights == [(metric, [3.0] * 10)]
    wrong = {"p": _scores([[1, 0, 2, 0, 1, 0]])}  # "aba": one edit
    gained = stop.start()
    found = stop.check(gained, 0, reference[0], wrong)
    assert found is not None and found[0] is metric
    assert found[1] == pytest.approx(29 / 30)  # 2 of 3 kept, 27 characters still to come
    # right until the last batch: never out of reach before it
    gained = stop.start()
    assert all(stop.check(gained, i, reference[i], reference[i]) is None for i in range(9))
    assert stop.check(gained, 9, reference[9], wrong) is not None


def test_early_stop_never_rejects_what_the_full_evaluation_passes():
    rng = np.random.default_rng(0)
    metric = TaskMetric("iou@0.5", 0.9, outputs=("m",))
    reference = [{"m": (rng.random((1, 1, 8, 8)) > 0.5).astype(np.float32)} for _ in range(12)]
    stop = EarlyStop([metric], reference)
    for trial in range(40):
        flips = rng.random(12) < trial / 80
        candidate = [{"m": 1 - r["m"]} if f else r for r, f in zip(reference, flips)]
        gained, stopped = stop.start(), None
        for index in range(12):
            stopped = stop.check(gained, index, reference[index], candidate[index])
            if stopped is not None:
                break
        full = metric.score(reference, candidate)
        # stopped: the full score misses the bound too, and it is at most the bound given
        assert stopped is None or (full < 0.9 and full <= stopped[1] + 1e-12)
        if stopped is None:
            assert full >= 0.9 or index == 11


def test_the_held_out_split_keeps_a_calibration_floor_for_large_judging_sets():
    batches = [{"x": np.full((1, 2), i, np.float32)} for i in range(128)]
    judging = judging_data(batches, 64, None)
    assert judging.judged_on == {
        "source": "held-out calibration data",
        "samples": 64,
        "description": "the last 64 of 128 samples; the calibration used the first 64",
    }
    assert judging.calibration_limit == 64 and judging.batches[0]["x"][0, 0] == 64
    # under the floor and under 4x: reused, with the warning
    assert judging_data(batches[:100], 64, None).judged_on["source"].startswith("calibration")


STEPS, FEATURES = 8, 16


def _recognizer(folder) -> str:
    """x [N, 8, 16] -> MatMul -> Add -> Softmax over 5 classes (blank favoured): p [N, 8, 5]."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(FEATURES, len(TABLE))).astype(np.float32)
    bias = np.array([1.5, 0, 0, 0, 0], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
            helper.make_node("Add", ["h", "b"], ["z"], name="bias"),
            helper.make_node("Softmax", ["z"], ["p"], name="softmax", axis=-1),
        ],
        "rec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", STEPS, FEATURES])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", STEPS, len(TABLE)])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"character": "a\nb\nc"})
    path = folder / "rec.onnx"
    onnx.save(model, path)
    return str(path)


def _words(count: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(1, STEPS, FEATURES)).astype(np.float32)} for _ in range(count)]


def test_a_ctc_guard_judges_on_enough_held_out_characters(tmp_path):
    path = _recognizer(tmp_path)
    result = QuantizeStatic(_words(140), latency_guard=False).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "a")
    )
    judged = result.summary["judged_on"]
    # about 4 characters a word: 396 characters need ~99 words, at most max_eval_samples (64)
    assert judged["source"] == "held-out calibration data" and judged["samples"] == 64
    assert judged["description"] == "the last 64 of 140 samples; the calibration used the first 76"
    assert judged["size_because"].startswith("ctc on 'p' at 0.99: 396 units (")
    assert result.summary["calibration"]["samples"] == 76
    assert result.summary["evaluations"]["run"] >= 1
    # too few words to hold out 64: as many as the data leaves unseen (4x calibration kept)
    fewer = QuantizeStatic(_words(60), latency_guard=False).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "b")
    )
    assert fewer.summary["judged_on"]["samples"] == 12
    assert fewer.summary["calibration"]["samples"] == 48
    # the option off: eval_samples as before
    off = QuantizeStatic(_words(140), latency_guard=False, max_eval_samples=0).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "c")
    )
    assert (
        off.summary["judged_on"]["samples"] == 8 and "size_because" not in off.summary["judged_on"]
    )
