"""QuantizeWeightsInt4: MatMulNBits emission run in ORT, skip reasons, the fidelity guard, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import PassContext, RecipeError, model_file_size, save
from onnxslim.cli import main
from onnxslim.passes.quantization import QuantizeWeightsInt4
from onnxslim.passes.quantization._int4 import int4_matmuls, mean_cosine

K, N = 256, 128


def _smooth_weight(rows: int, cols: int) -> np.ndarray:
    return np.sin(np.linspace(0.0, 20.0, rows * cols)).reshape(rows, cols).astype(np.float32)


def two_linear_model(first: np.ndarray, second: np.ndarray) -> onnx.ModelProto:
    """x @ W1 -> Relu -> @ W2, plus an activation-by-activation MatMul (no constant weight)."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2"),
        helper.make_node("Transpose", ["y"], ["yt"], perm=[1, 0]),
        helper.make_node("MatMul", ["y", "yt"], ["gram"], name="gram"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N]),
            helper.make_tensor_value_info("gram", TensorProto.FLOAT, ["batch", "batch"]),
        ],
        [numpy_helper.from_array(first, "W1"), numpy_helper.from_array(second, "W2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _feeds(count: int, zero_rows: slice | None = None) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    feeds = []
    for _ in range(count):
        x = rng.standard_normal((2, K)).astype(np.float32)
        if zero_rows is not None:
            x[:, zero_rows] = 0.0
        feeds.append({"x": x})
    return feeds


def _run(model: onnx.ModelProto, feeds: list[dict]) -> list[dict[str, np.ndarray]]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f))) for f in feeds]


@pytest.fixture
def smooth_model() -> onnx.ModelProto:
    return two_linear_model(_smooth_weight(K, N), _smooth_weight(N, N) * 0.5)


@pytest.mark.parametrize("algorithm", ["rtn", "hqq", "gptq"])
def test_int4_emits_matmulnbits_that_run_in_ort(smooth_model, tmp_path, algorithm):
    feeds = _feeds(8)
    float_size = model_file_size(_saved(smooth_model, tmp_path / "float.onnx"))
    model = ir.from_proto(smooth_model)
    context = PassContext(sample_inputs=feeds, data=None if algorithm != "gptq" else feeds)
    result = QuantizeWeightsInt4(algorithm=algorithm, latency_guard=False).apply(model, context)
    assert result.modified and result.model is model
    quantized = ir.to_proto(model)
    ops = Counter(node.op_type for node in quantized.graph.node)
    assert ops["MatMulNBits"] == 2 and ops["MatMul"] == 1
    assert result.summary["matmuls_converted"] == 2
    assert result.summary["matmuls_skipped"] == {
        "gram": "its B input is an activation, not a constant weight"
    }
    assert result.summary["judged_on"] == "verification samples"
    outputs = _run(quantized, feeds)
    reference = _run(smooth_model, feeds)
    only_y = [{"y": o["y"]} for o in outputs], [{"y": r["y"]} for r in reference]
    assert mean_cosine(only_y[1], only_y[0]) >= 0.99
    assert result.summary["fidelity"]["mean_cosine"] >= 0.99
    # 4-bit blocks of 128 with one float scale and zero point each: about 1/7 of the float weights
    int4_size = model_file_size(_saved(quantized, tmp_path / "int4.onnx"))
    assert result.summary["size_bytes_before"] == float_size
    assert result.summary["size_bytes_after"] < float_size / 4
    assert int4_size < float_size / 4


def test_rtn_keeps_symmetric_blocks_and_accuracy_level(smooth_model):
    model = ir.from_proto(smooth_model)
    QuantizeWeightsInt4(
        latency_guard=False, block_size=64, symmetric=True, accuracy_guard=False
    ).apply(model, PassContext(sample_inputs=_feeds(2)))
    node = next(n for n in ir.to_proto(model).graph.node if n.op_type == "MatMulNBits")
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attributes == {"K": K, "N": N, "bits": 4, "block_size": 64, "accuracy_level": 4}
    assert len(node.input) == 3  # symmetric: no zero points
    assert ir.to_proto(model).opset_import[-1].domain == "com.microsoft"


