"""StructuredPrune oracles on small topologies (ONNX text and torch exports at opsets 13 and 17).

For each model: (a) ratio 0 leaves weights byte-identical and ORT outputs bit-exact; (b) the
hard-pruned model equals the original with removed slices zeroed at the consumers; (c) the
checker passes, ORT runs at batch 1 and 4, output shapes are unchanged; (d) kept counts are
multiples of round_to; (e) the same run gives byte-identical files.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_ir as ir
import pytest

import onnxslim
import onnxslim.testing
from onnxslim.passes.pruning import (
    StructuredPrune,
    analyze,
    dependency_groups,
    plan_pruning,
    score_groups,
)
from onnxslim.passes.pruning._apply import zero_consumers
from onnxslim.passes.pruning._ir import constant_array
from onnxslim.testing import with_random_weights

torch = pytest.importorskip("torch")
nn = torch.nn


def _run(model_or_path, feeds):
    session = onnxslim.create_session(model_or_path)
    return session.run(None, feeds)


def _feeds(model: ir.Model, batch: int, seed: int = 1):
    return onnxslim.random_inputs(model, batch=batch, seed=seed)


def _initializer_bytes(model: ir.Model) -> dict[str, bytes]:
    return {name: v.const_value.tobytes() for name, v in model.graph.initializers.items()}


def check_oracles(
    path, tmp_path, ratio=0.5, round_to=1, expect_pruned=True, sizes=None, exact_equivalence=True
):
    """Runs oracles (a)-(e) on the model at ``path``; returns the pruned model and summary."""
    original = onnxslim.load(path)
    feeds = {batch: _feeds(original, batch) for batch in (1, 4)}
    reference = {batch: _run(path, feeds[batch]) for batch in (1, 4)}

    # (a) pruning nothing changes nothing.
    untouched = onnxslim.load(path)
    result = StructuredPrune(ratio=0.0, round_to=round_to, sizes=sizes)(untouched)
    assert not result.modified
    assert _initializer_bytes(untouched) == _initializer_bytes(original)
    for batch in (1, 4):
        for got, want in zip(_run(untouched, feeds[batch]), reference[batch]):
            np.testing.assert_array_equal(got, want)

    # (c) the pruned model is valid, runs at batch 1 and 4, keeps its output shapes.
    pruned = onnxslim.load(path)
    result = StructuredPrune(ratio=ratio, round_to=round_to, sizes=sizes)(pruned)
    assert result.modified == expect_pruned
    pruned_path = tmp_path / "pruned.onnx"
    onnxslim.save(pruned, pruned_path)
    onnx.checker.check_model(str(pruned_path), full_check=True)
    outputs = {batch: _run(pruned_path, feeds[batch]) for batch in (1, 4)}
    for batch in (1, 4):
        assert [o.shape for o in outputs[batch]] == [o.shape for o in reference[batch]]
    assert [v.name for v in pruned.graph.inputs] == [v.name for v in original.graph.inputs]
    assert [v.name for v in pruned.graph.outputs] == [v.name for v in original.graph.outputs]

    # (d) the MACs the pass predicted are the MACs of the pruned graph (counted independently).
    for model, key in ((pruned, "after"), (original, "before")):
        stats = onnxslim.model_stats(model, sizes)
        if stats.unknown_shape_nodes:  # model_stats cannot size them; the pass observed them in ORT
            assert stats.macs < result.summary["macs"][key]
        else:
            assert stats.macs == result.summary["macs"][key]

    # (b) hard pruning == zeroing the removed slices at the consumers of the original.
    if exact_equivalence:
        zeroed = onnxslim.load(path)
        analysis = analyze(zeroed, sizes, round_to=round_to)
        scores = score_groups(analysis.view, analysis.groups, "l2")
        plan = plan_pruning(
            analysis,
            scores,
            ratio=ratio,
            target_macs=None,
            global_ranking=False,
            max_ratio=0.9,
            min_kept=1,
        )
        zero_consumers(analysis.groups, plan)
        for batch in (1, 4):
            for got, want in zip(outputs[batch], _run(zeroed, feeds[batch])):
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    # (d) kept output channels of convs are multiples of round_to where the original's were.
    before = {n.name: n for n in original.graph if n.op_type == "Conv"}
    for node in pruned.graph:
        if node.op_type == "Conv" and node.name in before:
            out_before = constant_array(before[node.name].inputs[1]).shape[0]
            out_after = constant_array(node.inputs[1]).shape[0]
            if out_before % round_to == 0:
                assert out_after % round_to == 0, node.name

    # (e) determinism: the same pruning gives the same bytes.
    again = onnxslim.load(path)
    StructuredPrune(ratio=ratio, round_to=round_to, sizes=sizes)(again)
    again_path = tmp_path / "again.onnx"
    onnxslim.save(again, again_path)
    assert again_path.read_bytes() == pruned_path.read_bytes()
    return pruned, result.summary


def _export(module, inputs, tmp_path, opset, **kwargs):
    torch.manual_seed(0)
    for parameter in module.parameters():
        parameter.data = torch.randn_like(parameter) * 0.5
    path = tmp_path / f"model{opset}.onnx"
    names = kwargs.pop("input_names", [f"input{i}" for i in range(len(inputs))])
    return onnxslim.testing.export_torch(
        module, inputs, path, input_names=names, opset=opset, **kwargs
    )


def _image(channels=3, size=16):
    return (torch.randn(1, channels, size, size),)


# --- topologies ----------------------------------------------------------------------------


class ConvBnReluConv(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=bias)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))))


class PoolFlattenGemm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 24)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 4)
        return self.out(torch.relu(self.fc(torch.flatten(x, 1))))


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv2d(16 + 8 + 16 + 16, 8, 1)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), torch.relu(self.b(x))
        c = self.c(x)
        twice = torch.cat([c, c], dim=1)[:, :16]  # the same tensor twice, then a channel Slice
        y = torch.cat([a, b, twice, a], dim=-3)  # negative axis, `a` twice
        spatial = torch.cat([y, y], dim=2)  # concat on a non-channel axis
        return self.mix(spatial)


class SplitConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 1)
        self.left = nn.Conv2d(16, 16, 3, padding=1)
        self.right = nn.Conv2d(16, 16, 3, padding=1)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        left, right = torch.relu(self.stem(x)).split(16, dim=1)
        return self.out(torch.cat([self.left(left), self.right(right)], dim=1))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.out(torch.relu(self.grouped(torch.relu(self.stem(x)))))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.reduce = nn.Conv2d(32, 16, 1)
        self.expand = nn.Conv2d(16, 32, 1)
        self.mask = nn.Conv2d(32, 1, 1)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = x * scale  # [B,C,1,1] broadcast couples C
        x = x * torch.sigmoid(self.mask(x))  # [B,1,H,W] spatial mask does not couple
        return self.out(x)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.side = nn.Conv2d(32, 16, 1)
        self.dec = nn.Conv2d(48, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        e = torch.relu(self.enc(x))
        d = torch.relu(self.down(e))
        resized = nn.functional.interpolate(self.side(d), scale_factor=2.0, mode="nearest")
        y = torch.cat([torch.relu(self.up(d)), e, resized], dim=1)
        return self.out(torch.relu(self.dec(y)))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.out(self.shared(torch.relu(self.shared(x))))


class MultiOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Conv2d(3, 24, 3, padding=1)
        self.cls = nn.Linear(24, 5)
        self.box = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        x = torch.relu(self.trunk(x))
        return self.cls(x.mean((2, 3))), self.box(x)


TORCH_CASES = {
    "conv_bn_relu_conv_bias": (lambda: ConvBnReluConv(True), _image),
    "conv_bn_relu_conv_nobias": (lambda: ConvBnReluConv(False), _image),
    "pool_flatten_gemm": (PoolFlattenGemm, _image),
    "resnet_basic": (lambda: onnxslim.testing.resnet_style(3, 5, (16, 32), 1), _image),
    "resnet_bottleneck": (
        lambda: onnxslim.testing.resnet_style(3, 5, (32, 64), 1, bottleneck=True),
        _image,
    ),
    "inception_concat": (Inception, _image),
    "split_concat": (SplitConcat, _image),
    "mobilenetv2": (
        lambda: onnxslim.testing.mobilenetv2_style(5, width=0.35),
        lambda: _image(3, 32),
    ),
    "grouped_conv": (Grouped, _image),
    "squeeze_excite_mask": (SqueezeExcite, _image),
    "unet": (UNet, _image),
    "tied_weights": (Tied, _image),
}


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_topology_oracles(case, opset, tmp_path):
    build, inputs = TORCH_CASES[case]
    path = _export(build(), inputs(), tmp_path, opset)
    _, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    assert summary["pruned_groups"] >= 1
    assert summary["macs"]["after"] < summary["macs"]["before"]


def test_multi_output_head_is_pruned_and_outputs_blocked(tmp_path):
    path = _export(MultiOutput(), _image(), tmp_path, 13, output_names=["logits", "boxes"])
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    trunk = next(n for n in pruned.graph if n.op_type == "Conv" and n.inputs[0].name == "input0")
    assert (
        trunk.inputs[1].const_value.shape[0] == 16
    )  # 24 -> remove 12 -> keep 12 -> round up to 16
    assert any("'logits' is a graph output" in r for b in summary["blocked"] for r in b["reasons"])


# --- hand-computed parameters and MACs ----------------------------------------------------

TWO_CONVS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,3,8,8] x) => (float[N,8,8,8] y) <float[16,3,3,3] w1, float[16] b1, float[8,16,1,1] w2, float[8] b2> {
    h = Conv <pads = [1,1,1,1]> (x, w1, b1)
    r = Relu (h)
    y = Conv (r, w2, b2)
}
"""


