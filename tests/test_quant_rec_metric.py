"""The CTC guard judges what an OCR user reads (issue 17, PP-OCRv4 rec): decodes compared as
text from the model's character table, edge whitespace stripped and inner runs collapsed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim import PassContext
from onnxslim.fidelity import TaskMetric, ctc_agreement, ctc_characters, ctc_texts
from onnxslim.passes.quantization import QuantizeStatic

TABLE = ("", "a", "b", "c", " ")  # class 0 the blank, the last class a space (Paddle's layout)
METADATA = {"character": "a\nb\nc"}  # Paddle stores the table without the blank and the space


def _scores(paths: list[list[int]], classes: int = 5) -> np.ndarray:
    return np.stack([np.eye(classes, dtype=np.float32)[p] for p in paths])


def _ctc(characters: tuple[str, ...] | None = TABLE) -> TaskMetric:
    return TaskMetric("ctc", outputs=("p",), characters=characters)


def test_the_character_table_comes_from_paddle_metadata():
    assert ctc_characters(METADATA, 5) == TABLE
    assert ctc_characters(METADATA, 4) == ("", "a", "b", "c")  # no space class
    assert ctc_characters(METADATA, 6) is None  # the table does not fit the output
    assert ctc_characters({}, 5) is None
    assert ctc_characters({"character": ""}, 2) is None


def test_texts_strip_edge_spaces_and_collapse_inner_runs():
    # " a" + "b" + "  " + "c " -> "ab c"; repeats merged, blanks split them ("a 0 a" is "aa")
    scores = _scores([[4, 1, 2, 4, 0, 4, 3, 4], [1, 0, 1, 1, 0, 0, 0, 0]])
    assert ctc_texts(scores, TABLE) == ["ab c", "aa"]


def test_ctc_passes_when_only_edge_spaces_differ_and_fails_on_an_inner_character():
    reference = _scores([[4, 1, 2, 0, 4, 3, 0, 0], [1, 0, 2, 0, 3, 0, 0, 0]])  # " ab c", "abc"
    edges = _scores([[0, 1, 2, 0, 4, 3, 4, 0], [4, 1, 0, 2, 3, 0, 0, 4]])  # "ab c ", " abc "
    refs, cands = [{"p": reference}], [{"p": edges}]
    assert _ctc().judge(refs, cands) == (1.0, None)
    # as class ids the same decodes take 4 edits over 8 characters (the old reading)
    assert ctc_agreement(reference, edges) == 0.5
    assert _ctc(None).judge(refs, cands)[1] == "ctc 0.5 < 0.99"
    inner = _scores([[4, 1, 3, 0, 4, 3, 0, 0], [1, 0, 2, 0, 3, 0, 0, 0]])  # "ac c": b -> c
    # 1 edit over the 7 characters "ab c" + "abc"
    score, violation = _ctc().judge(refs, [{"p": inner}])
    assert score == pytest.approx(6 / 7)
    assert violation == "ctc 0.8571 < 0.99"
    doubled = _scores([[4, 1, 2, 4, 0, 4, 3, 0], [1, 0, 2, 0, 3, 0, 0, 0]])  # "ab  c" is "ab c"
    assert _ctc().judge(refs, [{"p": doubled}]) == (1.0, None)
    lost_space = _scores([[4, 1, 2, 0, 0, 3, 0, 0], [1, 0, 2, 0, 3, 0, 0, 0]])  # "abc": a word gap
    assert _ctc().judge(refs, [{"p": lost_space}])[0] == pytest.approx(6 / 7)


def test_a_table_that_does_not_fit_the_scores_is_refused():
    with pytest.raises(ValueError, match="ctc: 4 characters for 5 classes"):
        ctc_agreement(_scores([[1, 0]]), _scores([[1, 0]]), characters=TABLE[:4])


STEPS, FEATURES = 8, 16


def _recognizer(folder, metadata: dict[str, str]) -> str:
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
    helper.set_model_props(model, metadata)
    path = folder / "rec.onnx"
    onnx.save(model, path)
    return str(path)


def _data(count: int = 8) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(2, STEPS, FEATURES)).astype(np.float32)} for _ in range(count)]


def _quantize(path: str, folder, **options) -> dict:
    quantize = QuantizeStatic(_data(), latency_guard=False, **options)
    return quantize.apply(onnxslim.load(path), PassContext(workdir=folder)).summary


TEXT_REASON = (
    "; judged on the text it reads (the model's character table; edge whitespace stripped and "
    "inner runs of it one space, as an OCR user reads it, every other character counted)"
)


def test_the_default_ctc_guard_reads_the_table_from_the_models_metadata(tmp_path):
    summary = _quantize(_recognizer(tmp_path, METADATA), tmp_path)
    assert summary["metric"] == "ctc"
    assert summary["metric_chosen_because"] == (
        "output 'p' [8x8x5]: per-step probabilities, class 0 wins 36% of steps (CTC)" + TEXT_REASON
    )
    assert summary["min_score"] == {"ctc": 0.99}
    # without a table the same output is judged on class ids, and the reason says nothing more
    plain = _quantize(_recognizer(tmp_path, {}), tmp_path)
    assert plain["metric"] == "ctc"
    assert plain["metric_chosen_because"] == (
        "output 'p' [8x8x5]: per-step probabilities, class 0 wins 36% of steps (CTC)"
    )


def test_a_ctc_metric_named_by_the_user_also_reads_the_table(tmp_path):
    summary = _quantize(_recognizer(tmp_path, METADATA), tmp_path, metric="ctc")
    assert summary["metric"] == "ctc"
    assert summary["metric_chosen_because"] == "given by the user" + TEXT_REASON
