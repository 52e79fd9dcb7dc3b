"""Shared fixtures: small models written as ONNX text or exported from torch, on real files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest


@pytest.fixture(autouse=True, scope="session")
def private_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Temp files of this test run (and of the CLI subprocesses it starts) in a folder of its own,
    so tests that look for the pipeline's scratch folder never see another run's."""
    folder = tmp_path_factory.mktemp("tmpdir")
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None
    yield folder
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous
    tempfile.tempdir = None


CONV_BN_TEXT = """
<ir_version: 8, opset_import: ["" : 13]>
conv_bn (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) <
    float[4, 3, 3, 3] w = {WEIGHTS},
    float[4] gamma = {1.0, 0.5, 2.0, 1.5},
    float[4] beta = {0.1, -0.2, 0.3, 0.0},
    float[4] mean = {0.05, -0.1, 0.2, 0.0},
    float[4] var = {1.0, 0.25, 4.0, 2.0}
> {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    i = Identity (c)
    b = BatchNormalization <epsilon = 0.00001> (i, gamma, beta, mean, var)
    y = Relu (b)
}
"""


def conv_bn_model() -> onnx.ModelProto:
    weights = ", ".join(f"{v:.4f}" for v in np.random.default_rng(0).normal(size=4 * 3 * 3 * 3))
    return onnx.parser.parse_model(CONV_BN_TEXT.replace("{WEIGHTS}", "{" + weights + "}"))


@pytest.fixture
def conv_bn_path(tmp_path: Path) -> Path:
    path = tmp_path / "conv_bn.onnx"
    onnx.save(conv_bn_model(), path)
    return path


@pytest.fixture(scope="session")
def resnet_bn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch-exported ResNet that still has its BatchNormalization nodes."""
    torch = pytest.importorskip("torch")
    from onnxslim.testing import export_torch, resnet_style

    torch.manual_seed(0)
    module = resnet_style(widths=(8, 16), blocks_per_stage=1)
    # non-trivial BN statistics, so a wrong fold shows in the outputs
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("resnet") / "resnet_bn.onnx"
    export_torch(
        module, (torch.randn(1, 1, 16, 16),), path, input_names=["x"], do_constant_folding=False
    )
    return path


@pytest.fixture(scope="session")
def ppocr_det_path() -> Path:
    from onnxslim.testing import ppocr_model_path

    path = ppocr_model_path("det")
    if path is None:
        pytest.skip("rapidocr-onnxruntime (ships the PP-OCRv4 det model) is not installed")
    return path