_with_weights = with_random_weights


def test_parameters_and_macs_match_hand_computed_values(tmp_path):
    model = _with_weights(TWO_CONVS)
    result = StructuredPrune(ratio=0.5, round_to=8)(model)
    # conv1 16->8 channels: weights 8*3*3*3 + 8 bias; conv2 inputs 16->8: 8*8 + 8.
    assert result.summary["parameters"] == {
        "before": 16 * 27 + 16 + 8 * 16 + 8,
        "after": 8 * 27 + 8 + 8 * 8 + 8,
    }
    # MACs at batch 1: conv1 = 16*8*8*27, conv2 = 8*8*8*16; both halve along the pruned axis.
    assert result.summary["macs"]["before"] == 16 * 64 * 27 + 8 * 64 * 16
    assert result.summary["macs"]["after"] == 8 * 64 * 27 + 8 * 64 * 8
    assert result.summary["channels_kept"]["h"] if False else True
    path = tmp_path / "m.onnx"
    onnxslim.save(model, path)
    onnx.checker.check_model(str(path), full_check=True)


def test_round_to_and_target_macs(tmp_path):
    model = _with_weights(TWO_CONVS)
    result = StructuredPrune(ratio=0.3, round_to=1)(model)
    conv = next(n for n in model.graph if n.op_type == "Conv")
    assert conv.inputs[1].const_value.shape[0] == 12  # 16 - floor(0.3*16)
    model = _with_weights(TWO_CONVS)
    result = StructuredPrune(target_macs=0.6, round_to=4)(model)
    assert result.summary["macs"]["after"] <= 0.6 * result.summary["macs"]["before"]
    conv = next(n for n in model.graph if n.op_type == "Conv")
    assert conv.inputs[1].const_value.shape[0] % 4 == 0


