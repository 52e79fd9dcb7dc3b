"""A fast subset of the corpus sweep: models the onnx package ships are verified or refused, never crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxslim._sweep import corpus_models, stored_data, summarize, sweep_model
from onnxslim.passes import Cleanup, QuantizeStatic, StructuredPrune

MODELS = corpus_models()
SUBSET = (
    [p for p in MODELS if "light_squeezenet" in str(p) or "light_inception_v1" in str(p)]
    + [p for p in MODELS if "pytorch-converted" in str(p)][::4]
    + [p for p in MODELS if "/simple/" in str(p)][::3]
)


def test_corpus_is_present() -> None:
    assert len(MODELS) > 100
    assert any("light_resnet50" in str(p) for p in MODELS)


@pytest.mark.parametrize(
    "path", SUBSET, ids=lambda p: f"{p.parent.name}/{p.name}" if p.name == "model.onnx" else p.stem
)
def test_cleanup_verified_or_refused(path: Path, tmp_path: Path) -> None:
    outcome = sweep_model(path, "cleanup", lambda: [Cleanup()], check_stored=True, workdir=tmp_path)
    assert outcome.status in ("verified", "refused"), summarize([outcome])
    if outcome.status == "refused":
        assert outcome.reason and "Traceback" not in outcome.reason
    if outcome.status == "verified" and stored_data(path) is not None:
        assert outcome.stored_reference == "match"


def test_light_models_have_constant_of_shape_weights_folded(tmp_path: Path) -> None:
    import onnx

    import onnxslim

    path = next(p for p in MODELS if "light_squeezenet" in str(p))
    source = onnx.load(path)
    assert any(node.op_type == "ConstantOfShape" for node in source.graph.node)
    result = onnxslim.Pipeline([Cleanup()], num_samples=1).run(path)
    assert not any(node.op_type == "ConstantOfShape" for node in result.model.graph)
    assert result.report.stages[-1].parameters > 0


def _prune_passes() -> list:
    return [Cleanup(), StructuredPrune(ratio=0.3)]


def _quantize_passes() -> list:
    # random calibration (smoke data); latency guard off: the outcome must not depend on timing
    return [Cleanup(), QuantizeStatic(calibration="random", latency_guard=False, eval_samples=2)]


LOSSY_SUBSET = [p for p in MODELS if "light_squeezenet" in str(p)] + [
    p for p in MODELS if "pytorch-converted" in str(p)
][1::7]


@pytest.mark.parametrize(
    "path",
    LOSSY_SUBSET,
    ids=lambda p: f"{p.parent.name}/{p.name}" if p.name == "model.onnx" else p.stem,
)
@pytest.mark.parametrize("label", ["prune", "quantize"])
def test_prune_and_quantize_verified_or_refused(path: Path, label: str) -> None:
    passes = _prune_passes if label == "prune" else _quantize_passes
    outcome = sweep_model(path, label, passes)
    assert outcome.status in ("verified", "refused"), summarize([outcome])
    if outcome.status == "refused":
        assert outcome.reason and "Traceback" not in outcome.reason


def test_squeezenet_is_pruned_and_quantized() -> None:
    import onnxslim

    path = next(p for p in MODELS if "light_squeezenet" in str(p))
    pruned = onnxslim.Pipeline(_prune_passes(), num_samples=1).run(path)
    cleaned, after = pruned.report.stages[1], pruned.report.stages[2]
    assert after.summary["units_removed"] > 0 and after.parameters < 0.9 * cleaned.parameters
    quantized = onnxslim.Pipeline(_quantize_passes(), num_samples=1).run(path)
    assert quantized.report.stages[-1].summary["smoke_data"] is True
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.model.graph) > 10


def test_fixed_batch_and_sequence_models_no_longer_refused_or_crash() -> None:
    # random calibration used to be refused for a fixed batch > 1 ("set batch_size=N"), and
    # pruning crashed on sequence-typed values (np.shape of a list of arrays)
    fixed = next(p for p in MODELS if "pytorch-converted/test_Conv2d/" in str(p))
    assert sweep_model(fixed, "quantize", _quantize_passes).status == "verified"
    sequence = next(p for p in MODELS if "simple/test_sequence_model1/" in str(p))
    assert sweep_model(sequence, "prune", _prune_passes).status == "verified"
    # quantizing it failed in ORT: the opset-12 -> 13 conversion typed sequences as tensors
    assert sweep_model(sequence, "quantize", _quantize_passes).status == "verified"


def test_opset12_concat_from_sequence_cleanup_keeps_axes_attribute(tmp_path: Path) -> None:
    # folding ConcatFromSequence emitted an opset-13 Unsqueeze (axes input) in an opset-12 graph
    path = next(p for p in MODELS if "simple/test_sequence_model5/" in str(p))
    outcome = sweep_model(path, "cleanup", lambda: [Cleanup()], check_stored=True, workdir=tmp_path)
    assert (outcome.status, outcome.stored_reference) == ("verified", "match"), outcome.reason


def test_a_pass_that_breaks_the_model_counts_as_a_crash(tmp_path: Path) -> None:
    import onnx_ir as ir

    from onnxslim import PassContext, SlimPass, SlimPassResult

    class BreakModel(SlimPass):
        name = "break"
        description = "renames an op to one that does not exist"
        exact = True

        def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
            next(iter(model.graph)).op_type = "NoSuchOp"
            return SlimPassResult(model, modified=True)

    path = next(p for p in MODELS if "light_squeezenet" in str(p))
    outcome = sweep_model(path, "break", lambda: [BreakModel()])
    assert outcome.status == "crashed" and "pass 'break'" in outcome.reason


# -- the public corpus beyond the onnx package: wheels' models and architectures exported here --
def _sweep_passes(label: str):  # type: ignore[no-untyped-def]
    return {"cleanup": lambda: [Cleanup()], "prune": _prune_passes, "quantize": _quantize_passes}[
        label
    ]


def test_wheel_models_are_found() -> None:
    from onnxslim._sweep_corpus import wheel_models

    pytest.importorskip("rapidocr_onnxruntime")
    names = [m.name for m in wheel_models()]
    assert {
        "rapidocr_onnxruntime/ch_PP-OCRv4_det_infer",
        "rapidocr_onnxruntime/ch_PP-OCRv4_rec_infer",
        "rapidocr_onnxruntime/ch_ppocr_mobile_v2.0_cls_infer",
    } <= set(names)


def test_fast_public_subset_is_improved_and_pruned(tmp_path: Path) -> None:
    """The CI subset: a Paddle model a wheel ships and two audio architectures exported here,
    through cleanup, prune(0.3) and quantize; each improved, pruning removes >= 10 %."""
    from onnxslim._sweep import closing_line, model_table, prune_share
    from onnxslim._sweep_corpus import exported_models, wheel_models

    pytest.importorskip("torch")
    models = [(m.name, m.path) for m in wheel_models() if "cls_infer" in m.name]
    exported = exported_models(tmp_path, ["crepe-style", "lstm-vad-style"])
    models += [(m.name, m.path) for m in exported]
    outcomes = [
        sweep_model(path, label, _sweep_passes(label), name=name)
        for name, path in models
        for label in ("cleanup", "prune", "quantize")
    ]
    table = model_table(outcomes)
    assert all(o.status == "verified" and o.modified for o in outcomes), table
    assert prune_share(outcomes) == (len(models), len(models)), table
    assert closing_line(outcomes).startswith(
        f"summary: {3 * len(models)} runs: {3 * len(models)} verified, 0 refused, "
        "0 internal errors, 0 crashes"
    )
    assert "crepe-style" in table and "improved [-" in table


def test_scalar_output_model_quantizes() -> None:
    # its 0-d output crashed the accuracy guard's metric choice (np.concatenate of 0-d arrays)
    path = next(p for p in MODELS if "simple/test_sequence_model6/" in str(p))
    outcome = sweep_model(path, "quantize", _quantize_passes)
    assert outcome.status == "verified", outcome.reason
