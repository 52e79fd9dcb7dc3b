"""Feature distillation: hint points a pruning pass records, losses on the kept teacher channels."""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnxslim
from onnxslim import testing
from onnxslim.data import demo_data, demo_model_path
from onnxslim.model import ValueProbe
from onnxslim.passes.pruning import StructuredPrune, analyze, choose_hint_points, read_hints

torch = pytest.importorskip("torch")

from onnxslim.passes.distillation import Distill, DistillationLoss  # noqa: E402

BLOCK_OUTPUTS = [
    "/layers/layers.0/Relu_1_output_0",
    "/layers/layers.1/Relu_1_output_0",
    "/Flatten_output_0",
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return demo_data()["train_images"][:96]


def hint_nmse(teacher_path, student, images, record) -> dict[str, float]:
    """MSE of each hint point to the teacher's activation on the kept channels, over its mean
    square (ORT on both sides)."""
    points = record["points"]
    teacher = ValueProbe(teacher_path, points).run({"image": images})
    ours = ValueProbe(student, points).run({"image": images})
    errors = {}
    for name in points:
        target = teacher[name]
        if name in record["kept"]:
            entry = record["kept"][name]
            target = np.take(target, entry["kept"], axis=entry["axis"])
        errors[name] = float(np.mean((ours[name] - target) ** 2) / np.mean(target**2))
    return errors


def test_hint_points_on_a_residual_net_are_its_block_outputs():
    model = onnxslim.load(demo_model_path())
    assert choose_hint_points(model, analyze(model).groups) == BLOCK_OUTPUTS


@pytest.mark.parametrize("decomposed", [False, True])
def test_hint_points_of_a_transformer_block_are_its_layer_norm_outputs(decomposed):
    """A residual MLP block whose hidden width stays: the hints are the residual stream after
    the LayerNorm (fused, or decomposed as the exporters write it at opset < 17), not the MLP's
    pruned activations."""
    norm = (
        """mu = ReduceMean <axes = [-1]> (s)
            d = Sub (s, mu)
            sq = Mul (d, d)
            var = ReduceMean <axes = [-1]> (sq)
            ve = Add (var, eps)
            root = Sqrt (ve)
            xhat = Div (d, root)
            scaled = Mul (xhat, gamma)
            y = Add (scaled, beta)"""
        if decomposed
        else "y = LayerNormalization <axis = -1> (s, gamma, beta)"
    )
    model = testing.with_random_weights(
        f"""<ir_version: 8, opset_import: ["" : 17]>
        block (float[2, 4, 8] x) => (float[2, 4, 8] y)
        <float[8, 16] w1, float[16, 8] w2, float[8] gamma, float[8] beta, float eps = {{1e-5}}> {{
            h = MatMul (x, w1)
            r = Relu (h)
            o = MatMul (r, w2)
            s = Add (x, o)
            {norm}
        }}"""
    )
    assert choose_hint_points(model, analyze(model).groups) == ["y"]


def test_record_holds_kept_original_channels_and_composes_over_two_steps(tmp_path):
    model = onnxslim.load(demo_model_path())
    StructuredPrune(ratio=0.5, round_to=8).apply(model, onnxslim.PassContext())
    first = read_hints(model)
    assert first["points"] == BLOCK_OUTPUTS
    assert {n: len(e["kept"]) for n, e in first["kept"].items()} == {
        BLOCK_OUTPUTS[0]: 16,
        BLOCK_OUTPUTS[1]: 16,
        BLOCK_OUTPUTS[2]: 32,
    }
    assert {e["axis"] for e in first["kept"].values()} == {1}
    StructuredPrune(ratio=0.5, round_to=8).apply(model, onnxslim.PassContext())
    second = read_hints(model)
    for name, entry in second["kept"].items():
        assert len(entry["kept"]) == len(first["kept"][name]["kept"]) // 2
        assert set(entry["kept"]) <= set(first["kept"][name]["kept"])
    shapes = analyze(model).view.shapes
    assert [shapes[n][1] for n in BLOCK_OUTPUTS] == [8, 8, 16]
    assert len(json.dumps(second)) < 1000  # a handful of names and indices


def test_nmse_hint_is_zero_when_student_equals_teacher():
    teacher = torch.randn(4, 6, 3, 3)
    kept = [1, 4, 5]
    loss = DistillationLoss(
        {"y": "mse"},
        hints={"f": "f"},
        hint_loss="nmse",
        channel_maps={"f": kept},
        channel_axes={"f": 1},
    )
    _, parts = loss({"y": torch.ones(2), "f": teacher[:, kept]}, {"y": torch.ones(2), "f": teacher})
    assert parts == {"mse:y": 0.0, "hint:f": 0.0}
    _, parts = loss(
        {"y": torch.ones(2), "f": 2 * teacher[:, kept]}, {"y": torch.ones(2), "f": teacher}
    )
    assert parts["hint:f"] == pytest.approx(1.0, rel=1e-5)  # (2t - t)^2 / t^2


def test_feature_loss_brings_the_kept_activations_to_the_teacher(images):
    teacher_path = demo_model_path()
    model = onnxslim.load(teacher_path)
    StructuredPrune(ratio=0.5, round_to=8).apply(model, onnxslim.PassContext())
    record = read_hints(model)
    before = hint_nmse(teacher_path, model, images, record)
    result = Distill(
        [{"image": images}],
        teacher=str(teacher_path),
        steps=12,
        lr=3e-3,
        batch_size=32,
        feature_weight=1.0,
        kd_weight=0.0,
        threads=1,
    ).apply(model, onnxslim.PassContext())
    summary = result.summary
    assert summary["feature_hints"] is True and summary["hints"] == BLOCK_OUTPUTS
    assert summary["steps"] == 12
    assert sorted(summary["history"][0]["parts"]) == sorted(
        ["kl:logits"] + [f"hint:{n}" for n in BLOCK_OUTPUTS]
    )
    after = hint_nmse(teacher_path, model, images, record)
    assert all(after[n] < 0.8 * before[n] for n in BLOCK_OUTPUTS), (before, after)
