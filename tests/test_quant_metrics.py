"""Task metrics of the accuracy guard (issue 17): each on outputs where it must pass and fail,
the per-output default, and the samples the guard judges on."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxslim
from onnxslim import PassContext, RecipeError
from onnxslim.fidelity import TaskMetric, choose_metric, map_iou, mean_cosine
from onnxslim.passes.quantization import QuantizeStatic

RNG = np.random.default_rng(0)


def _batches(array: np.ndarray, name: str = "y") -> list[dict]:
    return [{name: array[i : i + 2]} for i in range(0, len(array), 2)]


def _verdict(metric: str, reference: np.ndarray, candidate: np.ndarray, **kw) -> str | None:
    return TaskMetric.parse(metric, **kw).violation(_batches(reference), _batches(candidate))


def test_top1_passes_small_noise_and_fails_flipped_rows():
    scores = RNG.normal(size=(20, 10)).astype(np.float32)
    scores[np.arange(20), np.arange(20) % 10] += 5.0
    assert _verdict("top1", scores, scores + 0.01) is None
    flipped = scores.copy()
    flipped[:2] = scores[:2, ::-1]  # 2 of 20 decisions change: 90% < 95%
    assert _verdict("top1", scores, flipped) == "top1 0.9 < 0.95"


def test_cosine_passes_small_noise_and_fails_a_rotated_embedding():
    emb = RNG.normal(size=(8, 384)).astype(np.float32)
    assert _verdict("cosine", emb, emb + 0.05 * RNG.normal(size=emb.shape)) is None
    noisy = emb + 0.5 * RNG.normal(size=emb.shape)  # cosine ~ 1/sqrt(1.25) = 0.89
    message = _verdict("cosine", emb, noisy)
    assert message is not None and message.startswith("cosine 0.89") and message.endswith("< 0.99")
    assert mean_cosine(emb, emb) == pytest.approx(1.0)
    assert mean_cosine(emb, -emb) == pytest.approx(-1.0)


def test_sqnr_metric_in_db():
    ref = RNG.normal(size=(4, 100))
    assert _verdict("sqnr", ref, ref + 0.01 * RNG.normal(size=ref.shape)) is None  # ~40 dB
    message = _verdict("sqnr", ref, ref + 0.3 * RNG.normal(size=ref.shape))  # ~10 dB
    assert message is not None and message.startswith("sqnr 1") and message.endswith("< 20 dB")


def test_iou_thresholds_maps_and_compares_regions():
    maps = np.zeros((4, 1, 10, 10), np.float32)
    maps[:, :, 2:8, 2:8] = 0.9  # 36 pixels on per map
    shrunk = maps.copy()
    shrunk[:, :, 2, 2:8] = 0.4  # 6 pixels fall under 0.5: IoU 30/36
    assert map_iou(maps, shrunk, 0.5) == pytest.approx(30 / 36)
    assert map_iou(maps, shrunk, 0.3) == 1.0  # at 0.3 they are still on
    assert _verdict("iou@0.3", maps, shrunk) is None
    assert _verdict("iou@0.5", maps, shrunk) == "iou@0.5 0.8333 < 0.95"
    assert map_iou(np.zeros((2, 4)), np.zeros((2, 4))) == 1.0  # both empty: identical


def test_seq_top1_counts_steps():
    scores = RNG.normal(size=(4, 25, 30)).astype(np.float32)
    one_step = scores.copy()
    one_step[0, 3] = -scores[0, 3]  # 1 of 100 steps flips
    assert _verdict("seq-top1", scores, one_step) is None  # 0.99 >= 0.99
    three_steps = scores.copy()
    three_steps[0, :3] = -scores[0, :3]
    assert _verdict("seq-top1", scores, three_steps) == "seq-top1 0.97 < 0.99"
    assert _verdict("per-step top1", scores, three_steps, min_score=0.95) is None


def _ctc_scores(paths: list[list[int]], classes: int = 6) -> np.ndarray:
    return np.stack([np.eye(classes, dtype=np.float32)[p] for p in paths])


def test_ctc_compares_greedy_decodes_not_steps():
    # "blank, 1, 1, blank, 2, 3" decodes to [1, 2, 3]; moving a character a step keeps it
    reference = _ctc_scores([[0, 1, 1, 0, 2, 3], [4, 0, 4, 0, 0, 5]])
    shifted = _ctc_scores([[1, 1, 0, 0, 2, 3], [4, 4, 0, 4, 5, 0]])
    assert _verdict("ctc", reference, shifted) is None
    assert _verdict("seq-top1", reference, shifted) == "seq-top1 0.4167 < 0.99"  # 5 of 12 steps
    dropped = _ctc_scores([[0, 1, 1, 0, 0, 3], [4, 0, 4, 0, 0, 5]])  # the 2 is lost: 5/6
    assert _verdict("ctc", reference, dropped) == "ctc 0.8333 < 0.99"
    assert choose_metric("p", reference)[0] == "ctc"


def test_user_metric_as_bool_or_score():
    ref = RNG.normal(size=(4, 3))
    assert TaskMetric.parse(lambda r, c: True).violation(_batches(ref), _batches(ref)) is None
    failing = TaskMetric.parse(lambda r, c: False)
    assert failing.violation(_batches(ref), _batches(ref)) == "the user metric failed"
    scored = TaskMetric.parse(lambda r, c: 0.7, min_score=0.8)
    assert scored.violation(_batches(ref), _batches(ref)) == "user 0.7 < 0.8"


def test_unknown_metric_is_refused_in_one_sentence():
    with pytest.raises(RecipeError, match="unknown metric 'f1'; choose one of top1, cosine"):
        QuantizeStatic(metric="f1")
    with pytest.raises(RecipeError, match="the IoU threshold must be a number"):
        QuantizeStatic(metric="iou@half")


@pytest.mark.parametrize(
    ("array", "metric", "because"),
    [
        (np.eye(4, 10, dtype=np.float32) * 0.9 + 0.01, "top1", "class probabilities"),
        (RNG.normal(size=(4, 10)).astype(np.float32), "top1", "rows of 10 class scores"),
        (RNG.normal(size=(4, 384)).astype(np.float32), "cosine", "384 unnormalized features"),
        (np.full((4, 1, 8, 8), 0.3, np.float32), "iou@0.5", "a map of values in [0, 1]"),
        (RNG.normal(size=(4, 8, 16)).astype(np.float32), "cosine", "per-token features"),
        (np.eye(16, dtype=np.float32)[RNG.integers(1, 16, (4, 8))], "seq-top1", "per-step class"),
        (RNG.normal(size=(4, 1)).astype(np.float32), "sqnr", "one value per sample"),
    ],
)
def test_default_metric_from_the_outputs_shape_and_range(array, metric, because):
    chosen, reason = choose_metric("out", array)
    assert chosen == metric and because in reason


def test_unit_norm_rows_are_an_embedding():
    rows = RNG.normal(size=(4, 32))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    assert choose_metric("e", rows.astype(np.float32))[0] == "cosine"


# -- the pass ------------------------------------------------------------------------------------
EMBEDDER = """
<ir_version: 8, opset_import: ["" : 17]>
embed (float[N, 64] x) => (float[N, 256] e) <float[64, 256] w = {WEIGHTS}> {
    h = MatMul (x, w)
    e = Relu (h)
}
"""


def _embedder(folder) -> str:
    weights = ", ".join(f"{v:.5f}" for v in RNG.normal(size=64 * 256) / 8)
    path = folder / "embed.onnx"
    onnx.save(onnx.parser.parse_model(EMBEDDER.replace("WEIGHTS", weights)), path)
    return str(path)


def test_an_embedding_is_judged_by_cosine_and_the_report_says_why(tmp_path):
    path = _embedder(tmp_path)
    data = [{"x": RNG.normal(size=(1, 64)).astype(np.float32)} for _ in range(8)]
    result = QuantizeStatic(data, latency_guard=False).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path)
    )
    summary = result.summary
    assert summary["metric"] == "cosine"
    assert summary["metric_chosen_because"] == (
        "output 'e' [8x256]: 256 unnormalized features (an embedding)"
    )
    assert summary["min_score"] == {"cosine": 0.99}
    chosen = next(c for c in summary["candidates"] if c["chosen"])
    assert chosen["fidelity"]["task_scores"]["cosine on e"] >= 0.99
    assert summary["judged_on"] == {"source": "calibration samples (reused)", "samples": 8}
    assert any("judged on 8 calibration samples" in w for w in summary["warnings"])


def test_a_named_metric_alone_is_the_bound(tmp_path):
    path = _embedder(tmp_path)
    data = [{"x": RNG.normal(size=(1, 64)).astype(np.float32)} for _ in range(8)]
    strict = QuantizeStatic(data, latency_guard=False, metric="cosine", min_score=0.99999999)
    result = strict.apply(onnxslim.load(path), PassContext(workdir=tmp_path))
    assert not result.modified and result.summary["metric"] == "cosine"
    assert all(
        c["rejected"].startswith("accuracy: cosine 0.9") and c["rejected"].endswith("< 1")
        for c in result.summary["candidates"]
    )


def _ranged_data(held_out_scale: float) -> list[dict]:
    rng = np.random.default_rng(1)
    small = [rng.normal(size=(1, 64)).astype(np.float32) * 0.2 for _ in range(40)]
    large = [rng.normal(size=(1, 64)).astype(np.float32) * held_out_scale for _ in range(8)]
    return [{"x": x} for x in small + large]


def test_int8_that_passes_on_calibration_samples_but_not_held_out_is_not_shipped(tmp_path):
    path = _embedder(tmp_path)
    # static: dynamic quantization measures each batch's range and passes here, rightly
    options = {"method": "minmax", "mode": "static", "latency_guard": False, "metric": "cosine"}
    # The last 8 samples have 10x the range the calibration saw: clipped at the int8 range.
    result = QuantizeStatic(_ranged_data(2.0), **options).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "a")
    )
    summary = result.summary
    assert summary["judged_on"] == {
        "source": "held-out calibration data",
        "samples": 8,
        "description": "the last 8 of 48 samples; the calibration used the first 40",
    }
    assert summary["calibration"]["samples"] == 40
    assert not result.modified
    assert all(c["rejected"].startswith("accuracy: cosine") for c in summary["candidates"])
    # The same calibration judged on samples like it ships int8: the held-out split decided.
    same = QuantizeStatic(_ranged_data(0.2), **options).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "b")
    )
    assert same.modified and same.summary["calibration"]["samples"] == 40


def test_pipeline_verification_data_judges_when_calibration_is_other_data(tmp_path):
    path = _embedder(tmp_path)
    verification = [{"x": x["x"]} for x in _ranged_data(2.0)[40:]]
    quantize = QuantizeStatic(
        _ranged_data(0.2)[:16], method="minmax", mode="static", latency_guard=False
    )
    result = quantize.apply(
        onnxslim.load(path),
        PassContext(workdir=tmp_path, sample_inputs=verification, data=verification_reader(path)),
    )
    assert result.summary["judged_on"] == {"source": "verification data", "samples": 8}
    assert result.summary["calibration"]["samples"] == 16 and not result.modified


def verification_reader(path: str):
    from onnxslim.inputs import open_samples

    data = {"x": np.concatenate([x["x"] for x in _ranged_data(2.0)[40:]])}
    return open_samples(data, onnxslim.load(path))


def test_metric_from_the_cli_flags_and_a_recipe_key():
    from onnxslim.cli import _passes_from_flags, build_parser

    args = build_parser().parse_args(
        [
            "optimize", "m.onnx", "-o", "out.onnx", "--quantize", "int8",
            "--quant-metric", "iou@0.3", "--quant-min-score", "0.9",
        ]
    )  # fmt: skip
    quantize = _passes_from_flags(args)[-1]
    assert quantize.task_metric() == TaskMetric("iou@0.3", 0.9, reason="given by the user")
    recipe = onnxslim.parse_recipe(
        {"passes": [{"name": "quantize", "metric": "ctc", "min_score": 0.98}]}
    )
    assert recipe.passes[0].task_metric().name == "ctc"
    with pytest.raises(RecipeError, match="unknown metric 'map'"):
        onnxslim.parse_recipe({"passes": [{"name": "quantize", "metric": "map"}]})


def test_a_sample_limit_leaves_the_next_samples_to_the_guard(tmp_path):
    path = _embedder(tmp_path)
    data = _ranged_data(0.2)[:20]
    result = QuantizeStatic(data, samples=12, latency_guard=False).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "a")
    )
    assert result.summary["calibration"]["samples"] == 12
    assert result.summary["judged_on"]["description"] == (
        "the last 8 of 20 samples; the calibration used the first 12"
    )
    # too few past the limit: the calibration still stops at it, the guard reuses its samples
    short = QuantizeStatic(data[:15], samples=12, latency_guard=False).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "b")
    )
    assert short.summary["calibration"]["samples"] == 12
    assert short.summary["judged_on"]["source"] == "calibration samples (reused)"
    off = QuantizeStatic(data, samples=12, latency_guard=False, accuracy_guard=False).apply(
        onnxslim.load(path), PassContext(workdir=tmp_path / "c")
    )
    assert off.summary["calibration"]["samples"] == 12
