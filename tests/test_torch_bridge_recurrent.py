"""Torch kernels for LSTM/GRU/RNN: parity with ONNX Runtime (1e-5) in every direction, with and
without initial states, peepholes, GRU's linear_before_reset; torch-exported nn.LSTM/nn.GRU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import onnx_ir as ir
import pytest

torch = pytest.importorskip("torch")

import onnxslim  # noqa: E402
from onnxslim import UnsupportedModelError, testing  # noqa: E402
from onnxslim.torch_bridge import OnnxModule  # noqa: E402
from tests.test_torch_bridge import assert_parity  # noqa: E402

ATOL = 1e-5
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STEPS, BATCH, FEATURES, HIDDEN = 5, 3, 4, 6


def _recurrent_model(
    op: str,
    direction: str,
    *,
    states: bool,
    peepholes: bool = False,
    outputs: int = 3,
    **attributes,
) -> tuple[ir.Model, dict[str, np.ndarray]]:
    """One recurrent node; W, R, B (and P) initializers, x and the initial states as inputs."""
    rng = np.random.default_rng(7)
    d, g = (2 if direction == "bidirectional" else 1), GATES[op]
    weights = {
        "W": rng.standard_normal((d, g * HIDDEN, FEATURES)) * 0.5,
        "R": rng.standard_normal((d, g * HIDDEN, HIDDEN)) * 0.5,
        "B": rng.standard_normal((d, 2 * g * HIDDEN)) * 0.5,
    }
    names = ["x", "W", "R", "B", ""]
    inputs = [onnx.helper.make_tensor_value_info("x", 1, [STEPS, BATCH, FEATURES])]
    feeds = {"x": rng.standard_normal((STEPS, BATCH, FEATURES)).astype(np.float32)}
    state_names = ["h0", "c0"] if op == "LSTM" else ["h0"]
    for name in state_names:
        if states:
            inputs.append(onnx.helper.make_tensor_value_info(name, 1, [d, BATCH, HIDDEN]))
            feeds[name] = rng.standard_normal((d, BATCH, HIDDEN)).astype(np.float32)
        names.append(name if states else "")
    if peepholes:
        weights["P"] = rng.standard_normal((d, 3 * HIDDEN)) * 0.5
        names += [""] * (7 - len(names)) + ["P"]
    while names and names[-1] == "":
        names.pop()
    out_names = ["Y", "Y_h", "Y_c"][: min(outputs, 3 if op == "LSTM" else 2)]
    node = onnx.helper.make_node(
        op, names, out_names, hidden_size=HIDDEN, direction=direction, **attributes
    )
    graph = onnx.helper.make_graph(
        [node],
        "recurrent",
        inputs,
        [onnx.helper.make_tensor_value_info(n, 1, None) for n in out_names],
        [onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 14)])
    return ir.from_proto(model), feeds


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("states", [False, True])
def test_recurrent_kernel_parity(op, direction, states):
    model, feeds = _recurrent_model(op, direction, states=states)
    assert_parity(model, feeds, atol=ATOL)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes_parity(direction):
    model, feeds = _recurrent_model("LSTM", direction, states=True, peepholes=True)
    assert_parity(model, feeds, atol=ATOL)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_gru_linear_before_reset_parity(direction):
    model, feeds = _recurrent_model("GRU", direction, states=True, linear_before_reset=1)
    assert_parity(model, feeds, atol=ATOL)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_clip_parity(op):
    model, feeds = _recurrent_model(op, "bidirectional", states=True, clip=0.7)
    assert_parity(model, feeds, atol=ATOL)


def test_activations_attribute_and_only_y_output():
    model, feeds = _recurrent_model(
        "RNN", "bidirectional", states=False, outputs=1, activations=["Relu", "Tanh"]
    )
    assert_parity(model, feeds, atol=ATOL)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"input_forget": 1}, "input_forget=1"),
        ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, "['HardSigmoid']"),
    ],
)
def test_unsupported_attributes_fail_at_construction(attributes, message):
    model, _ = _recurrent_model("LSTM", "forward", states=False, **attributes)
    with pytest.raises(
        UnsupportedModelError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        OnnxModule(model)


class Speech(torch.nn.Module):
    def __init__(self, kind: str, bidirectional: bool):
        super().__init__()
        rnn = getattr(torch.nn, kind)
        self.rnn = rnn(8, 16, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = torch.nn.Linear(16 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_exported_recurrent_model_parity(kind, bidirectional, tmp_path: Path):
    torch.manual_seed(0)
    path = testing.export_torch(
        Speech(kind, bidirectional), (torch.randn(1, 9, 8),), tmp_path / "m.onnx", opset=17
    )
    feeds = {"input0": np.random.default_rng(3).standard_normal((2, 9, 8)).astype(np.float32)}
    assert_parity(onnxslim.load(path), feeds, atol=ATOL)
