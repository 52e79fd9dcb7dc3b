"""Concat-heavy CNNs: DenseNet dense blocks (BN -> ReLU -> Conv on a growing Concat) and Inception
branches pruned through their concat offsets, with the zeroed-slice oracle; per-channel params that
the exporter shares between groups (identical BN tensors) are cut per group."""

from __future__ import annotations

import numpy as np
import onnx.parser
import onnx_ir as ir
import pytest

import onnxslim
import onnxslim.testing
from onnxslim.passes import Cleanup
from onnxslim.passes.pruning import StructuredPrune, dependency_groups
from onnxslim.passes.pruning._ir import constant_array
from tests.test_pruning import _export, check_oracles

torch = pytest.importorskip("torch")
nn = torch.nn


class DenseLayer(nn.Module):
    """torchvision's _DenseLayer: BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv on the concat."""

    def __init__(self, inputs: int, growth: int, bn_size: int = 2):
        super().__init__()
        self.norm1, self.conv1 = (
            nn.BatchNorm2d(inputs),
            nn.Conv2d(inputs, bn_size * growth, 1, bias=False),
        )
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = self.conv1(torch.relu(self.norm1(torch.cat(features, 1))))
        return self.conv2(torch.relu(self.norm2(x)))


class TinyDenseNet(nn.Module):
    """Stem, two dense blocks of three layers (growth 8; both see 24, 32, 40 channels) with a
    transition, BN, classifier."""

    def __init__(self, growth: int = 8, layers: int = 3, stem: int = 24):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        channels, self.blocks, self.transitions = stem, nn.ModuleList(), nn.ModuleList()
        for block in range(2):
            self.blocks.append(
                nn.ModuleList(DenseLayer(channels + i * growth, growth) for i in range(layers))
            )
            channels += layers * growth
            if block == 0:
                self.transitions.append(
                    nn.Sequential(
                        nn.BatchNorm2d(channels),
                        nn.ReLU(),
                        nn.Conv2d(channels, channels // 2, 1, bias=False),
                        nn.AvgPool2d(2),
                    )
                )
                channels //= 2
        self.norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x):
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            features = [x]
            for layer in block:
                features.append(layer(features))
            x = torch.cat(features, 1)
            if index == 0:
                x = self.transitions[0](x)
        x = torch.relu(self.norm(x)).mean((2, 3))
        return self.fc(x)


class Inception(nn.Module):
    """Four branches (1x1, 1x1->3x3, 1x1->5x5, pool->1x1) concatenated, then a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.Conv2d(16, 8, 1)
        self.b2 = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(16, 8, 1))
        self.bn = nn.BatchNorm2d(36)
        self.out = nn.Conv2d(36, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)
        return self.out(torch.relu(self.bn(y)))


def _randomize_bn(module: nn.Module) -> None:
    torch.manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("round_to", [1, 8])
def test_dense_blocks_prune_through_concat_offsets(round_to, tmp_path):
    model = TinyDenseNet()
    path = _export(model, (torch.randn(1, 3, 16, 16),), tmp_path, 13)  # _export randomizes weights
    groups = dependency_groups(onnxslim.load(path))
    assert sum(g["prunable"] for g in groups) == len(groups) - 1  # only the classifier's output
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=round_to)
    assert summary["parameters"]["after"] < 0.6 * summary["parameters"]["before"]
    bn = [n for n in pruned.graph if n.op_type == "BatchNormalization"]
    for node in bn:  # every BN's params match the concat it normalizes
        assert constant_array(node.inputs[1]).shape[0] == node.inputs[0].shape[1]


def test_bn_params_shared_by_the_exporter_are_cut_per_group(tmp_path):
    """Default BN init (ones, zeros): identical BN tensors are merged into one initializer read
    by BNs of two groups. Stem 8: block 1's second layer normalizes [8 stem, 8 new] channels and
    block 2's first [16 from the transition]; at ratio 0.45 the first group cuts 3 + 3 of them,
    the second 7 (torchvision DenseNet-121 failed the checker on such a BN)."""
    exported = onnxslim.testing.export_torch(
        TinyDenseNet(stem=8), (torch.randn(1, 3, 16, 16),), tmp_path / "dense.onnx", opset=13
    )
    loaded = onnxslim.load(exported)
    Cleanup()(loaded)
    path = onnxslim.save(loaded, tmp_path / "clean.onnx")
    readers = {}
    for node in loaded.graph:
        if node.op_type == "BatchNormalization":
            for value in node.inputs[1:]:
                readers.setdefault(value.name, set()).add(node.name)
    assert any(len(nodes) > 1 for nodes in readers.values())  # the sharing this test is about
    check_oracles(path, tmp_path, ratio=0.45, round_to=1)


def test_inception_branches_prune_through_concat_offsets(tmp_path):
    module = Inception()
    path = _export(module, (torch.randn(1, 3, 12, 12),), tmp_path, 17)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=1)
    assert summary["pruned_groups"] == 4  # stem, two branch-inner 1x1s, the concat (4 branches)
    out = next(n for n in pruned.graph if n.name.endswith("out/Conv"))
    assert constant_array(out.inputs[1]).shape[1] == 4 + 6 + 4 + 4  # half of each branch


# Weights held as ConstantOfShape of a constant shape (the onnx package's light models).
FILLED = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) {
    s1 = Constant <value = int64[4] {16, 3, 1, 1}> ()
    w1 = ConstantOfShape <value = float[1] {0.5}> (s1)
    h = Conv (x, w1)
    r = Relu (h)
    s2 = Constant <value = int64[4] {4, 16, 1, 1}> ()
    w2 = ConstantOfShape <value = float[1] {0.25}> (s2)
    y = Conv (r, w2)
}
"""


def test_constant_of_shape_weights_are_cut_by_their_shape():
    model = ir.from_proto(onnx.parser.parse_model(FILLED))
    groups = dependency_groups(model)
    assert [g["prunable"] for g in groups] == [True, False]
    feeds = onnxslim.random_inputs(model)
    before = onnxslim.create_session(model).run(None, feeds)[0]
    result = StructuredPrune(ratio=0.5, round_to=1)(model)
    assert result.summary["units_removed"] == 8
    w1 = next(n for n in model.graph if n.op_type == "Conv").inputs[1]
    assert constant_array(w1).shape == (8, 3, 1, 1)
    assert w1.producer().op_type == "ConstantOfShape"  # still a fill: no weight bytes written
    after = onnxslim.create_session(model).run(None, feeds)[0]
    np.testing.assert_allclose(after, before / 2, rtol=1e-6)  # half the (identical) channels
