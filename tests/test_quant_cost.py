"""The accuracy guard's cost cuts give the numbers they replaced: one session per candidate
evaluation, layer sensitivity without ORT's arena and with the reference fetched in parts."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

import onnxslim
from onnxslim.model import ValueProbe
from onnxslim.passes.quantization import layer_sensitivity, run_outputs
from onnxslim.passes.quantization._accuracy_guard import _outputs_and_logits, run_with_logits
from onnxslim.passes.quantization._sensitivity import (
    PART_BYTES,
    SPLIT_MIN_TENSORS,
    _add_sample,
    _seen_as,
)
from onnxslim.runtime import session_options

LAYERS = 36  # more than SPLIT_MIN_TENSORS: the first sample is fetched in two parts


class _Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


def _chain(folder, layers=LAYERS):
    """x[1,8] -> (MatMul, Relu) x layers -> Add -> Sigmoid y: logits 'logits'."""
    rng = np.random.default_rng(0)
    nodes, initializers, previous = [], [], "x"
    for i in range(layers):
        weight = (rng.standard_normal((8, 8)) * 0.4 + np.eye(8)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        previous = f"r{i}"
    initializers.append(numpy_helper.from_array(np.full((8,), -0.5, np.float32), "b"))
    nodes.append(helper.make_node("Add", [previous, "b"], ["logits"], name="add"))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["y"], name="sigmoid"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    float_path, quantized_path = folder / "float.onnx", folder / "quantized.onnx"
    onnx.save(model, str(float_path))
    batches = [{"x": rng.uniform(0, 2, (2, 8)).astype(np.float32)} for _ in range(3)]
    quantize_static(
        str(float_path), str(quantized_path), _Reader(batches), quant_format=QuantFormat.QDQ
    )
    return float_path, quantized_path, batches


def test_one_session_gives_the_outputs_and_logits_two_sessions_gave(tmp_path):
    _, quantized, batches = _chain(tmp_path, layers=4)
    plain, with_logits = _outputs_and_logits(quantized, batches, {"y": "logits"})
    assert [list(o) for o in plain] == [["y"]] * 3 and [list(o) for o in with_logits] == [["y"]] * 3
    for got, want in zip(plain, run_outputs(quantized, batches)):
        np.testing.assert_array_equal(got["y"], want["y"])
    for got, want in zip(with_logits, run_with_logits(quantized, batches, {"y": "logits"})):
        np.testing.assert_array_equal(got["y"], want["y"])
    # the logits are not the probabilities: some are negative
    assert min(float(o["y"].min()) for o in with_logits) < 0.0 < float(plain[0]["y"].min())
    # no logits to judge: the outputs, from the one session, twice
    plain, same = _outputs_and_logits(quantized, batches, {})
    assert same is plain


def test_sensitivity_sums_do_not_depend_on_how_the_reference_is_fetched(tmp_path):
    float_path, quantized, batches = _chain(tmp_path)
    float_model, quantized_model = onnxslim.load(float_path), onnxslim.load(quantized)
    names = [f"r{i}" for i in range(LAYERS)]  # ORT quantizes after the Relu
    assert len(names) > SPLIT_MIN_TENSORS and PART_BYTES == 96 << 20
    seen_as = _seen_as(quantized_model, names)
    assert seen_as["r0"] == "r0_DequantizeLinear_Output"
    probes = [
        ValueProbe(float_model, names, options=session_options()),
        ValueProbe(quantized_model, [seen_as[n] for n in names], options=session_options()),
    ]
    # one sample at a time, as layer_sensitivity runs a model with a free batch
    runs = [{"x": b["x"][i : i + 1]} for b in batches for i in range(2)]
    results = []
    for parts in (1, 2, 5, LAYERS):
        sums: tuple[dict, dict] = (dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0))
        held = [_add_sample(probes, names, seen_as, r, parts, sums) for r in runs]
        assert held == [LAYERS * 8 * 4] * 6  # float32 [1, 8] per tensor
        results.append(sums)
    assert all(r == results[0] for r in results[1:])  # bit for bit
    assert _add_sample(probes, [], {}, runs[0], 2, sums) == 0  # no tensor kept its name
    # and layer_sensitivity (parts chosen from the sizes) gives the same SQNRs
    signal, noise = results[0]
    _, sqnr = layer_sensitivity(
        float_model, quantized, {f"relu{i}": f"r{i}" for i in range(LAYERS)}, batches
    )
    expected = {n: 10 * np.log10(signal[n] / noise[n]) for n in names if noise[n]}
    assert {n: v for n, v in sqnr.items() if np.isfinite(v)} == expected


def test_latency_guard_macs_come_from_the_timed_feeds_not_symbolic_inference(tmp_path):
    """The MACs at the timed feeds' shapes, from one run: no symbolic inference of the whole
    model (seconds and ~180 MiB of sympy on digits/cls; on PP-OCR cls it left most Conv MACs
    unknown and some negative)."""
    from onnxslim.model import model_stats
    from onnxslim.passes.quantization._latency_guard import _node_macs

    weight = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    loaded = onnxslim.load(path)
    feeds = {"x": np.zeros((3, 2, 8, 8), np.float32)}
    assert _node_macs(loaded, ["conv"], feeds, None) == {"conv": 3 * 4 * 8 * 8 * 2 * 3 * 3}
    # where symbolic inference resolves (here batch 1), the same MACs per sample: the same
    # per-MAC ranking of kernels
    assert model_stats(loaded).macs_per_node == {"conv": 4 * 8 * 8 * 2 * 3 * 3}
