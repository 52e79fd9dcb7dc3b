"""Releasing a tensor's Quantize/Dequantize pair keeps the Relu ORT's quantizer folded into it
(PP-OCR det: every Relu is gone from the QDQ graph, so a released pair used to drop the Relu and
the per-tensor search ranked the stem's tensors on a broken graph)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxslim.passes.quantization._node_search import activation_pairs, released


def _conv_relu_net() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Relu -> Conv: ORT's quantizer removes both Relus."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3,
        "w2": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3,
        "w3": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["h2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="c3"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(proto: onnx.ModelProto, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = np.sum((reference - candidate) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / noise))


def test_a_released_pair_keeps_the_relu_the_quantizer_removed(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    rng = np.random.default_rng(2)
    samples = [{"x": rng.standard_normal((1, 4, 16, 16)).astype(np.float32)} for _ in range(5)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(samples[:4])

        def get_next(self):
            return next(self.items, None)

    source = tmp_path / "float.onnx"
    onnx.save(_conv_relu_net(), str(source))
    quantize_static(str(source), str(tmp_path / "qdq.onnx"), Reader(), per_channel=True)
    proto = onnx.load(str(tmp_path / "qdq.onnx"))
    assert not any(n.op_type == "Relu" for n in proto.graph.node)  # folded into the Q clamps
    pairs = activation_pairs(proto)
    assert set(pairs) == {"x", "r1", "r2"}

    free = released(proto, list(pairs))  # weights-only int8
    relus = [(n.name, list(n.input)) for n in free.graph.node if n.op_type == "Relu"]
    assert relus == [("r1_released_relu", ["r1"]), ("r2_released_relu", ["r2"])]
    assert not activation_pairs(free)  # the graph input x has no removed Relu: read as is
    assert [n.name for n in free.graph.node if "x" in n.input] == ["c1"]
    reference = _run(_conv_relu_net(), samples[4])
    assert _sqnr_db(reference, _run(free, samples[4])) > 30.0
    # without the Relus the released graph is another function: the negative half leaks through
    leaky = released(proto, list(pairs))
    for node in leaky.graph.node:
        if node.op_type == "Relu":
            node.op_type = "Identity"
    assert _sqnr_db(reference, _run(leaky, samples[4])) < 10.0


def _spread_outlier_net() -> onnx.ModelProto:
    """Five Convs in a row each put a +400 outlier on channel 0 (the next one ignores it), then a
    plain Conv and 40 identity Convs: five tensors (h1..h5) each break the SQNR bound alone, so
    releasing the worst 1, 2 or 4 cannot fix it; the first bisection chunk (x, h1..h5) does."""
    rng = np.random.default_rng(0)
    weights, nodes, previous = {}, [], "x"
    for index in range(1, 47):
        if index <= 6:
            weight = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
            weight[:, 0] = 0.0 if index > 1 else weight[:, 0]
            bias = np.zeros(8, np.float32)
            bias[0] = 400.0 if index <= 5 else 0.0
        else:
            weight = np.eye(8, dtype=np.float32).reshape(8, 8, 1, 1)
            bias = np.zeros(8, np.float32)
        weights[f"w{index}"], weights[f"b{index}"] = weight, bias
        output = "y" if index == 46 else f"h{index}"
        nodes.append(
            helper.make_node(
                "Conv", [previous, f"w{index}", f"b{index}"], [output], name=f"c{index}"
            )
        )
        previous = output
    graph = helper.make_graph(
        nodes,
        "spread_outliers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_an_error_spread_over_a_region_keeps_the_bisections_chunk_float():
    import onnx_ir as ir

    from onnxslim import PassContext
    from onnxslim.passes.quantization import QuantizeStatic

    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(24)]
    model = ir.from_proto(_spread_outlier_net())
    result = QuantizeStatic(data, latency_guard=False).apply(model, PassContext())
    summary = result.summary
    labels = [c["label"] for c in summary["candidates"]]
    assert labels[:2] == [
        "all quantizable ops",
        "all quantizable ops, 6 sensitive tensor(s) in float",
    ]
    first, found = summary["candidates"][:2]
    assert first["fidelity"]["sqnr_db"] < 20 and found["fidelity"]["sqnr_db"] > 20
    assert summary["chosen"] == labels[1]
    kept = sorted(n for n, why in summary["nodes_excluded"].items() if "6 tensors from 'x'" in why)
    assert kept == ["c1", "c2", "c3", "c4", "c5", "c6"]
