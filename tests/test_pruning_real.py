"""StructuredPrune on real third-party models: the PP-OCR models shipped by rapidocr, a BERT encoder."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxslim
import onnxslim.testing
from onnxslim.passes.pruning import dependency_groups

from .test_pruning import check_oracles


@pytest.mark.parametrize("kind", ["det", "cls"])
def test_ppocr_pruned_at_30_percent(kind, tmp_path):
    source = onnxslim.testing.ppocr_model_path(kind)
    if source is None:
        pytest.skip("rapidocr-onnxruntime is not installed")
    pruned, summary = check_oracles(source, tmp_path, ratio=0.3, round_to=8)
    assert summary["macs"]["after"] < 0.85 * summary["macs"]["before"]
    assert summary["parameters"]["after"] < summary["parameters"]["before"]
    assert summary["pruned_groups"] >= 10
    assert summary["blocked"], "the graph-output groups are blocked"
    for blocked in summary["blocked"]:
        assert blocked["reasons"] and all(isinstance(r, str) and r for r in blocked["reasons"])
    assert onnxslim.model_file_size(tmp_path / "pruned.onnx") < onnxslim.model_file_size(source)


def test_ppocr_cls_blocked_groups_name_their_reason():
    source = onnxslim.testing.ppocr_model_path("cls")
    if source is None:
        pytest.skip("rapidocr-onnxruntime is not installed")
    groups = dependency_groups(onnxslim.load(source))
    reasons = [r for g in groups if not g["prunable"] for r in g["reasons"]]
    assert any("Softmax normalizes over axis 1" in r for r in reasons)
    assert any("Shape reads axis 1" in r for r in reasons)


def test_minilm_style_encoder_heads_and_mlp(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = onnxslim.testing.bert_style_encoder(
        vocab_size=200, hidden=96, heads=6, layers=2, intermediate=384
    )
    ids = torch.randint(0, 200, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.int64)
    axes = {
        "input_ids": {0: "b", 1: "s"},
        "attention_mask": {0: "b", 1: "s"},
        "output": {0: "b", 1: "s"},
    }
    path = onnxslim.testing.export_torch(
        model,
        (ids, mask),
        tmp_path / "minilm.onnx",
        input_names=["input_ids", "attention_mask"],
        dynamic_axes=axes,
        opset=17,
    )
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    groups = dependency_groups(onnxslim.load(path))
    assert sorted(g["size"] for g in groups if g["prunable"]) == [6, 6, 384, 384]
    assert summary["pruned_groups"] == 4
    reshape_targets = [
        onnx.numpy_helper.to_array(t)
        for t in onnx.load(str(tmp_path / "pruned.onnx")).graph.initializer
        if t.name.endswith("_pruned") or "_pruned_" in t.name
    ]
    assert any(
        np.array_equal(t, [3]) for t in reshape_targets
    )  # head count 6 -> 3 in Shape-derived targets