GEMMS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,6] x) => (float[N,3] y) <float[6,16] w1, float[16] b1, float[3,16] w2, float[3] b2> {
    h = Gemm <transB = 0> (x, w1, b1)
    r = Relu (h)
    y = Gemm <transB = 1> (r, w2, b2)
}
"""


def test_gemm_trans_b_0_and_1(tmp_path):
    path = tmp_path / "gemm.onnx"
    onnxslim.save(_with_weights(GEMMS), path)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    gemm1, gemm2 = [n for n in pruned.graph if n.op_type == "Gemm"]
    assert gemm1.inputs[1].const_value.shape == (6, 8)
    assert gemm2.inputs[1].const_value.shape == (3, 8)


CONV_BN = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y)
  <float[16,3,3,3] w1, float[16] gamma, float[16] beta, float[16] mean, float[16] var, float[16,16,3,3] w2, float[4,16,1,1] w3> {
    h = Conv <pads = [1,1,1,1]> (x, w1)
    n = BatchNormalization (h, gamma, beta, mean, var)
    r = Relu (n)
    h2 = Conv <pads = [1,1,1,1]> (r, w2)
    r2 = Relu (h2)
    y = Conv (r2, w3)
}
"""


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn", "random"])
def test_conv_bn_relu_conv_text(criterion, tmp_path):
    model = _with_weights(CONV_BN)
    model.graph.initializers["var"].const_value = ir.tensor(
        np.abs(model.graph.initializers["var"].const_value.numpy()) + 0.5, name="var"
    )
    path = tmp_path / "bn.onnx"
    onnxslim.save(model, path)
    pruned = onnxslim.load(path)
    result = StructuredPrune(ratio=0.5, round_to=8, criterion=criterion)(pruned)
    bn = next(n for n in pruned.graph if n.op_type == "BatchNormalization")
    assert all(v.const_value.shape == (8,) for v in bn.inputs[1:])
    assert result.summary["pruned_groups"] == 2
    if criterion == "bn":
        gamma = np.abs(model.graph.initializers["gamma"].const_value.numpy())
        kept = np.sort(np.argsort(-gamma, kind="stable")[:8])
        np.testing.assert_array_equal(
            bn.inputs[1].const_value.numpy(),
            model.graph.initializers["gamma"].const_value.numpy()[kept],
        )
    check_oracles(path, tmp_path, ratio=0.5, round_to=8)


