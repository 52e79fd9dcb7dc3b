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


def test_refuses_a_target_outside_its_range():
    with pytest.raises(onnxslim.SlimError, match="target_macs 1.5 is outside"):
        get_pass_class("prune_distill")(target_macs=1.5)
