"""Calibration's ranges, pinned bit for bit before its cost was cut (issue #17 item 7).

The model's weights and inputs are small integers, so every activation is an exact float32
whatever ORT's kernels, threads or CPU: the pinned ranges hold on any machine. Activations are
bigger than the histogram's per-batch sample cap (65536), so the strided samples are pinned too.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.passes.quantization._calibrate import run_calibration

METHODS_PINNED = ("minmax", "percentile", "entropy", "mse")


def pinned_model() -> ir.Model:
    rng = np.random.default_rng(7)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.integers(-2, 3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a"], "add"),
        helper.make_node("Mul", ["a", "k"], ["y"], "mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "pinned",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12, 64, 96])],
        [
            weight("w1", 12, 3, 3, 3),
            weight("w2", 12, 12, 3, 3),
            numpy_helper.from_array(np.full([1, 12, 1, 1], 0.5, np.float32), "k"),
        ],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def pinned_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    values = rng.integers(-8, 9, [6, 3, 64, 96]).astype(np.float32)
    values[2, 0, :4] = 40.0  # a few outliers for the histogram methods to clip
    return {"x": values}


# float.hex() of (low, high) per tensor, from the code before the cost cut
PINNED: dict[str, dict[str, tuple[str, str]]] = {
    "minmax": {
        "x": ("-0x1.0000000000000p+3", "0x1.4000000000000p+5"),
        "c1": ("-0x1.1100000000000p+8", "0x1.c000000000000p+8"),
        "r1": ("0x0.0p+0", "0x1.c000000000000p+8"),
        "c2": ("-0x1.1990000000000p+12", "0x1.0190000000000p+12"),
        "a": ("-0x1.1990000000000p+12", "0x1.0280000000000p+12"),
        "y": ("-0x1.1990000000000p+11", "0x1.0280000000000p+11"),
    },
    "percentile": {
        "x": ("-0x1.fffff4c761096p+2", "0x1.4000000000000p+5"),
        "c1": ("-0x1.e50375254602dp+7", "0x1.b491ba92a3040p+8"),
        "r1": ("0x0.0p+0", "0x1.b446852934ac0p+8"),
        "c2": ("-0x1.0e4b6e54b48b1p+12", "0x1.ff9ffca969190p+11"),
        "a": ("-0x1.0e4b6e54b48b1p+12", "0x1.01ab4e54b48c8p+12"),
        "y": ("-0x1.0e4b6e54b48b1p+11", "0x1.01ab4e54b48c8p+11"),
    },
    "entropy": {
        "x": ("-0x1.0000000000000p+3", "0x1.4000000000000p+5"),
        "c1": ("-0x1.1100000000000p+8", "0x1.8c36000000000p+8"),
        "r1": ("0x0.0p+0", "0x1.9a17800000000p+8"),
        "c2": ("-0x1.0b5d000000000p+12", "0x1.0190000000000p+12"),
        "a": ("-0x1.0b5d000000000p+12", "0x1.0280000000000p+12"),
        "y": ("-0x1.0b5d000000000p+11", "0x1.0280000000000p+11"),
    },
    "mse": {
        "x": ("-0x1.0000000000000p+3", "0x1.4000000000000p+5"),
        "c1": ("-0x1.1100000000000p+8", "0x1.8800000000000p+8"),
        "r1": ("0x0.0p+0", "0x1.90c0000000000p+8"),
        "c2": ("-0x1.df89400000000p+11", "0x1.df89400000000p+11"),
        "a": ("-0x1.dd56200000000p+11", "0x1.dd56200000000p+11"),
        "y": ("-0x1.dd56200000000p+10", "0x1.dd56200000000p+10"),
    },
}


@pytest.mark.parametrize("method", METHODS_PINNED)
def test_ranges_are_pinned(method):
    ranges = run_calibration(pinned_model(), pinned_data(), method=method, threads=1).ranges
    got = {name: (float(low).hex(), float(high).hex()) for name, (low, high) in ranges.items()}
    assert got == PINNED[method]
