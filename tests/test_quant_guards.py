"""Quantization guards (issue 17): the latency guard at a real batch for any declared batch dim."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import onnxslim
from onnxslim import PassContext, UnsupportedModelError
from onnxslim.inputs import fixed_batch
from onnxslim.passes.quantization import QuantizeStatic
from onnxslim.passes.quantization._latency_guard import timing_feeds

torch = pytest.importorskip("torch")

from onnxslim.testing import export_torch  # noqa: E402


def _relu_model(batch: int | str) -> ir.Model:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize(
    ("declared", "fixed", "timed"), [(-1, 0, 3), (0, 0, 3), ("N", 0, 3), (5, 5, 5)]
)
def test_timing_feeds_time_a_real_batch_for_every_declared_batch_dim(declared, fixed, timed):
    model = _relu_model(declared)
    assert fixed_batch(model, "x") == fixed
    batches = [{"x": np.arange(4, dtype=np.float32).reshape(2, 2)}]
    feeds = timing_feeds(model, batches, 3)["x"]
    assert feeds.shape == (timed, 2)
    np.testing.assert_array_equal(feeds[:, 0], [0, 2, 0, 2, 0][:timed])


def test_a_batch_dim_declared_zero_is_refused_in_one_sentence():
    with pytest.raises(UnsupportedModelError, match="input 'x' declares its batch dim as 0"):
        QuantizeStatic("random").apply(_relu_model(0), PassContext())


class _DepthwiseNet(torch.nn.Module):
    """8-channel depthwise residual blocks: ORT's int8 depthwise kernels lose to float here."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Conv2d(8, 8, 3, padding=1, groups=8) for _ in range(4)]
        )

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = torch.relu(block(x)) + x
        return x.mean((2, 3))


def _minus_one_batch_depthwise(folder) -> str:
    torch.manual_seed(0)
    path = export_torch(
        _DepthwiseNet(),
        (torch.randn(1, 1, 32, 32),),
        folder / "dw.onnx",
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    proto = onnx.load(str(path))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = -1  # as Paddle declares a dynamic batch
    onnx.save(proto, str(path))
    return str(path)


def test_minus_one_batch_model_that_int8_slows_comes_back_float(tmp_path):
    path = _minus_one_batch_depthwise(tmp_path)
    model = onnxslim.load(path)
    assert model.graph.inputs[0].shape[0] == -1
    data = [
        {"x": np.random.default_rng(i).normal(size=(1, 1, 32, 32)).astype(np.float32)}
        for i in range(8)
    ]
    before = ir.to_proto(model).SerializeToString()
    result = QuantizeStatic(data, latency_runs=5).apply(model, PassContext(workdir=tmp_path))
    summary = result.summary
    assert not result.modified and ir.to_proto(model).SerializeToString() == before
    assert summary["latency_batch"] == 1
    assert summary["fallback"].startswith("returned the float model")
    assert all(c["rejected"].startswith("latency") for c in summary["candidates"])
    # int8 runs at about 0.3x of float on this depthwise net (see the rejection reasons): the
    # decision is robust to a loaded machine; speed itself is measured in benchmarks/, not here.


def test_timing_feeds_batch_a_recurrent_state_on_its_own_axis():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["state"], ["y"])],
        "rnn",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "N", 4])],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert fixed_batch(model, "state") == 2 and fixed_batch(model, "state", axis=1) == 0
    batches = [{"state": np.arange(16, dtype=np.float32).reshape(2, 2, 4)}]
    feeds = timing_feeds(model, batches, 3, {"state": 1})["state"]
    assert feeds.shape == (2, 3, 4)  # was (2, 2, 4): axis 0 read as the batch, fixed at 2
    np.testing.assert_array_equal(feeds[0, :, 0], [0, 4, 0])
