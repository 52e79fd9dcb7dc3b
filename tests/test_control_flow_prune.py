"""Pruning through If: a group living entirely inside one branch is found and cut (checked against
the numpy reference of the kept units), groups reaching a branch output or a captured activation
block with a reason naming the If, and Silero VAD (its encoder inside an If) becomes prunable."""

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
from onnxslim.passes import Cleanup, StructuredPrune
from onnxslim.passes.pruning import dependency_groups

FLOAT, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
ROWS, WIDTH, HIDDEN = 4, 16, 32


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # column norms spread out so that the L2 ranking is unambiguous
    w1 = rng.standard_normal((WIDTH, HIDDEN)) * np.linspace(0.1, 2.0, HIDDEN)
    return {
        "W0": rng.standard_normal((WIDTH, WIDTH)),
        "W1": w1,
        "W2": rng.standard_normal((HIDDEN, WIDTH)),
        "W3": rng.standard_normal((WIDTH, WIDTH)),
    }


def if_mlp_model(capture_activation: bool = False) -> ir.Model:
    """then: ``relu(v @ W1) @ W2`` (W1, W2 the branch's own); else: ``v @ W3``; ``v`` is the
    input x, or ``h = x @ W0`` computed outside the If when ``capture_activation``."""
    weights = {k: onh.from_array(v.astype(np.float32), k) for k, v in _weights(0).items()}
    read = "h" if capture_activation else "x"
    then_branch = oh.make_graph(
        [
            oh.make_node("MatMul", [read, "W1"], ["t1"], name="then_up"),
            oh.make_node("Relu", ["t1"], ["t2"], name="then_relu"),
            oh.make_node("MatMul", ["t2", "W2"], ["y_then"], name="then_down"),
        ],
        "then",
        [],
        [oh.make_tensor_value_info("y_then", FLOAT, [ROWS, WIDTH])],
        [weights["W1"], weights["W2"]],
    )
    else_branch = oh.make_graph(
        [oh.make_node("MatMul", [read, "W3"], ["y_else"], name="else_matmul")],
        "else",
        [],
        [oh.make_tensor_value_info("y_else", FLOAT, [ROWS, WIDTH])],
        [weights["W3"]],
    )
    nodes = [oh.make_node("MatMul", ["x", "W0"], ["h"], name="outer")] if capture_activation else []
    nodes.append(
        oh.make_node(
            "If", ["flag"], ["y"], name="choose", then_branch=then_branch, else_branch=else_branch
        )
    )
    graph = oh.make_graph(
        nodes,
        "if_mlp",
        [
            oh.make_tensor_value_info("x", FLOAT, [ROWS, WIDTH]),
            oh.make_tensor_value_info("flag", BOOL, []),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [ROWS, WIDTH])],
        [weights["W0"]] if capture_activation else [],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return ir.from_proto(model)


def by_producer(groups: list[dict]) -> dict[str, dict]:
    return {group["producers"][0].split("[")[0]: group for group in groups}


def test_hidden_units_inside_one_branch_form_a_prunable_group() -> None:
    groups = by_producer(dependency_groups(if_mlp_model()))
    assert set(groups) == {"W1", "W2", "W3"}
    hidden = groups["W1"]
    assert hidden["prunable"] and hidden["size"] == HIDDEN and hidden["reasons"] == []
    assert sorted(hidden["members"]) == ["W1[1]", "W2[0]", "t1[1]", "t2[1]"]
    # the branches' outputs keep the If's output size
    assert groups["W2"]["reasons"] == ["'y_then' is an output of choose (If) then_branch"]
    assert groups["W3"]["reasons"] == ["'y_else' is an output of choose (If) else_branch"]


