"""prune_distill: gradual pruning with recovery, resumable from its state file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnxslim
from onnxslim.data import demo_data, demo_model_path
from onnxslim.inputs import open_samples
from onnxslim.registry import get_pass_class

pytest.importorskip("torch")

from onnxslim.passes._gradual import STATE_FILE, step_targets  # noqa: E402


def test_step_targets_are_geometric_and_end_at_the_target():
    assert step_targets(0.25, 2) == [0.5, 0.25]
    assert step_targets(0.5, 1) == [0.5]
    assert np.allclose(step_targets(0.125, 3), [0.5, 0.25, 0.125])


def test_two_steps_meet_the_target_and_a_rerun_resumes_after_the_finished_step(tmp_path):
    images = demo_data()["train_images"][:32]
    calls = []

    def metric(model):
        calls.append(1)
        logits = onnxslim.create_session(model).run(None, {"image": images})[0]
        return float(logits.argmax(1).mean())

    def run():
        model = onnxslim.load(demo_model_path())
        context = onnxslim.PassContext(
            reference_path=demo_model_path(),
            data=open_samples({"image": images}),
            workdir=tmp_path / "work",
        )
        options = dict(target_macs=0.5, steps=2, epochs=1, round_to=8, metric=metric)
        result = get_pass_class("prune_distill")(**options).apply(model, context)
        return model, result.summary

    model, summary = run()
    steps = summary["steps"]
    assert [s["step"] for s in steps] == [1, 2] and summary["resumed_steps"] == 0
    assert [round(s["target_macs"], 4) for s in steps] == [0.7071, 0.5]
    assert steps[0]["macs_fraction"] <= 0.7071 + 1e-9
    assert summary["macs_fraction"] == steps[1]["macs_fraction"] <= 0.5
    assert steps[1]["params"] < steps[0]["params"]
    assert set(steps[0]) >= {"macs", "params", "fidelity", "metric", "seconds"}
    assert 0.0 <= steps[1]["fidelity"]["top1_agreement"] <= 1.0
    assert len(calls) == 2
    assert all(s["latency_ms"] > 0 and s["input_latency_ms"] > 0 for s in steps)
    assert all(s["latency_fraction"] > 0 for s in steps)
    _check_report_curves(summary)
    state_path = tmp_path / "work" / STATE_FILE
    state = json.loads(state_path.read_text())
    assert [s["step"] for s in state["steps"]] == [1, 2]

    # as if interrupted during step 2: the state holds step 1 only
    state["steps"] = state["steps"][:1]
    state_path.write_text(json.dumps(state))
    again, resumed = run()
    assert resumed["resumed_steps"] == 1 and len(calls) == 3  # only step 2 ran again
    assert resumed["steps"][0] == steps[0]
    assert resumed["steps"][1]["macs"] == steps[1]["macs"]
    # same seed, same data: the re-run step 2 writes the same weights
    for name, value in model.graph.initializers.items():
        np.testing.assert_array_equal(
            again.graph.initializers[name].const_value.numpy(), value.const_value.numpy()
        )


def test_one_step_is_one_shot_prune_then_distill(tmp_path):
    from onnxslim.passes import Distill, StructuredPrune

    images = demo_data()["train_images"][:32]

    def context(name: str) -> onnxslim.PassContext:
        return onnxslim.PassContext(
            reference_path=demo_model_path(),
            data=open_samples({"image": images}),
            workdir=tmp_path / name,
        )

    gradual = onnxslim.load(demo_model_path())
    options = dict(target_macs=0.5, steps=1, epochs=1, round_to=8, timing_seconds=0)
    summary = get_pass_class("prune_distill")(**options).apply(gradual, context("gradual")).summary
    one_shot = onnxslim.load(demo_model_path())
    shot = context("one-shot")
    StructuredPrune(target_macs=0.5, round_to=8).apply(one_shot, shot)
    Distill(None, epochs=1, lr=3e-3).apply(one_shot, shot)
    assert summary["steps"][0]["target_macs"] == 0.5 and summary["macs_fraction"] <= 0.5
    assert set(gradual.graph.initializers) == set(one_shot.graph.initializers)
    for name, value in one_shot.graph.initializers.items():
        np.testing.assert_array_equal(
            gradual.graph.initializers[name].const_value.numpy(), value.const_value.numpy()
        )


def _check_report_curves(summary: dict) -> None:
    """The HTML report's pass section draws quality vs MACs and vs latency, a point per step."""
    import re

    from onnxslim.benchmark._passes_html import pass_sections

    page = "".join(
        pass_sections(
            {"stages": [{"stage": "input"}, {"stage": "prune_distill", "summary": summary}]}
        )
    )
    charts = re.findall(r'<svg [^>]*class="chart steps".*?</svg>', page)
    assert len(charts) == 2
    assert "top-1 agreement (%) vs fraction of the input&#x27;s MACs" in page or (
        "task metric vs fraction of the input&#x27;s MACs across steps" in page
    )
    assert "vs latency (ms) across steps" in charts[1]
    for chart in charts:
        assert chart.count('<circle class="step"') == len(summary["steps"]) == 2
        assert chart.count("<polyline") == 1
    assert "latency " in page and "of the input)" in page  # the step lines of describe


def test_step_curve_uses_the_metric_and_skips_steps_without_figures():
    from onnxslim.benchmark._passes_html import step_curve_svg, step_points

    steps = [
        {"step": 1, "macs_fraction": 0.7, "metric": 0.99, "fidelity": {"top1_agreement": 1.0}},
        {"step": 2, "macs_fraction": 0.5, "metric": 0.97},
        {"step": 3, "metric": 0.9},  # no MACs: not a point
    ]
    assert step_points(steps, "macs_fraction") == ("task metric", [(1, 0.7, 0.99), (2, 0.5, 0.97)])
    chart = step_curve_svg(steps, "macs_fraction", "MACs")
    assert chart.count('<circle class="step"') == 2
    assert "step 2: 0.5, 0.97" in chart
    assert step_curve_svg(steps, "latency_ms", "latency (ms)") == ""


def test_refuses_a_target_outside_its_range():
    with pytest.raises(onnxslim.SlimError, match="target_macs 1.5 is outside"):
        get_pass_class("prune_distill")(target_macs=1.5)
