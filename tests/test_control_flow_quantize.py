"""Quantization inside If bodies: ORT's dynamic MatMul quantization with its subgraph option puts
int8 MatMuls inside both branches (weights of a branch's own and captured from the main graph), the
pass reports them, and the outputs stay within bound on held-out data in both branches."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

import onnxslim
from onnxslim import PassContext
from onnxslim.passes import QuantizeStatic
from onnxslim.passes.quantization._candidates import candidate_op_sets

FLOAT, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
WIDTH, ROWS = 128, 8


def _weight(rng: np.random.Generator, name: str) -> onnx.TensorProto:
    array = rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)
    return onh.from_array(array.astype(np.float32), name)


@pytest.fixture(scope="module")
def if_matmul_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """then: ``relu(x @ W1) @ W2`` (the branch's own weights); else: ``x @ W3`` (W3 is a main-graph
    initializer the branch captures)."""
    rng = np.random.default_rng(5)
    then_branch = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "W1"], ["h"], name="then_matmul_1"),
            oh.make_node("Relu", ["h"], ["r"], name="then_relu"),
            oh.make_node("MatMul", ["r", "W2"], ["y_then"], name="then_matmul_2"),
        ],
        "then",
        [],
        [oh.make_tensor_value_info("y_then", FLOAT, [ROWS, WIDTH])],
        [_weight(rng, "W1"), _weight(rng, "W2")],
    )
    else_branch = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W3"], ["y_else"], name="else_matmul")],
        "else",
        [],
        [oh.make_tensor_value_info("y_else", FLOAT, [ROWS, WIDTH])],
    )
    graph = oh.make_graph(
        [
            oh.make_node(
                "If", ["flag"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch
            )
        ],
        "if_matmul",
        [
            oh.make_tensor_value_info("x", FLOAT, [ROWS, WIDTH]),
            oh.make_tensor_value_info("flag", BOOL, []),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [ROWS, WIDTH])],
        [_weight(rng, "W3")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("if_matmul") / "if_matmul.onnx"
    onnx.save(model, path)
    return path


def feeds(seed: int, flag: bool) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((ROWS, WIDTH)).astype(np.float32)
    return {"x": x, "flag": np.array(flag)}


def branch_ops(model: onnx.ModelProto) -> dict[str, collections.Counter]:
    node = next(n for n in model.graph.node if n.op_type == "If")
    return {a.name: collections.Counter(n.op_type for n in a.g.node) for a in node.attribute}


def test_dynamic_int8_inside_both_branches_within_bound(if_matmul_path: Path, tmp_path: Path):
    model = onnxslim.load(if_matmul_path)
    data = [feeds(seed, flag=seed % 2 == 0) for seed in range(8)]
    result = QuantizeStatic(data, mode="dynamic", latency_guard=False).apply(
        model, PassContext(workdir=tmp_path)
    )
    assert result.modified and result.summary["chosen"] == "dynamic MatMul/Gemm"
    saved = onnxslim.save(model, tmp_path / "int8.onnx")
    ops = branch_ops(onnx.load(saved))
    assert ops["then_branch"]["MatMulInteger"] == 2 and ops["then_branch"]["MatMul"] == 0
    assert ops["else_branch"]["MatMulInteger"] == 1 and ops["else_branch"]["MatMul"] == 0
    assert sorted(result.summary["nodes_quantized"]) == [
        "else_matmul",
        "then_matmul_1",
        "then_matmul_2",
    ]
    reference = onnxslim.create_session(if_matmul_path)
    quantized = onnxslim.create_session(saved)
    for flag in (True, False):
        held_out = feeds(100, flag)
        expected = reference.run(None, held_out)[0]
        actual = quantized.run(None, held_out)[0]
        assert actual.shape == expected.shape
        assert 25.0 < onnxslim.sqnr_db(expected, actual) < 80.0, flag  # int8, not float


def test_auto_mode_offers_dynamic_for_matmuls_that_live_only_in_branches(if_matmul_path: Path):
    # the main graph holds no MatMul at all: only the branches' weights make dynamic worth trying
    proto = onnx.load(if_matmul_path)
    assert [n.op_type for n in proto.graph.node] == ["If"]
    assert ("dynamic MatMul/Gemm", None) in candidate_op_sets(proto, None, "auto")