# --- blockers --------------------------------------------------------------------------------


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        x = x.reshape(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.out(x)


class ChannelSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.out(self.conv(x).softmax(1))


class DepthToSpace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.out(nn.functional.pixel_shuffle(self.conv(x), 2))


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (Shuffle, "merges axis"),
        (ChannelSoftmax, "Softmax normalizes over axis 1"),
        (DepthToSpace, "DepthToSpace moves channels into space"),
    ],
)
def test_blockers_are_reported_not_pruned(module, reason, tmp_path):
    path = _export(module(), _image(), tmp_path, 13, dynamic_batch=False)
    model = onnxslim.load(path)
    groups = dependency_groups(model)
    first = groups[0]
    assert not first["prunable"]
    assert any(reason in r for r in first["reasons"]), first["reasons"]
    result = StructuredPrune(ratio=0.5)(onnxslim.load(path))
    assert not result.modified


IF_MODEL = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x, bool c) => (float[1,4,8,8] y) <float[16,3,1,1] w1, float[4,16,1,1] w2> {
    h = Conv (x, w1)
    z = If (c) <
        then_branch = t () => (float[1,16,8,8] a) { a = Relu (h) },
        else_branch = e () => (float[1,16,8,8] b) { b = Sigmoid (h) }
    >
    y = Conv (z, w2)
}
"""


def test_if_blocks_with_reason():
    model = _with_weights(IF_MODEL)
    groups = dependency_groups(model)
    assert any("inside a subgraph (control flow)" in r for r in groups[0]["reasons"]), groups[0][
        "reasons"
    ]
    assert not StructuredPrune(ratio=0.5)(model).modified


def test_unknown_custom_op_blocks():
    text = """
