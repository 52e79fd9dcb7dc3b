"""The pass manager verifies after every pass and reports; a pass that breaks the model is named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import PassContext, SlimPass, SlimPassResult, VerificationError
from onnxslim.options import option
from onnxslim.passes import Cleanup


@dataclasses.dataclass(frozen=True)
class ScaleOptions:
    factor: float = option(1.0, help="multiplier of every float weight")


class ScaleWeights(SlimPass):
    """Multiplies every float initializer: a lossy edit whose size is controlled by `factor`."""

    name = "scale-weights"
    description = "test pass: scales weights"

    Options = ScaleOptions

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__(factor=factor)  # positional for these tests; read back as self.factor

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


class ReturnsCopy(SlimPass):
    """Declared in place (the default) but hands back a fresh model: a broken promise."""

    name = "returns-copy"
    description = "test pass: returns a copy"

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        return SlimPassResult(ir.serde.deserialize_model(ir.serde.serialize_model(model)), False)


class FunctionalCopy(ReturnsCopy):
    """Functional and honest: the input is left alone, a copy comes back."""

    name = "functional-copy"

    @property
    def in_place(self) -> bool:
        return False

    @property
    def changes_input(self) -> bool:
        return False


class FunctionalButMutates(FunctionalCopy):
    name = "functional-but-mutates"

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        model.graph.remove(model.graph.node(len(model.graph) - 1), safe=False)
        return super().apply(model, context)


class RequiresOpset99(ScaleWeights):
    name = "needs-opset-99"

    def requires(self, model: ir.Model) -> None:
        if model.opset_imports.get("", 0) < 99:
            raise ValueError("needs opset 99")


def test_in_place_promise_is_checked(conv_bn_path: Path) -> None:
    with pytest.raises(VerificationError) as error:
        onnxslim.Pipeline([ReturnsCopy()]).run(conv_bn_path)
    assert str(error.value) == (
        "pass 'returns-copy' is declared in place but returned a different model object; "
        "this is a bug in the pass."
    )


def test_functional_pass_must_leave_its_input_alone(conv_bn_path: Path) -> None:
    result = onnxslim.Pipeline([FunctionalCopy(), Cleanup()]).run(conv_bn_path)
    assert [stage.stage for stage in result.report.stages] == [
        "input",
        "functional-copy",
        "cleanup",
    ]
    with pytest.raises(VerificationError) as error:
        onnxslim.Pipeline([FunctionalButMutates()]).run(conv_bn_path)
    assert str(error.value) == (
        "pass 'functional-but-mutates' is declared functional but changed its input model; "
        "this is a bug in the pass."
    )


def test_requires_is_honoured(conv_bn_path: Path) -> None:
    with pytest.raises(VerificationError) as error:
        onnxslim.Pipeline([RequiresOpset99()]).run(conv_bn_path)
    assert str(error.value) == "pass 'needs-opset-99': precondition failed: needs opset 99"


def test_loaded_model_with_its_source_is_optimized_in_place(conv_bn_path: Path) -> None:
    model = onnxslim.load(conv_bn_path)
    result = onnxslim.Pipeline([Cleanup()]).run(model, source=conv_bn_path)
    assert result.model is model  # no copy, no second load
    assert [node.op_type for node in model.graph] == ["Conv", "Relu"]
    assert result.report.model == str(conv_bn_path)
    assert result.report.stages[0].model_path == str(conv_bn_path)


def test_records_keep_floats_json_encodes(conv_bn_path: Path) -> None:
    import math

    result = onnxslim.Pipeline([ScaleWeights(1.0)]).run(conv_bn_path)
    fidelity = result.report.stages[1].fidelity
    assert fidelity is not None and math.isinf(fidelity["sqnr_db"]) and fidelity["sqnr_db"] > 0
    document = json.loads(result.report.to_json())
    assert document["stages"][1]["fidelity"]["sqnr_db"] == "inf"
    assert "SQNR inf" in result.report.table() and "SQNR inf dB" not in result.report.table()


def test_bounds_is_the_one_fidelity_bounds_type() -> None:
    assert onnxslim.Bounds is onnxslim.FidelityBounds
    with pytest.raises(TypeError, match="Pipeline bounds take no metric"):
        onnxslim.Pipeline([Cleanup()], bounds=onnxslim.FidelityBounds(metric=lambda r, c: True))


def test_human_formatting() -> None:
    from onnxslim import _pipeline
    from onnxslim.formatting import human_bytes, human_count

    assert [human_count(n) for n in (999, 1000, 1234567, 2.5e9)] == [
        "999",
        "1.00k",
        "1.23M",
        "2.50G",
    ]
    assert human_count(1500, "B") == "1.50kB"
    assert [human_bytes(n) for n in (512, 2048, 3 << 20, 5 << 30)] == [
        "512 B",
        "2.00 KiB",
        "3.00 MiB",
        "5.00 GiB",
    ]
    assert not hasattr(_pipeline, "_human")  # one home: onnxslim.formatting


def test_far_from_input_is_said_with_a_hint(
    conv_bn_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="onnxslim"):
        result = onnxslim.Pipeline([Cleanup(), ScaleWeights(2.0)]).run(conv_bn_path)
    sqnr = result.report.stages[-1].fidelity["sqnr_db"]
    assert sqnr < 1.0
    expected = (
        f"the optimized model is far from its input (output SQNR {sqnr:.1f} dB, mostly lost in "
        "pass 'scale-weights'); recover accuracy with --distill DATA, or bound it with "
        "--min-sqnr DB."
    )
    assert result.report.warnings == [expected]
    assert result.report.to_dict()["warnings"] == [expected]
    assert f"warning: {expected}" in result.report.table()
    assert [r.getMessage() for r in caplog.records if "far from" in r.getMessage()] == [expected]
    near = onnxslim.Pipeline([Cleanup(), ScaleWeights(1.01)]).run(conv_bn_path)
    assert near.report.warnings == [] and "warnings" not in near.report.to_dict()
    bounded = onnxslim.Pipeline([ScaleWeights(2.0)], bounds={"min_sqnr_db": -10}).run(conv_bn_path)
    assert bounded.report.warnings == []  # the user asked for this bound: no second opinion


def test_far_from_input_after_distillation_says_distill_longer() -> None:
    from onnxslim._pipeline_notes import far_from_input
    from onnxslim.passes import Distill
    from onnxslim.passes._gradual import PruneDistill

    stages = [
        onnxslim.StageRecord("input"),
        onnxslim.StageRecord("prune_distill", fidelity={"sqnr_db": 4.7}),
    ]
    bounds = onnxslim.Bounds()
    for recovering in (PruneDistill(target_macs=0.6), Distill([])):
        line = far_from_input(stages, [recovering], bounds)
        assert line == (
            "the optimized model is far from its input (output SQNR 4.7 dB, mostly lost in pass "
            "'prune_distill'); distill longer (--distill-epochs) or prune less."
        )
