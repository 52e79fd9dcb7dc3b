"""MACs inside control flow: If counts its larger branch, Loop its body x trip count, Scan its
body x sequence length, and the recurrent ops their gate matrices per step."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir
import onnxruntime as ort

from onnxslim.model import graph_macs, model_stats, node_macs, shape_lookup

FLOAT = onnx.TensorProto.FLOAT


def _weight(name: str, rows: int, cols: int, seed: int) -> onnx.TensorProto:
    return onh.from_array(
        np.random.default_rng(seed).standard_normal((rows, cols), np.float32), name
    )


def _matmul_chain(name: str, widths: list[int], seed: int) -> onnx.GraphProto:
    """A branch computing x @ W1 @ W2 ... of no inputs (x is captured from the outer graph)."""
    nodes, inits, current = [], [], "x"
    for index, (rows, cols) in enumerate(zip(widths, widths[1:])):
        inits.append(_weight(f"{name}_w{index}", rows, cols, seed + index))
        nodes.append(oh.make_node("MatMul", [current, f"{name}_w{index}"], [f"{name}_h{index}"]))
        current = f"{name}_h{index}"
    nodes.append(oh.make_node("ReduceSum", [current], [f"{name}_y"], keepdims=0))
    out = oh.make_tensor_value_info(f"{name}_y", FLOAT, [])
    return oh.make_graph(nodes, name, [], [out], inits)


def _save(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _runs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def if_model() -> onnx.ModelProto:
    then = _matmul_chain("then", [4, 8], 0)  # 1*4*8 = 32 MACs
    other = _matmul_chain("else", [4, 16, 16], 10)  # 1*4*16 + 1*16*16 = 320 MACs
    graph = oh.make_graph(
        [oh.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
        "if_macs",
        [
            oh.make_tensor_value_info("x", FLOAT, [1, 4]),
            oh.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("y", FLOAT, [])],
    )
    return _save(graph)


def test_if_counts_its_larger_branch_and_says_so() -> None:
    model = if_model()
    x = np.ones((1, 4), np.float32)
    assert _runs(model, {"x": x, "cond": np.array(False)})[0].shape == ()
    stats = model_stats(ir.from_proto(model))
    assert stats.macs == 320
    assert stats.mac_notes == ["If 'If_1': its larger branch (else_branch) counted"]
    assert sorted(stats.macs_per_node.values()) == [64, 256]


def loop_model(trip_count: int | None) -> onnx.ModelProto:
    body = oh.make_graph(
        [
            oh.make_node("Identity", ["cond_in"], ["cond_out"]),
            oh.make_node("MatMul", ["h_in", "w"], ["h_out"]),  # [1,4] x [4,4]: 16 MACs
        ],
        "body",
        [
            oh.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            oh.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            oh.make_tensor_value_info("h_in", FLOAT, [1, 4]),
        ],
        [
            oh.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            oh.make_tensor_value_info("h_out", FLOAT, [1, 4]),
        ],
    )
    inputs = [oh.make_tensor_value_info("x", FLOAT, [1, 4])]
    inits = [_weight("w", 4, 4, 3), onh.from_array(np.array(True), "true")]
    if trip_count is None:
        inputs.append(oh.make_tensor_value_info("M", onnx.TensorProto.INT64, []))
    else:
        inits.append(onh.from_array(np.array(trip_count, np.int64), "M"))
    graph = oh.make_graph(
        [oh.make_node("Loop", ["M", "true", "x"], ["y"], body=body)],
        "loop_macs",
        inputs,
        [oh.make_tensor_value_info("y", FLOAT, [1, 4])],
        inits,
    )
    return _save(graph)


def test_loop_counts_its_body_times_a_constant_trip_count() -> None:
    model = loop_model(5)
    x = np.ones((1, 4), np.float32)
    weight = onh.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(
        _runs(model, {"x": x})[0], x @ np.linalg.matrix_power(weight, 5), rtol=1e-4
    )
    stats = model_stats(ir.from_proto(model))
    assert (stats.macs, stats.mac_notes) == (80, [])


def test_loop_with_a_fed_trip_count_counts_one_iteration_and_says_so() -> None:
    stats = model_stats(ir.from_proto(loop_model(None)))
    assert stats.macs == 16
    assert len(stats.mac_notes) == 1
    assert stats.mac_notes[0].endswith("trip count not a constant, one iteration counted")


def scan_model(steps: int) -> onnx.ModelProto:
    body = oh.make_graph(
        [
            oh.make_node("MatMul", ["x_t", "w"], ["p"]),  # [1,4] x [4,6]: 24 MACs a step
            oh.make_node("Add", ["acc_in", "p"], ["acc_out"]),
        ],
        "body",
        [
            oh.make_tensor_value_info("acc_in", FLOAT, [1, 6]),
            oh.make_tensor_value_info("x_t", FLOAT, [1, 4]),
        ],
        [oh.make_tensor_value_info("acc_out", FLOAT, [1, 6])],
    )
    graph = oh.make_graph(
        [oh.make_node("Scan", ["acc0", "xs"], ["acc"], body=body, num_scan_inputs=1)],
        "scan_macs",
        [
            oh.make_tensor_value_info("acc0", FLOAT, [1, 6]),
            oh.make_tensor_value_info("xs", FLOAT, [steps, 1, 4]),
        ],
        [oh.make_tensor_value_info("acc", FLOAT, [1, 6])],
        [_weight("w", 4, 6, 4)],
    )
    return _save(graph)


def test_scan_counts_its_body_times_the_sequence_length() -> None:
    model = scan_model(7)
    xs = np.random.default_rng(1).standard_normal((7, 1, 4), np.float32)
    weight = onh.to_array(model.graph.initializer[0])
    (acc,) = _runs(model, {"acc0": np.zeros((1, 6), np.float32), "xs": xs})
    np.testing.assert_allclose(acc, (xs @ weight).sum(axis=0), rtol=1e-4, atol=1e-5)
    stats = model_stats(ir.from_proto(model))
    assert (stats.macs, stats.mac_notes) == (7 * 24, [])


def test_recurrent_ops_count_w_and_r_per_step_and_direction() -> None:
    rng = np.random.default_rng(2)
    for op, gates in (("LSTM", 4), ("GRU", 3), ("RNN", 1)):
        w = onh.from_array(rng.standard_normal((2, gates * 5, 3), np.float32), "W")
        r = onh.from_array(rng.standard_normal((2, gates * 5, 5), np.float32), "R")
        graph = oh.make_graph(
            [oh.make_node(op, ["X", "W", "R"], ["Y"], hidden_size=5, direction="bidirectional")],
            op.lower(),
            [oh.make_tensor_value_info("X", FLOAT, [6, 2, 3])],
            [oh.make_tensor_value_info("Y", FLOAT, [6, 2, 2, 5])],
            [w, r],
        )
        model = _save(graph)
        (y,) = _runs(model, {"X": np.ones((6, 2, 3), np.float32)})
        assert y.shape == (6, 2, 2, 5)
        ir_model = ir.from_proto(model)
        expected = 6 * 2 * 2 * gates * 5 * (3 + 5)
        assert model_stats(ir_model).macs == expected, op
        node = next(iter(ir_model.graph))
        assert node_macs(node, shape_lookup({})) == expected


def test_graph_macs_reads_the_shapes_it_is_given() -> None:
    model = ir.from_proto(scan_model(3))
    count = graph_macs(model.graph, shape_lookup({"xs": (11, 1, 4)}))
    assert count.total == 11 * 24
    assert list(count.per_node.values()) == [11 * 24]