def test_pruning_inside_a_branch_matches_the_kept_units(tmp_path: Path) -> None:
    model = if_mlp_model()
    result = StructuredPrune(ratio=0.5).apply(model, onnxslim.PassContext())
    assert result.modified and result.summary["pruned_groups"] == 1
    path = onnxslim.save(model, tmp_path / "pruned.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    branch = next(n for n in model.graph if n.op_type == "If").attributes["then_branch"].as_graph()
    w1 = branch.initializers["W1"].const_value.numpy()
    w2 = branch.initializers["W2"].const_value.numpy()
    assert w1.shape == (WIDTH, HIDDEN // 2) and w2.shape == (HIDDEN // 2, WIDTH)
    original = _weights(0)
    # the kept units are the half with the largest group L2 norm (W1 columns with W2 rows)
    kept = [int(np.argmin(np.abs(original["W1"] - column[:, None]).sum(0))) for column in w1.T]
    norms = (original["W1"] ** 2).sum(0) + (original["W2"] ** 2).sum(1)
    assert kept == sorted(np.argsort(norms)[HIDDEN // 2 :].tolist())
    x = np.random.default_rng(9).standard_normal((ROWS, WIDTH)).astype(np.float32)
    session = onnxslim.create_session(path)
    expected = np.maximum(x @ original["W1"][:, kept], 0) @ original["W2"][kept]
    got = session.run(None, {"x": x, "flag": np.array(True)})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the untouched branch gives exactly what it gave before
    got_else = session.run(None, {"x": x, "flag": np.array(False)})[0]
    np.testing.assert_allclose(got_else, x @ original["W3"], rtol=1e-5, atol=1e-4)


def test_captured_activation_blocks_naming_the_if() -> None:
    groups = by_producer(dependency_groups(if_mlp_model(capture_activation=True)))
    reasons = groups["W0"]["reasons"]
    assert not groups["W0"]["prunable"]
    for branch in ("then_branch", "else_branch"):
        assert (
            f"choose (If) {branch} reads 'h' inside a subgraph (control flow): a captured value "
            "of an enclosing graph is not followed"
        ) in reasons
    assert groups["W1"]["prunable"]  # the branch's own hidden units still are


def silero_vad_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the silero-vad wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


def test_silero_vad_prunes_its_encoder_inside_the_if(tmp_path: Path) -> None:
    model = Cleanup()(ir.load(silero_vad_path())).model
    reference = onnxslim.save(model, tmp_path / "clean.onnx")
    groups = dependency_groups(model)
    # 14: cleanup folds the LSTM weight chains, so each branch's LSTM hidden units are a group
    # (blocked: they size the 'state' input the branches capture)
    assert (len(groups), sum(g["prunable"] for g in groups)) == (14, 8)
    result = StructuredPrune(ratio=0.3).apply(model, onnxslim.PassContext())
    assert result.summary["pruned_groups"] == 8
    path = onnxslim.save(model, tmp_path / "pruned.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert path.stat().st_size < 0.9 * reference.stat().st_size
    rng = np.random.default_rng(0)
    for rate, window in ((16000, 512), (8000, 256)):
        feeds = {
            "input": (rng.standard_normal((3, window)) * 0.1).astype(np.float32),
            "state": np.zeros((2, 3, 128), np.float32),
            "sr": np.array(rate, np.int64),
        }
        outputs = onnxslim.create_session(path).run(None, feeds)
        assert [o.shape for o in outputs] == [(3, 1), (2, 3, 128)]


def loop_mlp_model() -> ir.Model:
    """Three iterations of ``s <- s + relu(s @ W1) @ W2``; W1, W2 are the body's own."""
    weights = _weights(1)
    body = oh.make_graph(
        [
            oh.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            oh.make_node("MatMul", ["s", "W1"], ["u1"], name="body_up"),
            oh.make_node("Relu", ["u1"], ["u2"], name="body_relu"),
            oh.make_node("MatMul", ["u2", "W2"], ["u3"], name="body_down"),
            oh.make_node("Add", ["s", "u3"], ["s_out"], name="body_residual"),
        ],
        "body",
        [
            oh.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            oh.make_tensor_value_info("cond_in", BOOL, []),
            oh.make_tensor_value_info("s", FLOAT, [ROWS, WIDTH]),
        ],
        [
            oh.make_tensor_value_info("cond_out", BOOL, []),
            oh.make_tensor_value_info("s_out", FLOAT, [ROWS, WIDTH]),
        ],
        [onh.from_array((weights[k] * 0.1).astype(np.float32), k) for k in ("W1", "W2")],
    )
    graph = oh.make_graph(
        [oh.make_node("Loop", ["trips", "", "x"], ["y"], name="repeat", body=body)],
        "loop_mlp",
        [
            oh.make_tensor_value_info("trips", onnx.TensorProto.INT64, []),
            oh.make_tensor_value_info("x", FLOAT, [ROWS, WIDTH]),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [ROWS, WIDTH])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return ir.from_proto(model)


def test_hidden_units_inside_a_loop_body_are_pruned(tmp_path: Path) -> None:
    model = loop_mlp_model()
    groups = by_producer(dependency_groups(model, {"trips": []}))
    assert groups["W1"]["prunable"] and groups["W1"]["size"] == HIDDEN
    assert "'s_out' is an output of repeat (Loop) body" in groups["W2"]["reasons"]
    StructuredPrune(ratio=0.25, round_to=1).apply(model, onnxslim.PassContext())
    body = next(iter(model.graph)).attributes["body"].as_graph()
    w1 = body.initializers["W1"].const_value.numpy()
    w2 = body.initializers["W2"].const_value.numpy()
    assert w1.shape == (WIDTH, HIDDEN - HIDDEN // 4) and w2.shape == (HIDDEN - HIDDEN // 4, WIDTH)
    # W1's kept columns and W2's kept rows are the same units of the original weights
    original = {k: (v * 0.1).astype(np.float32) for k, v in _weights(1).items()}
    kept = [int(np.argmin(np.abs(original["W1"] - column[:, None]).sum(0))) for column in w1.T]
    assert len(set(kept)) == len(kept) and kept == sorted(kept)
    np.testing.assert_array_equal(w1, original["W1"][:, kept])
    np.testing.assert_array_equal(w2, original["W2"][kept])
    path = onnxslim.save(model, tmp_path / "pruned.onnx")
    x = np.random.default_rng(4).standard_normal((ROWS, WIDTH)).astype(np.float32)
    expected = x.astype(np.float64)
    for _ in range(3):
        expected = expected + np.maximum(expected @ w1, 0) @ w2
    got = onnxslim.create_session(path).run(None, {"trips": np.array(3), "x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
