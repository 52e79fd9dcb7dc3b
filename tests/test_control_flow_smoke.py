"""Smoke data that exercises control flow (issue 16): a 0-d integer input tested by ``Equal``
takes each branch's value in turn, and a lossy pass whose changes the samples never reach is
said to be unverified instead of reported as exact."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim.inputs import random_inputs
from onnxslim.inputs._branches import branch_values
from onnxslim.passes import Cleanup, StructuredPrune

FLOAT = onnx.TensorProto.FLOAT


def rate_model() -> onnx.ModelProto:
    """``y = x * 2`` when ``Cast(sr) == 16000``, else ``x * 3``."""

    def branch(name: str, factor: float) -> onnx.GraphProto:
        return oh.make_graph(
            [oh.make_node("Mul", ["x", f"{name}_k"], [f"{name}_y"])],
            name,
            [],
            [oh.make_tensor_value_info(f"{name}_y", FLOAT, [1, 4])],
            [onh.from_array(np.array(factor, np.float32), f"{name}_k")],
        )

    graph = oh.make_graph(
        [
            oh.make_node("Cast", ["sr"], ["sr32"], to=onnx.TensorProto.INT32),
            oh.make_node("Equal", ["sr32", "rate"], ["is16k"]),
            oh.make_node(
                "If",
                ["is16k"],
                ["y"],
                then_branch=branch("then", 2.0),
                else_branch=branch("else", 3.0),
            ),
        ],
        "rates",
        [
            oh.make_tensor_value_info("x", FLOAT, [1, 4]),
            oh.make_tensor_value_info("sr", onnx.TensorProto.INT64, []),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [1, 4])],
        [onh.from_array(np.array(16000, np.int32), "rate")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_tested_scalar_takes_each_branch_in_turn() -> None:
    model = ir.from_proto(rate_model())
    assert branch_values(model, "sr") == [16000, 8000]
    assert branch_values(model, "x") == []
    session = onnxslim.create_session(model)
    ratios = []
    for seed in range(4):
        feeds = random_inputs(model, seed=seed)
        assert feeds["sr"].dtype == np.int64 and feeds["sr"].shape == ()
        (y,) = session.run(None, feeds)
        ratios.append(round(float((y / feeds["x"]).mean()), 4))
    assert [int(random_inputs(model, seed=s)["sr"]) for s in range(4)] == [16000, 8000] * 2
    assert ratios == [2.0, 3.0, 2.0, 3.0]  # both branches ran


def _mlp_in_the_branch_not_taken(path: Path) -> Path:
    """An If whose else branch holds a prunable MLP; its flag is a bool input, True in smoke
    data (as masks are), so smoke samples only ever run the then branch."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 64)) * np.linspace(0.1, 2.0, 64)).astype(np.float32)
    w2 = rng.standard_normal((64, 8)).astype(np.float32)
    other = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "W1"], ["t1"]),
            oh.make_node("Relu", ["t1"], ["t2"]),
            oh.make_node("MatMul", ["t2", "W2"], ["y_else"]),
        ],
        "else",
        [],
        [oh.make_tensor_value_info("y_else", FLOAT, [4, 8])],
        [onh.from_array(w1, "W1"), onh.from_array(w2, "W2")],
    )
    then = oh.make_graph(
        [oh.make_node("Neg", ["x"], ["y_then"])],
        "then",
        [],
        [oh.make_tensor_value_info("y_then", FLOAT, [4, 8])],
    )
    graph = oh.make_graph(
        [oh.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)],
        "untaken",
        [
            oh.make_tensor_value_info("x", FLOAT, [4, 8]),
            oh.make_tensor_value_info("flag", onnx.TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [4, 8])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_a_lossy_pass_the_samples_never_reach_is_said_unverified(tmp_path: Path) -> None:
    path = _mlp_in_the_branch_not_taken(tmp_path / "untaken.onnx")
    result = onnxslim.Pipeline([Cleanup(), StructuredPrune(ratio=0.5)]).run(path)
    prune = result.report.stages[-1]
    assert prune.fidelity["max_abs_error"] == 0  # the samples never took the else branch
    assert prune.parameters < result.report.stages[-2].parameters
    assert result.report.warnings == [
        f"pass 'prune' changed the model (parameters {result.report.stages[-2].parameters} -> "
        f"{prune.parameters}) but left every output bitwise identical on random inputs (smoke "
        "data): the check did not exercise the changed nodes; give inputs that do with --data."
    ]


def test_silero_vad_smoke_check_sees_the_pruned_branches(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the silero-vad wheel is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    result = onnxslim.Pipeline([Cleanup(), StructuredPrune(ratio=0.3)]).run(path)
    prune = result.report.stages[-1]
    # smoke samples alternate sr = 16000 / 8000: the 8 kHz branch's pruned layers are seen
    assert prune.fidelity["max_abs_error"] > 0.1
    assert not any("did not exercise" in warning for warning in result.report.warnings)
    assert result.report.stages[1].macs > 0 and prune.macs < result.report.stages[1].macs