def test_guard_returns_float_when_int4_cannot_hold_the_bound(tmp_path):
    # One huge weight per 32-row block, on inputs that are always zero: each block's scale is
    # set by the outlier, every other weight rounds to 0 and the output collapses.
    first = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    first[::32] = 1.0e4
    proto = two_linear_model(first, _smooth_weight(N, N))
    model = ir.from_proto(proto)
    feeds = _feeds(4, zero_rows=slice(0, K, 32))
    result = QuantizeWeightsInt4(latency_guard=False).apply(model, PassContext(sample_inputs=feeds))
    assert not result.modified
    assert result.summary["fallback"].startswith(
        "returned the float model: accuracy: mean output cosine"
    )
    assert result.summary["matmuls_converted"] == 0 and result.summary["matmuls_tried"] == 2
    assert result.summary["size_bytes_after"] == result.summary["size_bytes_before"]
    assert Counter(n.op_type for n in ir.to_proto(model).graph.node)["MatMul"] == 3
    # the same model with the guard off ships the broken int4 weights
    unguarded = ir.from_proto(proto)
    off = QuantizeWeightsInt4(latency_guard=False, accuracy_guard=False).apply(
        unguarded, PassContext(sample_inputs=feeds)
    )
    assert off.modified and off.summary["fidelity"]["mean_cosine"] < 0.9


def test_int4_matmuls_names_unnamed_nodes_and_says_why_others_stay_float():
    proto = two_linear_model(_smooth_weight(K, N), _smooth_weight(N, N))
    proto.graph.node[0].name = ""
    eligible, skipped = int4_matmuls(proto, exclude=["fc2"])
    assert eligible == ["MatMul_0"]
    assert skipped == {
        "fc2": "excluded by the user",
        "gram": "its B input is an activation, not a constant weight",
    }


def test_no_constant_weight_returns_the_model_unchanged():
    proto = two_linear_model(_smooth_weight(K, N), _smooth_weight(N, N))
    model = ir.from_proto(proto)
    result = QuantizeWeightsInt4(exclude=["fc1", "fc2"]).apply(model, PassContext())
    assert not result.modified
    assert result.summary["fallback"] == (
        "returned the float model: no MatMul with a constant 2-D float weight"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"block_size": 24}, "int4 block_size must be a power of two >= 16, got 24."),
        ({"accuracy_level": 7}, "int4 accuracy_level must be 0..4 (or unset), got 7."),
        ({"eval_samples": 0}, "int4 eval_samples must be >= 1, got 0."),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(RecipeError) as error:
        QuantizeWeightsInt4(**options)
    assert str(error.value) == message


def test_gptq_without_data_names_the_fix(smooth_model):
    with pytest.raises(RecipeError, match="int4 'gptq' needs calibration data"):
        QuantizeWeightsInt4(algorithm="gptq").apply(ir.from_proto(smooth_model), PassContext())


def test_cli_quantize_int4(smooth_model, tmp_path):
    source = _saved(smooth_model, tmp_path / "model.onnx")
    output, report = tmp_path / "int4.onnx", tmp_path / "report.json"
    data = tmp_path / "data.npz"
    np.savez(data, x=np.concatenate([f["x"] for f in _feeds(4)]))
    args = ["optimize", str(source), "-o", str(output), "--quantize", "int4", "--data", str(data)]
    assert main([*args, "--report", str(report), "-q"]) == 0
    stages = {s["stage"]: s for s in json.loads(report.read_text())["stages"]}
    assert set(stages) >= {"cleanup", "quantize_int4"} and "quantize" not in stages
    summary = stages["quantize_int4"]["summary"]
    assert summary["block_size"] == 128 and summary["matmuls_tried"] == 2
    # a 0.01 ms model: the latency guard decides; either way the report says what happened
    assert summary["matmuls_converted"] in (0, 2)
    assert ("fallback" in summary) == (summary["matmuls_converted"] == 0)
    assert output.is_file()


def _saved(model: onnx.ModelProto, path: Path) -> Path:
    save(ir.from_proto(model), path)
    return path
