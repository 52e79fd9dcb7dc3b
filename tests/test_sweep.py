"""A fast subset of the corpus sweep: models the onnx package ships are verified or refused, never crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxslim._sweep import corpus_models, stored_data, summarize, sweep_model
from onnxslim.passes import Cleanup

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