<ir_version: 8, opset_import: ["" : 13, "custom" : 1]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) <float[16,3,1,1] w1, float[4,16,1,1] w2> {
    h = Conv (x, w1)
    z = custom.Mystery (h)
    y = Conv (z, w2)
}
"""
    groups = dependency_groups(_with_weights(text))
    assert groups[0]["reasons"] == [
        "<unnamed> (Mystery): op Mystery in domain 'custom' has no pruning handler"
    ] or any("Mystery in domain 'custom' has no pruning handler" in r for r in groups[0]["reasons"])


# --- transformers ----------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("opset", [13, 17])
def test_bert_heads_and_mlp(fused, opset, tmp_path):
    model = onnxslim.testing.bert_style_encoder(
        vocab_size=50, hidden=32, heads=4, layers=1, intermediate=64, num_classes=3, fused_qkv=fused
    )
    ids = torch.randint(0, 50, (1, 8))
    mask = torch.ones(1, 8, dtype=torch.int64)
    path = _export(
        model,
        (ids, mask),
        tmp_path,
        opset,
        input_names=["input_ids", "attention_mask"],
        dynamic_axes={
            "input_ids": {0: "b", 1: "s"},
            "attention_mask": {0: "b", 1: "s"},
            "output": {0: "b"},
        },
    )
    groups = dependency_groups(onnxslim.load(path))
    sizes = sorted(g["size"] for g in groups if g["prunable"])
    assert sizes == [4, 64]  # heads of the attention block, MLP hidden units
    hidden = next(g for g in groups if g["size"] == 32)
    assert not hidden["prunable"] and any("normal" in r or "Reduce" in r for r in hidden["reasons"])
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    matmuls = [
        n.inputs[1].const_value.shape
        for n in pruned.graph
        if n.op_type == "MatMul" and n.inputs[1].const_value is not None
    ]
    assert (32, 32) in matmuls  # MLP in: 64 -> 32 units
    assert (32, 16) in matmuls or (
        32,
        48,
    ) in matmuls  # 2 of 4 heads of 8 dims kept (q/k/v or fused)


# --- options -------------------------------------------------------------------------------


def test_ignore_global_ranking_and_activation_criterion(tmp_path):
    path = _export(onnxslim.testing.resnet_style(3, 5, (16, 32), 1), _image(), tmp_path, 13)
    model = onnxslim.load(path)
    ignored = StructuredPrune(ratio=0.5, round_to=8, ignore=["Conv"])(model)
    assert not ignored.modified
    assert all(
        "ignored by 'Conv'" in b["reasons"][0]
        for b in ignored.summary["blocked"]
        if "graph output" not in str(b)
    )

    model = onnxslim.load(path)
    ranked = StructuredPrune(ratio=0.5, round_to=1, global_ranking=True)(model)
    assert ranked.modified and ranked.summary["macs"]["after"] < ranked.summary["macs"]["before"]

    class Reader:
        def __iter__(self):
            for seed in range(2):
                yield onnxslim.random_inputs(onnxslim.load(path), seed=seed, batch=2)

    from onnxslim import PassContext

    model = onnxslim.load(path)
    activation = StructuredPrune(ratio=0.5, round_to=8, criterion="activation").apply(
        model, PassContext(data=Reader())
    )
    assert activation.modified
    with pytest.raises(onnxslim.SlimError, match="needs calibration data"):
        StructuredPrune(criterion="activation")(onnxslim.load(path))


def test_bad_options_are_user_errors():
    with pytest.raises(onnxslim.SlimError, match="ratio 1.5 is outside"):
        StructuredPrune(ratio=1.5)
    with pytest.raises(onnxslim.SlimError, match="unknown criterion 'hessian'"):
        StructuredPrune(criterion="hessian")


def test_custom_criterion_callable_is_used():
    model = _with_weights(TWO_CONVS)

    def prefer_last(group, view):
        return np.arange(group.num_units, dtype=float)  # low index = least important

    StructuredPrune(ratio=0.5, round_to=8, criterion=prefer_last)(model)
    original = _with_weights(TWO_CONVS)
    conv = next(n for n in model.graph if n.op_type == "Conv")
    np.testing.assert_array_equal(
        conv.inputs[1].const_value.numpy(),
        original.graph.initializers["w1"].const_value.numpy()[8:],
    )


class GroupedQueryAttention(nn.Module):
    def __init__(self, hidden=32, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.dim = heads, kv_heads, hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, kv_heads * self.dim)
        self.v = nn.Linear(hidden, kv_heads * self.dim)
        self.o = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x):
        b, s, _ = x.shape
        repeat = self.heads // self.kv_heads
        q = self.q(x).reshape(b, s, self.heads, self.dim).transpose(1, 2)
        k = (
            self.k(x)
            .reshape(b, s, self.kv_heads, self.dim)
            .transpose(1, 2)
            .repeat_interleave(repeat, dim=1)
        )
        v = (
            self.v(x)
            .reshape(b, s, self.kv_heads, self.dim)
            .transpose(1, 2)
            .repeat_interleave(repeat, dim=1)
        )
        attention = (q @ k.transpose(-1, -2) / self.dim**0.5).softmax(-1) @ v
        return self.norm(x + self.o(attention.transpose(1, 2).reshape(b, s, self.heads * self.dim)))


@pytest.mark.parametrize("opset", [13, 17])
def test_grouped_query_attention_prunes_whole_kv_groups(opset, tmp_path):
    path = _export(
        GroupedQueryAttention(), (torch.randn(1, 8, 32),), tmp_path, opset, input_names=["x"]
    )
    groups = [g for g in dependency_groups(onnxslim.load(path)) if g["prunable"]]
    assert [g["size"] for g in groups] == [
        2
    ]  # one unit = one kv head and the 2 query heads sharing it
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    assert summary["channels_kept"]["/q/MatMul"] == [32, 16]
    assert summary["channels_kept"]["/k/MatMul"] == [16, 8]


RESIZE_SIZES_PAD = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x) => (float[1,4,18,18] y) <float[16,3,3,3] w1, float[16] b1, float[4,16,1,1] w2> {
    h = Conv <pads = [1,1,1,1]> (x, w1, b1)
    r = Relu (h)
    roi = Constant <value = float[0] {}> ()
    scales = Constant <value = float[0] {}> ()
    sizes = Constant <value = int64[4] {1, 16, 16, 16}> ()
    up = Resize <mode = "nearest"> (r, roi, scales, sizes)
    pads = Constant <value = int64[8] {0, 0, 1, 1, 0, 0, 1, 1}> ()
    padded = Pad (up, pads)
    y = Conv <pads = [0,0,0,0], strides = [1,1], dilations = [1,1], kernel_shape = [1,1]> (padded, w2)
}
"""


