"""LSTM/GRU/RNN hidden units as prunable groups: gate blocks of W, R, B (and P) cut together, the
states resized, the consumer of Y / Y_h cut on its input side; the zeroed-slice oracle holds."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.helper
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim.passes.pruning import StructuredPrune, dependency_groups
from onnxslim.passes.pruning._ir import constant_array
from tests.test_pruning import _export, check_oracles

torch = pytest.importorskip("torch")
nn = torch.nn


class RecurrentHead(nn.Module):
    """nn.LSTM/GRU/RNN (batch_first) + Linear on every step's output."""

    def __init__(self, kind: str, bidirectional: bool = False, layers: int = 1):
        super().__init__()
        rnn = getattr(nn, kind)
        self.rnn = rnn(6, 12, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(12 * (2 if bidirectional else 1), 5)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


class LastState(nn.Module):
    """Linear on the last hidden state Y_h (Squeeze of the direction axis)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 10)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        _, (h, _) = self.rnn(x)
        return self.fc(h[0])


class StateInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x, h0):
        return self.fc(self.rnn(x, h0)[0])


def _export_quiet(module, inputs, tmp_path, **kwargs):
    with warnings.catch_warnings():  # torch warns about LSTM batch sizes; the batch here is dynamic
        warnings.simplefilter("ignore")
        return _export(module, inputs, tmp_path, 17, **kwargs)


def _recurrent_node(model: ir.Model) -> ir.Node:
    return next(n for n in model.graph if n.op_type in ("LSTM", "GRU", "RNN"))


@pytest.mark.parametrize(
    ("kind", "gates", "bidirectional"),
    [("LSTM", 4, False), ("GRU", 3, False), ("RNN", 1, False), ("LSTM", 4, True), ("GRU", 3, True)],
)
def test_recurrent_hidden_units_oracle(kind, gates, bidirectional, tmp_path):
    path = _export_quiet(RecurrentHead(kind, bidirectional), (torch.randn(1, 7, 6),), tmp_path)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5)
    assert summary["pruned_groups"] == 1 and summary["units_removed"] == 6
    node = _recurrent_node(pruned)
    directions = 2 if bidirectional else 1
    assert node.attributes.get_int("hidden_size") == 6
    w, r, b = (constant_array(node.inputs[i]).shape for i in (1, 2, 3))
    assert (w, r, b) == (
        (directions, gates * 6, 6),
        (directions, gates * 6, 6),
        (directions, 2 * gates * 6),
    )
    # the zero initial states (ConstantOfShape [D, batch, 12]) are dropped: ONNX's default
    assert all(v is None for v in node.inputs[5:])
    matmul = next(n for n in pruned.graph if n.op_type == "MatMul")
    assert constant_array(matmul.inputs[1]).shape == (6 * directions, 5)


def test_two_layers_cut_the_next_layer_input_side(tmp_path):
    path = _export_quiet(RecurrentHead("LSTM", layers=2), (torch.randn(1, 7, 6),), tmp_path)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5)
    assert summary["pruned_groups"] == 2
    first, second = [n for n in pruned.graph if n.op_type == "LSTM"]
    assert constant_array(first.inputs[1]).shape == (1, 24, 6)
    assert constant_array(second.inputs[1]).shape == (1, 24, 6)  # its input axis: layer 1's units


def test_last_state_consumer_is_cut(tmp_path):
    path = _export_quiet(LastState(), (torch.randn(7, 1, 6),), tmp_path, dynamic_batch=False)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5)
    assert summary["units_removed"] == 5
    gemm = next(n for n in pruned.graph if n.op_type in ("Gemm", "MatMul"))
    assert 5 in constant_array(gemm.inputs[1]).shape


def test_state_given_as_graph_input_blocks_with_reason(tmp_path):
    path = _export_quiet(
        StateInput(),
        (torch.randn(1, 7, 6), torch.zeros(1, 1, 8)),
        tmp_path,
        input_names=["x", "h0"],
        dynamic_axes={"x": {0: "batch"}, "h0": {1: "batch"}},
    )
    groups = dependency_groups(onnxslim.load(path))
    recurrent = next(g for g in groups if any("GRU" in m for m in g["producers"]))
    assert not recurrent["prunable"]
    assert "'h0' is a graph input" in recurrent["reasons"]


# onnx.helper: peepholes P and a non-zero constant initial state, cut along with the units.
def _peephole_lstm() -> ir.Model:
    rng = np.random.default_rng(0)
    hidden, features = 8, 4
    tensors = {
        "W": rng.standard_normal((1, 4 * hidden, features)),
        "R": rng.standard_normal((1, 4 * hidden, hidden)) * 0.5,
        "B": rng.standard_normal((1, 8 * hidden)),
        "P": rng.standard_normal((1, 3 * hidden)),
        "h0": rng.standard_normal((1, 1, hidden)),
        "c0": rng.standard_normal((1, 1, hidden)),
        "V": rng.standard_normal((hidden, 3)),
    }
    initializers = [
        onnx.numpy_helper.from_array(a.astype(np.float32), name) for name, a in tensors.items()
    ]
    nodes = [
        onnx.helper.make_node(
            "LSTM",
            ["x", "W", "R", "B", "", "h0", "c0", "P"],
            ["Y", "Yh"],
            hidden_size=hidden,
        ),
        onnx.helper.make_node("Squeeze", ["Y", "axis1"], ["Ys"]),
        onnx.helper.make_node("MatMul", ["Ys", "V"], ["out"]),
    ]
    initializers.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    graph = onnx.helper.make_graph(
        nodes,
        "peephole",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5, 1, features])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [5, 1, 3])],
        initializers,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    return ir.from_proto(model)


def test_peepholes_and_constant_states_oracle(tmp_path):
    path = tmp_path / "peephole.onnx"
    onnxslim.save(_peephole_lstm(), path)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5)
    assert summary["units_removed"] == 4
    node = _recurrent_node(pruned)
    assert [constant_array(node.inputs[i]).shape for i in (5, 6, 7)] == [
        (1, 1, 4),
        (1, 1, 4),
        (1, 12),
    ]


def test_ratio_zero_and_round_to_keep_gate_blocks_whole(tmp_path):
    path = _export_quiet(RecurrentHead("LSTM"), (torch.randn(1, 7, 6),), tmp_path)
    model = onnxslim.load(path)
    StructuredPrune(ratio=0.5, round_to=8)(model)
    assert _recurrent_node(model).attributes.get_int("hidden_size") == 8
