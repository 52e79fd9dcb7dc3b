"""The pass manager verifies after every pass and reports; a pass that breaks the model is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import PassContext, SlimPass, SlimPassResult, VerificationError
from onnxslim.passes import Cleanup


class ScaleWeights(SlimPass):
    """Multiplies every float initializer: a lossy edit whose size is controlled by `factor`."""

    name = "scale-weights"
    description = "test pass: scales weights"

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = factor

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        for value in model.graph.initializers.values():
            array = value.const_value.numpy()
            if array.dtype == np.float32:
                value.const_value = ir.tensor(array * np.float32(self.factor), name=value.name)
        return SlimPassResult(model, self.factor != 1.0, summary={"factor": self.factor})


class ExactButWrong(ScaleWeights):
    name = "exact-but-wrong"
    exact = True


class RenameOutput(SlimPass):
    name = "rename-output"
    description = "test pass: breaks the signature"

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        model.graph.outputs[0].name = "renamed"
        return SlimPassResult(model, True)


class DanglingInput(SlimPass):
    name = "dangling"
    description = "test pass: makes the graph invalid"

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        node = model.graph.node(0)
        node.replace_input_with(1, ir.Value(name="nowhere", type=ir.TensorType(ir.DataType.FLOAT)))
        return SlimPassResult(model, True)


def test_report_per_pass(conv_bn_path: Path) -> None:
    result = onnxslim.Pipeline([Cleanup(), ScaleWeights(1.01)]).run(conv_bn_path)
    stages = result.report.stages
    assert [s.stage for s in stages] == ["input", "cleanup", "scale-weights"]
    assert stages[0].parameters == 4 * 27 + 16
    assert stages[1].parameters == 4 * 27 + 4  # BN folded into conv weight + bias
    assert stages[1].macs == stages[0].macs == 4 * 8 * 8 * 27
    assert stages[2].summary == {"factor": 1.01}
    assert stages[2].fidelity["sqnr_db"] < 60  # lossy, reported
    assert stages[1].fidelity["sqnr_db"] == "inf" or stages[1].fidelity["sqnr_db"] > 100
    document = json.loads(result.report.to_json())
    assert document["stages"][1]["config"]["target_opset"] is None
    table = result.report.table()
    assert "cleanup" in table and "scale-weights" in table and "random inputs" in table


def test_exact_pass_that_changes_outputs_is_named(conv_bn_path: Path) -> None:
    with pytest.raises(
        VerificationError, match="pass 'exact-but-wrong' is exact but changed output 'y'"
    ):
        onnxslim.Pipeline([ExactButWrong(2.0)]).run(conv_bn_path)


def test_signature_change_is_caught(conv_bn_path: Path) -> None:
    with pytest.raises(
        VerificationError, match="pass 'rename-output' changed the graph's inputs/outputs"
    ):
        onnxslim.Pipeline([RenameOutput()]).run(conv_bn_path)


def test_invalid_graph_is_caught(conv_bn_path: Path) -> None:
    with pytest.raises(
        VerificationError, match="pass 'dangling' produced a model the ONNX checker rejects"
    ):
        onnxslim.Pipeline([DanglingInput()]).run(conv_bn_path)


def test_fidelity_bound_fails_only_when_set(conv_bn_path: Path) -> None:
    onnxslim.Pipeline([ScaleWeights(1.5)]).run(conv_bn_path)  # no bound: reported, not fatal
    with pytest.raises(
        VerificationError, match=r"pass 'scale-weights' misses the fidelity bound: SQNR .* < 30"
    ):
        onnxslim.Pipeline([ScaleWeights(1.5)], bounds={"min_sqnr_db": 30}).run(conv_bn_path)


def test_in_memory_model_is_not_modified(conv_bn_path: Path) -> None:
    model = onnxslim.load(conv_bn_path)
    before = ir.to_proto(model).SerializeToString()
    onnxslim.Pipeline([Cleanup()]).run(model)
    assert ir.to_proto(model).SerializeToString() == before


def test_verification_data_is_checked(conv_bn_path: Path) -> None:
    good = [{"x": np.zeros((2, 3, 8, 8), np.float32)}]
    result = onnxslim.Pipeline([Cleanup()]).run(conv_bn_path, data=good)
    assert result.report.sample_source == "the given data"
    with pytest.raises(
        onnxslim.InputDataError, match="data has input 'image' which the model does not have"
    ):
        onnxslim.Pipeline([Cleanup()]).run(conv_bn_path, data=[{"image": good[0]["x"]}])
    with pytest.raises(
        onnxslim.InputDataError, match="input 'x': model expects float32, data has float64"
    ):
        onnxslim.Pipeline([Cleanup()]).run(conv_bn_path, data=[{"x": np.zeros((2, 3, 8, 8))}])
    with pytest.raises(
        onnxslim.InputDataError,
        match=r"input 'x': model expects shape \['N', 3, 8, 8\], data has \[2, 3, 9, 9\]",
    ):
        onnxslim.Pipeline([Cleanup()]).run(
            conv_bn_path, data=[{"x": np.zeros((2, 3, 9, 9), np.float32)}]
        )
    with pytest.raises(onnxslim.InputDataError, match="yielded no samples"):
        onnxslim.Pipeline([Cleanup()]).run(conv_bn_path, data=[])


def test_unavailable_provider_is_an_error(conv_bn_path: Path) -> None:
    with pytest.raises(
        onnxslim.ProviderError, match="'cuda' is not available.*available: .*CPUExecutionProvider"
    ):
        onnxslim.Pipeline([Cleanup()]).run(conv_bn_path, providers="cuda")


def test_non_pass_is_rejected() -> None:
    with pytest.raises(TypeError, match="is not an onnxslim pass"):
        onnxslim.Pipeline([object()])  # type: ignore[list-item]