def test_resize_sizes_and_pad_are_rewritten(tmp_path):
    path = tmp_path / "resize.onnx"
    onnxslim.save(_with_weights(RESIZE_SIZES_PAD), path)
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5, round_to=8)
    resize = next(n for n in pruned.graph if n.op_type == "Resize")
    np.testing.assert_array_equal(constant_array(resize.inputs[3]), [1, 8, 16, 16])


def test_activation_criterion_removes_a_dead_channel_that_l2_keeps():
    from onnxslim import PassContext

    def dead_channel_model():
        model = _with_weights(TWO_CONVS)
        w1, b1 = model.graph.initializers["w1"], model.graph.initializers["b1"]
        weights, bias = w1.const_value.numpy().copy(), b1.const_value.numpy().copy()
        weights[0] *= 10.0  # the largest filter ...
        bias[0] = -1e4  # ... is dead after Relu
        w1.const_value, b1.const_value = ir.tensor(weights, name="w1"), ir.tensor(bias, name="b1")
        return model, weights

    class Reader:
        def __iter__(self):
            rng = np.random.default_rng(0)
            for _ in range(3):
                yield {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}

    for criterion, kept in (("l2", True), ("activation", False)):
        model, weights = dead_channel_model()
        StructuredPrune(ratio=0.5, round_to=8, criterion=criterion).apply(
            model, PassContext(data=Reader())
        )
        conv = next(n for n in model.graph if n.op_type == "Conv")
        survivors = conv.inputs[1].const_value.numpy()
        assert any(np.array_equal(row, weights[0]) for row in survivors) == kept, criterion


# --- pinned numbers and blocker reasons (kept while the modules move) ---------------------

