"""Cleanup inside control-flow bodies: weight chains (torch's LSTM gate reorder, Slice/Concat/
Unsqueeze of a large constant) fold inside an If branch, exactly, and leave no dead source."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxslim.model import parameter_count
from onnxslim.passes import Cleanup

FLOAT = onnx.TensorProto.FLOAT
HIDDEN, FEATURES = 64, 48  # W is [4*64, 48] = 12288 elements: above onnxscript's fold limit


def _lstm_branch(name: str, seed: int) -> onnx.GraphProto:
    """torch's LSTM export: W/R reordered from (i, f, g, o) to ONNX's (i, o, f, c) by Slice and
    Concat, then Unsqueeze'd to [1, 4H, .]; the weights are initializers of the branch."""
    rng = np.random.default_rng(seed)
    inits = [
        onh.from_array(rng.standard_normal((4 * HIDDEN, FEATURES), np.float32), f"{name}_w_ih"),
        onh.from_array(rng.standard_normal((4 * HIDDEN, HIDDEN), np.float32), f"{name}_w_hh"),
        onh.from_array(np.array([0], np.int64), f"{name}_axis"),
    ]
    nodes = []
    for source in ("w_ih", "w_hh"):
        parts = []
        for part, (start, end) in enumerate(((0, 1), (3, 4), (1, 3))):
            starts, ends = f"{name}_{source}_s{part}", f"{name}_{source}_e{part}"
            inits.append(onh.from_array(np.array([start * HIDDEN], np.int64), starts))
            inits.append(onh.from_array(np.array([end * HIDDEN], np.int64), ends))
            parts.append(f"{name}_{source}_p{part}")
            nodes.append(
                oh.make_node(
                    "Slice", [f"{name}_{source}", starts, ends, f"{name}_axis"], [parts[-1]]
                )
            )
        nodes.append(oh.make_node("Concat", parts, [f"{name}_{source}_cat"], axis=0))
        nodes.append(
            oh.make_node(
                "Unsqueeze", [f"{name}_{source}_cat", f"{name}_axis"], [f"{name}_{source}_3d"]
            )
        )
    nodes.append(
        oh.make_node(
            "LSTM",
            ["x", f"{name}_w_ih_3d", f"{name}_w_hh_3d"],
            [f"{name}_y"],
            hidden_size=HIDDEN,
        )
    )
    out = oh.make_tensor_value_info(f"{name}_y", FLOAT, [5, 1, 1, HIDDEN])
    return oh.make_graph(nodes, name, [], [out], inits)


def if_lstm_model() -> onnx.ModelProto:
    graph = oh.make_graph(
        [
            oh.make_node(
                "If",
                ["cond"],
                ["y"],
                then_branch=_lstm_branch("then", 0),
                else_branch=_lstm_branch("else", 1),
            )
        ],
        "if_lstm",
        [
            oh.make_tensor_value_info("x", FLOAT, [5, 1, FEATURES]),
            oh.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [5, 1, 1, HIDDEN])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto | ir.Model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    proto = model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _branches(model: ir.Model) -> list[ir.Graph]:
    return [attribute.as_graph() for attribute in next(iter(model.graph)).attributes.values()]


def test_lstm_weight_chains_fold_inside_both_branches_exactly() -> None:
    proto = if_lstm_model()
    x = np.random.default_rng(5).standard_normal((5, 1, FEATURES)).astype(np.float32)
    before = {cond: _run(proto, {"x": x, "cond": np.array(cond)}) for cond in (True, False)}
    model = ir.from_proto(proto)
    parameters_before = parameter_count(model)
    Cleanup()(model)
    for branch in _branches(model):
        assert [node.op_type for node in branch] == ["LSTM"]
        lstm = next(iter(branch))
        for slot, cols in ((1, FEATURES), (2, HIDDEN)):
            weight = lstm.inputs[slot]
            assert weight is not None and weight.const_value is not None
            assert weight.const_value.shape.numpy() == (1, 4 * HIDDEN, cols)
        # the [4H, .] sources and the slice bounds are gone: nothing left unread
        assert sorted(branch.initializers) == sorted(str(lstm.inputs[s].name) for s in (1, 2))
    assert parameter_count(model) == parameters_before
    for cond, expected in before.items():
        np.testing.assert_array_equal(_run(model, {"x": x, "cond": np.array(cond)}), expected)


def test_a_layout_chain_into_an_activation_stays_under_the_size_limit() -> None:
    """Only chains ending in weight slots fold past onnxscript's size limit: a Slice of a large
    constant added to the input is left for the runtime (folding would only copy it)."""
    table = np.arange(2 * 16384, dtype=np.float32).reshape(2, 16384)
    graph = oh.make_graph(
        [
            oh.make_node("Slice", ["table", "one", "two", "zero"], ["row"]),
            oh.make_node("Add", ["x", "row"], ["y"]),
        ],
        "slice_add",
        [oh.make_tensor_value_info("x", FLOAT, [1, 16384])],
        [oh.make_tensor_value_info("y", FLOAT, [1, 16384])],
        [
            onh.from_array(table, "table"),
            onh.from_array(np.array([1], np.int64), "one"),
            onh.from_array(np.array([2], np.int64), "two"),
            onh.from_array(np.array([0], np.int64), "zero"),
        ],
    )
    model = ir.from_proto(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    Cleanup()(model)
    assert [node.op_type for node in model.graph] == ["Slice", "Add"]
    x = np.ones((1, 16384), np.float32)
    np.testing.assert_array_equal(_run(model, {"x": x}), x + table[1:])


def silero_vad_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the silero-vad wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


def test_silero_vad_lstm_weights_become_constants_and_outputs_stay_identical() -> None:
    path = silero_vad_path()
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = ir.load(path)
    parameters_before = parameter_count(model)
    summary = Cleanup()(model).summary
    # nodes of the If bodies counted (the main graph alone: 5 -> 2)
    assert (summary["nodes_before"], summary["nodes_after"]) == (689, 84)
    lstms = [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.op_type == "LSTM"]
    assert len(lstms) == 2  # one per sample-rate branch
    for lstm in lstms:
        for slot in (1, 2, 3):  # W, R, B
            weight = lstm.inputs[slot]
            assert weight is not None and weight.const_value is not None
    assert parameter_count(model) <= parameters_before
    cleaned = ort.InferenceSession(
        ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    for sr, window in ((16000, 512), (8000, 256)):
        t = np.arange(4 * window) / sr
        audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(
            np.float32
        )
        states = [np.zeros((2, 1, 128), np.float32)] * 2
        for k in range(4):
            feeds = {"input": audio[None, k * window : (k + 1) * window], "sr": np.array(sr)}
            expected, states[0] = original.run(None, {**feeds, "state": states[0]})
            got, states[1] = cleaned.run(None, {**feeds, "state": states[1]})
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(states[1], states[0])
