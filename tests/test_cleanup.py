"""Cleanup: exact in ORT, fewer nodes, BN folded, constants lifted, accurate `modified`, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

import onnxslim
from onnxslim.passes import Cleanup


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_conv_bn_folded_identity_removed(conv_bn_path: Path, tmp_path: Path) -> None:
    result = onnxslim.Pipeline([Cleanup()]).run(conv_bn_path)
    ops = [node.op_type for node in result.model.graph]
    assert ops == ["Conv", "Relu"]
    out = result.save(tmp_path / "out.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        run_ort(out, {"x": x})[0], run_ort(conv_bn_path, {"x": x})[0], atol=1e-5
    )
    stage = result.report.stages[-1]
    assert stage.modified and stage.summary["batchnorm_folded"] is True
    assert (stage.summary["nodes_before"], stage.summary["nodes_after"]) == (4, 2)


def test_clean_model_is_not_modified(conv_bn_path: Path) -> None:
    model = onnxslim.load(conv_bn_path)
    assert Cleanup()(model).modified is True
    assert Cleanup()(model).modified is False


def test_torch_resnet_with_batchnorm(resnet_bn_path: Path, tmp_path: Path) -> None:
    before = onnxslim.load(resnet_bn_path)
    assert any(node.op_type == "BatchNormalization" for node in before.graph)
    result = onnxslim.Pipeline([Cleanup()]).run(resnet_bn_path)
    assert not any(node.op_type == "BatchNormalization" for node in result.model.graph)
    out = result.save(tmp_path / "out.onnx")
    x = np.random.default_rng(2).standard_normal((4, 1, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(
        run_ort(out, {"x": x})[0], run_ort(resnet_bn_path, {"x": x})[0], atol=1e-5
    )


def test_ppocr_det_cleanup_is_exact_with_fewer_nodes(ppocr_det_path: Path, tmp_path: Path) -> None:
    source = onnx.load(ppocr_det_path)
    assert sum(node.op_type == "Constant" for node in source.graph.node) == 342
    result = onnxslim.Pipeline([Cleanup()]).run(ppocr_det_path, sizes={"x": [1, 3, 96, 96]})
    out = result.save(tmp_path / "det.onnx")
    cleaned = onnx.load(out)
    assert sum(node.op_type == "Constant" for node in cleaned.graph.node) == 0
    assert len(cleaned.graph.node) < len(source.graph.node)
    x = np.random.default_rng(3).random((1, 3, 160, 224), dtype=np.float32)
    np.testing.assert_allclose(
        run_ort(out, {"x": x})[0], run_ort(ppocr_det_path, {"x": x})[0], atol=1e-4
    )
    stage = result.report.stages[-1]
    assert stage.nodes < result.report.stages[0].nodes
    assert stage.fidelity["max_abs_error"] <= 1e-4


def test_opset_upgrade(ppocr_det_path: Path) -> None:
    model = onnxslim.load(ppocr_det_path)
    assert model.opset_imports[""] == 12
    Cleanup(target_opset=13)(model)
    assert model.opset_imports[""] == 13


def test_constant_of_shape_weights_are_folded(tmp_path: Path) -> None:
    # opset-9 model-zoo style: a weight produced at run time by ConstantOfShape
    proto = onnx.parser.parse_model(
        """
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[1, 2, 4, 4] x) => (float[1, 3, 4, 4] y) {
            shape = Constant <value = int64[4] {3, 2, 1, 1}> ()
            w = ConstantOfShape <value = float[1] {0.25}> (shape)
            y = Conv (x, w)
        }"""
    )
    path = tmp_path / "cos.onnx"
    onnx.save(proto, path)
    result = onnxslim.Pipeline([Cleanup()]).run(path)
    assert [node.op_type for node in result.model.graph] == ["Conv"]
    weight = result.model.graph.node(0).inputs[1]
    assert weight.is_initializer()
    np.testing.assert_array_equal(
        weight.const_value.numpy(), np.full((3, 2, 1, 1), 0.25, np.float32)
    )


def test_constant_of_shape_runtime_fill_is_kept(tmp_path: Path) -> None:
    # a ConstantOfShape that is not a weight (it feeds Add) stays: folding would bloat the file
    proto = onnx.parser.parse_model(
        """
        <ir_version: 7, opset_import: ["" : 13]>
        g (float[64, 64] x) => (float[64, 64] y) {
            shape = Constant <value = int64[2] {64, 64}> ()
            ones = ConstantOfShape <value = float[1] {1.0}> (shape)
            y = Add (x, ones)
        }"""
    )
    model = ir.from_proto(proto)
    Cleanup()(model)
    assert "ConstantOfShape" in [node.op_type for node in model.graph]


def test_cleanup_output_is_byte_identical_across_runs(resnet_bn_path: Path, tmp_path: Path) -> None:
    outputs = []
    for index in range(2):
        result = onnxslim.Pipeline([Cleanup()]).run(resnet_bn_path)
        outputs.append(result.save(tmp_path / f"run{index}.onnx").read_bytes())
    assert outputs[0] == outputs[1]


def test_parameter_slots_are_the_weight_table_plus_batchnorm_statistics() -> None:
    # pinned: the table cleanup kept by hand before it read onnxslim.model.WEIGHT_INPUTS
    from onnxslim.passes._cleanup import _PARAMETER_SLOTS

    assert _PARAMETER_SLOTS == {
        "Conv": {1, 2},
        "ConvTranspose": {1, 2},
        "Gemm": {1, 2},
        "MatMul": {1},
        "BatchNormalization": {1, 2, 3, 4},
        "InstanceNormalization": {1, 2},
        "LayerNormalization": {1, 2},
        "PRelu": {1},
    }