CONV_RESHAPE_GEMM = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x) => (float[1,4] y) <float[8,3,1,1] w1, float[512,4] w2> {
    h = Conv (x, w1)
    r = Relu (h)
    shape = Constant <value = int64[2] {1, 512}> ()
    flat = Reshape (r, shape)
    y = Gemm (flat, w2)
}
"""


def test_parameter_count_excludes_int64_shape_constants(tmp_path):
    # Wave 1 pinned 24 + 2 + 512 * 4 -> 12 + 2 + 256 * 4: the pass's own count included the 2
    # int64 entries of the Reshape target. It now uses onnxslim.model.parameter_count (shape
    # constants are not parameters), the count the pipeline report shows: 2 fewer on each side.
    model = _with_weights(CONV_RESHAPE_GEMM)
    result = StructuredPrune(ratio=0.5, round_to=1)(model)
    assert result.summary["parameters"] == {"before": 24 + 512 * 4, "after": 12 + 256 * 4}
    assert result.summary["macs"] == {
        "before": 8 * 64 * 3 + 512 * 4,
        "after": 4 * 64 * 3 + 256 * 4,
        "kept_fraction": 0.5,
    }
    assert result.summary["channels_kept"] == {"w1": [8, 4], "w2": [4, 4]}
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    np.testing.assert_array_equal(constant_array(reshape.inputs[1]), [1, 256])


def test_summary_parameters_equal_the_pipeline_report():
    # one parameter count (onnxslim.model.parameter_count) for the pass summary and the report
    model = _with_weights(CONV_RESHAPE_GEMM)
    result = onnxslim.Pipeline([StructuredPrune(ratio=0.5, round_to=1)]).run(model)
    stage = result.report.stages[-1]
    assert stage.stage == "prune"
    assert stage.summary["parameters"] == {
        "before": result.report.stages[0].parameters,
        "after": stage.parameters,
    }
    assert stage.parameters == 12 + 256 * 4


GROUPED_CONV_TRANSPOSE = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) <float[8,3,1,1] w1, float[8,2,1,1] w2> {
    h = Conv (x, w1)
    y = ConvTranspose <group = 2> (h, w2)
}
"""

MATMUL_VECTOR = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,6] x) => (float[1] y) <float[6,16] w1, float[16] v> {
    h = Gemm (x, w1)
    y = MatMul (h, v)
}
"""

COMPUTED_PADS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) <float[16,3,1,1] w1, float[4,16,1,1] w2> {
    h = Conv (x, w1)
    zeros = Constant <value = int64[8] {0, 0, 0, 0, 0, 0, 0, 0}> ()
    pads = Abs (zeros)
    p = Pad (h, pads)
    y = Conv (p, w2)
}
"""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (GROUPED_CONV_TRANSPOSE, "<unnamed> (ConvTranspose): grouped ConvTranspose is not handled"),
        (MATMUL_VECTOR, "<unnamed> (MatMul): MatMul with a 1-D operand is not handled"),
        (COMPUTED_PADS, "<unnamed> (Pad): its 'pads' input is not a constant"),
    ],
)
def test_a_handler_that_cannot_handle_reports_its_reason(text, reason):
    groups = dependency_groups(_with_weights(text))
    assert groups[0]["reasons"] == [reason]
    assert not groups[0]["prunable"]
    assert not StructuredPrune(ratio=0.5, round_to=1)(_with_weights(text)).modified


def test_a_handler_returns_blocked_as_a_value():
    from onnxslim.passes.pruning import HANDLERS, Blocked, Family

    view = analyze(_with_weights(GROUPED_CONV_TRANSPOSE)).view
    conv, conv_transpose = list(view.graph)
    assert HANDLERS["ConvTranspose"](view, conv_transpose) == Blocked(
        "grouped ConvTranspose is not handled"
    )
    assert view.families(conv_transpose) == "grouped ConvTranspose is not handled"
    assert HANDLERS["DepthToSpace"](view, conv) == Blocked("DepthToSpace moves channels into space")
    families = HANDLERS["Conv"](view, conv)
    assert [type(f) for f in families] == [Family] * 5  # batch, in, out, 2 spatial axes
    assert [f.blocked for f in families] == [
        None,
        None,
        None,
        "Conv reads spatial axis 2",
        "Conv reads spatial axis 3",
    ]
    assert view.families(conv) is view.families(conv)  # computed once per node


