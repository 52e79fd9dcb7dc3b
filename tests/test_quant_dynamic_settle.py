"""The latency guard prefers dynamic MatMuls within 10 % of the fastest candidate (their
fidelity), but only once a head-to-head timing against the fastest static candidate keeps
them within DYNAMIC_SLACK: the ranking round alone, on a busy machine, let a dynamic PP-OCR
rec model lead that ran 15 % slower. Real ORT sessions on two real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxslim.fidelity import Fidelity
from onnxslim.passes.quantization._candidates import Candidate, Evaluation
from onnxslim.passes.quantization._latency_guard import _best_first, settle_dynamic

FEEDS = {"x": np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)}


def _chain(path: Path, layers: int) -> Path:
    rng = np.random.default_rng(layers)
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        weights.append(
            numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), f"w{i}")
        )
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
        previous = f"t{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 64])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _candidate(label: str, path: Path, speedup: float, dynamic: bool) -> Candidate:
    fidelity = Fidelity(0.0, 0.0, float("inf"), None, 1)
    return Candidate(
        label, None if dynamic else ("MatMul",), path, Evaluation(fidelity), speedup=speedup
    )


def test_a_dynamic_lead_slower_head_to_head_gives_way_to_the_fastest(tmp_path):
    fast, slow = _chain(tmp_path / "fast.onnx", 2), _chain(tmp_path / "slow.onnx", 24)
    tried = [
        _candidate("all quantizable ops", fast, 1.30, dynamic=False),
        _candidate("dynamic MatMul/Gemm", slow, 1.25, dynamic=True),  # ranked within 10 %
    ]
    ordered = _best_first(tried, [0, 1])
    assert ordered == [1, 0]  # the ranking alone: dynamic first
    assert settle_dynamic(tried, ordered, FEEDS, runs=5, threads=1) == [0, 1]


def test_a_dynamic_lead_that_is_the_fastest_or_a_static_lead_stays_untimed(tmp_path):
    missing = tmp_path / "never-opened.onnx"  # timing it would fail: nothing is timed
    tried = [
        _candidate("all quantizable ops", missing, 1.20, dynamic=False),
        _candidate("dynamic MatMul/Gemm", missing, 1.25, dynamic=True),
    ]
    assert settle_dynamic(tried, [1, 0], FEEDS, runs=5, threads=1) == [1, 0]
    assert settle_dynamic(tried, [0, 1], FEEDS, runs=5, threads=1) == [0, 1]
