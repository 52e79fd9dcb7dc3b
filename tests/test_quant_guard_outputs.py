"""The accuracy guard bounds every graph output, not only the first or the logits (issue 17: a
candidate kept the logits while its decoded / ArgMax output went wrong). Real ORT sessions on a
float model and a crafted "candidate" of the same graph with other weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxslim.fidelity import FidelityBounds, TaskMetric, choose_metric
from onnxslim.passes.quantization._accuracy_guard import Evaluator
from onnxslim.passes.quantization._prepare import Prepared

BOUND = FidelityBounds(min_sqnr_db=20.0, min_top1_agreement=0.95)
RNG = np.random.default_rng(0)
# out1 is large: pooled with it, a small out2 gone wrong kept a high SQNR (the old verdict)
W1 = (100 * RNG.normal(size=(8, 4))).astype(np.float32)
W2 = RNG.normal(size=(8, 6)).astype(np.float32)
BATCHES = [{"x": RNG.normal(size=(16, 8)).astype(np.float32)} for _ in range(4)]


def _model(path: Path, w1: np.ndarray, w2: np.ndarray, second: str) -> Path:
    """x -> MatMul w1 -> out1 (Softmax of it: class scores); x -> MatMul w2 -> out2, where
    ``second`` is ``argmax`` (int64 indices), ``scaled`` (one small value per sample) or
    ``float`` (the raw head)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["logits"], name="mm1"),
        helper.make_node("Softmax", ["logits"], ["out1"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["x", "w2"], ["head"], name="mm2"),
    ]
    if second == "argmax":
        nodes.append(helper.make_node("ArgMax", ["head"], ["out2"], name="am", axis=-1))
        out2 = helper.make_tensor_value_info("out2", TensorProto.INT64, [None, 1])
    else:
        nodes.append(helper.make_node("ReduceSum", ["head", "axes"], ["out2"], name="rs"))
        out2 = helper.make_tensor_value_info("out2", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(
        nodes,
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("out1", TensorProto.FLOAT, [None, 4]), out2],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _evaluator(tmp_path: Path, second: str, metric: TaskMetric | None = None) -> Evaluator:
    path = _model(tmp_path / "float.onnx", W1, W2, second)
    prepared = Prepared(path, onnx.load(path), ir.load(str(path)))
    return Evaluator(path, prepared, BATCHES, BOUND, metric)


def _candidate(tmp_path: Path, second: str, w2: np.ndarray, name: str = "cand") -> Path:
    # out1's weights barely moved (int8-like noise, far above 20 dB), out2's as given
    w1 = W1 + np.float32(1e-4) * RNG.normal(size=W1.shape).astype(np.float32)
    return _model(tmp_path / f"{name}.onnx", w1, w2, second)


def _argmax_flipping(w2: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w2[:, ::-1])  # the head's columns reversed: the index moves


def test_integer_outputs_are_judged_by_agreement():
    indices = np.array([[1], [2], [3]], np.int64)
    assert choose_metric("idx", indices)[0] == "agreement"


def test_a_wrong_argmax_output_fails_though_the_logits_hold(tmp_path):
    evaluator = _evaluator(tmp_path, "argmax")
    assert evaluator.proxy_outputs == ["out1"] and "out1" in evaluator.logits
    bad = evaluator.evaluate(_candidate(tmp_path, "argmax", _argmax_flipping(W2)))
    assert not bad.accurate
    assert len(bad.problems) == 1 and bad.problems[0].startswith("agreement")
    assert bad.problems[0].endswith("on out2")
    assert bad.task_scores["agreement on out2"] < 0.95
    assert bad.logits_sqnr_db is not None and bad.logits_sqnr_db > 40  # out1's logits held
    # the converse: out2 as in the float model passes
    good = evaluator.evaluate(_candidate(tmp_path, "argmax", W2, "good"))
    assert good.accurate, good.problems
    assert good.task_scores["agreement on out2"] == 1.0


def test_a_small_second_output_is_not_hidden_by_a_large_first(tmp_path):
    # out2 (one value per sample) judged on its own SQNR, not pooled with the large out1
    evaluator = _evaluator(tmp_path, "scaled")
    assert evaluator.proxy_outputs == ["out1", "out2"]
    noisy = W2 + np.float32(0.5) * RNG.normal(size=W2.shape).astype(np.float32)
    bad = evaluator.evaluate(_candidate(tmp_path, "scaled", noisy))
    assert not bad.accurate
    assert all(p.endswith("on out2") for p in bad.problems), bad.problems
    assert any("SQNR" in p for p in bad.problems)
    good = evaluator.evaluate(_candidate(tmp_path, "scaled", W2, "good"))
    assert good.accurate, good.problems


def test_a_user_metric_on_one_output_leaves_the_others_their_defaults(tmp_path):
    metric = TaskMetric("top1", 0.9, outputs=("out1",), reason="given by the user")
    evaluator = _evaluator(tmp_path, "argmax", metric)
    assert [m.name for m in evaluator.metrics] == ["top1", "agreement"]
    assert "agreement" in evaluator.summary()["metric"]
    bad = evaluator.evaluate(_candidate(tmp_path, "argmax", _argmax_flipping(W2)))
    assert [p.endswith("on out2") for p in bad.problems] == [True]
    assert bad.task_scores["top1 on out1"] >= 0.9  # the user's output passed
    good = evaluator.evaluate(_candidate(tmp_path, "argmax", W2, "good"))
    assert good.accurate, good.problems


def _flat_head(path: Path) -> Path:
    """Conv -> Relu -> pool -> MatMul onto 100 classes with the same weights each: equal logits,
    uniform scores (0.01), as in the onnx package's constant-weight Inception v2."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.full((8, 100), 0.01, np.float32), "wf"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", "wf"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
        ],
        "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 100])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_flat_class_scores_are_judged_themselves_not_on_their_exact_logits(tmp_path):
    """Equal logits decide no top-1 and quantize exactly, while the Softmax output's own Q/DQ
    moves the scores (15 dB): that candidate used to ship; now the scores hold the SQNR bound."""
    import onnxslim
    from onnxslim.passes import QuantizeStatic

    path = _flat_head(tmp_path / "flat.onnx")
    rng = np.random.default_rng(1)
    data = [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(40)]
    model = onnxslim.load(path)
    result = QuantizeStatic(data, latency_guard=False).apply(
        model, onnxslim.PassContext(workdir=tmp_path)
    )
    candidates = {c["label"]: c for c in result.summary["candidates"]}
    every = candidates["all quantizable ops"]
    assert every["fidelity"]["logits_sqnr_db"] > 40 and every["fidelity"]["sqnr_db"] < 20
    assert every["rejected"].startswith("accuracy: output SQNR 15.1 dB < 20 dB on prob (its logits")
    assert result.summary["chosen"] == "only Conv/MatMul/Gemm"
    assert candidates["only Conv/MatMul/Gemm"]["fidelity"]["sqnr_db"] >= 20