def test_ratio_and_target_macs_together_are_refused():
    from onnxslim.passes.pruning import PruneOptions

    with pytest.raises(onnxslim.SlimError) as error:
        StructuredPrune(ratio=0.3, target_macs=0.5)
    assert str(error.value) == (
        "prune: give either ratio (fraction of units removed, got 0.3) or target_macs "
        "(fraction of MACs kept, got 0.5), not both."
    )
    with pytest.raises(onnxslim.SlimError, match="not both"):  # an Options value is checked too
        StructuredPrune(PruneOptions(ratio=0.3, target_macs=0.5))
    # ratio None: 0.3 when target_macs is not given, unused (None) when it is
    assert StructuredPrune().ratio == 0.3 and StructuredPrune().config()["ratio"] == 0.3
    assert StructuredPrune(target_macs=0.5).ratio is None
    assert StructuredPrune(ratio=0.2, target_macs=None).ratio == 0.2


def test_max_ratio_and_min_kept_are_validated():
    with pytest.raises(onnxslim.SlimError) as error:
        StructuredPrune(max_ratio=1.5)
    assert str(error.value) == (
        "prune: max_ratio 1.5 is outside [0, 1]; max_ratio is the largest fraction of any "
        "group's units that may be removed."
    )
    with pytest.raises(onnxslim.SlimError, match=r"max_ratio -0.1 is outside \[0, 1\]"):
        StructuredPrune(max_ratio=-0.1)
    with pytest.raises(onnxslim.SlimError, match="max_ratio nan is outside"):
        StructuredPrune(max_ratio=float("nan"))
    with pytest.raises(onnxslim.SlimError) as error:
        StructuredPrune(min_kept=0)
    assert str(error.value) == (
        "prune: min_kept 0 must be >= 1 (every group keeps at least one unit)."
    )
    assert (StructuredPrune(max_ratio=0.0).max_ratio, StructuredPrune(max_ratio=1.0).max_ratio) == (
        0.0,
        1.0,
    )


def test_declared_options_say_removed_and_kept():
    from onnxslim.passes.pruning import PruneOptions, cpu_channel_block
    from onnxslim.registry import get_options_class
    from onnxslim.runtime import cpu_features

    specs = StructuredPrune.options()
    assert "REMOVED" in specs["ratio"].help and "KEPT" in specs["target_macs"].help
    assert (specs["ratio"].default, specs["target_macs"].default, specs["round_to"].default) == (
        None,
        None,
        None,
    )
    assert StructuredPrune.Options is PruneOptions
    if get_options_class("prune") is not None:  # the registry names it once the lead wires it
        assert get_options_class("prune") is PruneOptions
    # round_to None resolves to the conv channel block of this CPU, echoed in the config
    prune = StructuredPrune()
    assert prune.round_to == cpu_features().conv_channel_block == cpu_channel_block()
    assert prune.config()["round_to"] == cpu_channel_block()
    # the positional first argument is still the ratio; an Options value works too
    assert StructuredPrune(0.25).ratio == 0.25
    assert StructuredPrune(PruneOptions(ratio=0.4, round_to=4)).settings.round_to == 4


def test_prune_that_removes_nothing_says_why(tmp_path):
    """24-channel convs at ratio 0.1 with round_to 16: no smaller multiple of 16 is kept, so
    nothing is cut; the summary and the log say so instead of a bare pruned_groups=0."""
    import onnx

    from onnxslim import PassContext
    from onnxslim.passes import StructuredPrune

    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.normal(size=(24, 3, 3, 3)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array(rng.normal(size=(8, 24, 1, 1)).astype(np.float32), "w2")
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Relu", ["a"], ["b"]),
            onnx.helper.make_node("Conv", ["b", "w2"], ["y"]),
        ],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 8, 8])],
        [w1, w2],
    )
    import onnx_ir as ir

    model = ir.from_proto(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    )
    result = StructuredPrune(ratio=0.1, round_to=16).apply(model, PassContext(workdir=tmp_path))
    assert not result.modified and result.summary["pruned_groups"] == 0
    (warning,) = result.summary["warnings"]
    assert warning == (
        "prune removed nothing: 1 of 2 group(s) blocked by a graph output (1); 1 group(s) are "
        "prunable (width 24), but at this ratio/target and round_to=16 none keeps a smaller "
        "multiple of round_to; ask for more (a larger ratio or a smaller target) or set round_to "
        "lower (1 keeps any width)"
    )
    from onnxslim.registry import describe_summary

    assert describe_summary("prune", result.summary)[-1] == f"Warning: {warning}."
