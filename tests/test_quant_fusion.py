"""Fusion before placement: exact fusions to standard ops, each verified, dropped with a reason."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxslim.passes.quantization._fusion import fuse_for_quantization, outputs_match
from onnxslim.passes.quantization._prepare import prepare

LAYER_NORM_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
ln (float[N, 6, 16] x) => (float[N, 6, 16] y) <
    float[16] scale = {SCALE},
    float[16] bias = {BIAS},
    float eps = {0.00001}
> {
    mean = ReduceMean <axes = [-1], keepdims = 1> (x)
    d = Sub (x, mean)
    dd = Mul (d, d)
    var = ReduceMean <axes = [-1], keepdims = 1> (dd)
    ve = Add (var, eps)
    std = Sqrt (ve)
    inv = Reciprocal (std)
    n = Mul (d, inv)
    s = Mul (n, scale)
    y = Add (s, bias)
}
"""

CONV_BN_HARDSWISH_TEXT = """
<ir_version: 8, opset_import: ["" : 13]>
cbh (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) <
    float[4, 3, 3, 3] w = {WEIGHTS},
    float[4] gamma = {1.0, 0.5, 2.0, 1.5},
    float[4] beta = {0.1, -0.2, 0.3, 0.0},
    float[4] mean = {0.05, -0.1, 0.2, 0.0},
    float[4] var = {1.0, 0.25, 4.0, 2.0},
    float three = {3.0},
    float zero = {0.0},
    float six = {6.0}
> {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    b = BatchNormalization <epsilon = 0.00001> (c, gamma, beta, mean, var)
    a = Add (b, three)
    k = Clip (a, zero, six)
    m = Mul (b, k)
    y = Div (m, six)
}
"""


def _values(count: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "{" + ", ".join(f"{v:.4f}" for v in rng.normal(size=count)) + "}"


def _run(model: ir.Model | onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _ops(model: ir.Model) -> Counter:
    return Counter(node.op_type for node in model.graph)


def test_decomposed_layer_norm_is_fused_and_exact():
    text = LAYER_NORM_TEXT.replace("{SCALE}", _values(16, 1)).replace("{BIAS}", _values(16, 2))
    model = ir.from_proto(onnx.parser.parse_model(text))
    feeds = {"x": np.random.default_rng(3).normal(size=(2, 6, 16)).astype(np.float32) * 5 + 1}
    fused, report = fuse_for_quantization(model, samples=[feeds])
    assert report.applied == {"layer_norm": 2}  # LayerNorm, then its bias Add folded in
    assert _ops(fused) == Counter({"LayerNormalization": 1})
    assert _ops(model)["ReduceMean"] == 2  # the input is not modified
    np.testing.assert_allclose(_run(fused, feeds)[0], _run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_batchnorm_after_conv_folded_and_hardswish_fused_exactly():
    text = CONV_BN_HARDSWISH_TEXT.replace("{WEIGHTS}", _values(4 * 3 * 3 * 3, 0))
    model = ir.from_proto(onnx.parser.parse_model(text))
    feeds = {"x": np.random.default_rng(4).normal(size=(1, 3, 8, 8)).astype(np.float32)}
    fused, report = fuse_for_quantization(model, samples=[feeds])
    # HardSwish is an opset-14 op: that fusion declares the model at 14 (13 -> 14 is exact)
    assert report.applied == {"batchnorm": 1, "hardswish": 1} and report.opset == "13 -> 14"
    assert _ops(fused) == Counter({"Conv": 1, "HardSwish": 1})
    assert fused.opset_imports[""] == 14
    reference, candidate = _run(model, feeds)[0], _run(fused, feeds)[0]
    assert outputs_match([[reference]], [[candidate]]) is None
    np.testing.assert_allclose(candidate, reference, rtol=1e-5, atol=1e-5)


def test_fuse_off_returns_the_model_itself():
    text = CONV_BN_HARDSWISH_TEXT.replace("{WEIGHTS}", _values(4 * 3 * 3 * 3, 0))
    model = ir.from_proto(onnx.parser.parse_model(text))
    same, report = fuse_for_quantization(model, fuse=False)
    assert same is model and report.to_dict() == {"applied": {}, "skipped": {}, "opset": None}


def test_a_fusion_that_is_not_exact_is_dropped_with_the_reason():
    text = CONV_BN_HARDSWISH_TEXT.replace("{WEIGHTS}", _values(4 * 3 * 3 * 3, 0))
    model = ir.from_proto(onnx.parser.parse_model(text))
    feeds = {"x": np.random.default_rng(4).normal(size=(1, 3, 8, 8)).astype(np.float32)}
    # zero tolerance: HardSwish multiplies by 1/6 where the chain divides by 6 (one ulp off);
    # ORT folds the BatchNorm into the Conv at load, so that fusion is bit-exact
    fused, report = fuse_for_quantization(model, samples=[feeds], rtol=0.0, atol=0.0)
    assert report.applied == {"batchnorm": 1}
    assert report.skipped["hardswish"].startswith("not exact on this model: output 0 moved by")
    assert report.skipped["hardswish"].endswith("on sample 0 (allowed 0: 0 of its scale 12.9)")
    assert _ops(fused) == Counter({"Conv": 1, "Add": 1, "Clip": 1, "Mul": 1, "Div": 1})
    assert fused.opset_imports[""] == 13 and report.opset is None  # dropped with its fusion


def test_outputs_match_is_scale_aware():
    big = np.full((2, 3), 1000.0, np.float32)
    assert outputs_match([[big]], [[big + 0.05]]) is None  # 5e-5 of the scale
    assert outputs_match([[big]], [[big + 0.5]]) == (
        "output 0 moved by 0.5 on sample 0 (allowed 0.1: 0.0001 of its scale 1e+03)"
    )
    assert outputs_match([[np.array([1, 2])]], [[np.array([1, 3])]]) == (
        "output 0 (integer) differs on sample 0"
    )


@pytest.mark.parametrize("fuse", [False, True])
def test_prepare_reports_its_fusions(tmp_path, fuse):
    text = CONV_BN_HARDSWISH_TEXT.replace("{WEIGHTS}", _values(4 * 3 * 3 * 3, 0))
    model = ir.from_proto(onnx.parser.parse_model(text))
    prepared = prepare(model, tmp_path, fuse=fuse)
    ops = Counter(node.op_type for node in prepared.proto.graph.node)
    if fuse:
        assert prepared.fusions == {
            "applied": {"batchnorm": 1, "hardswish": 1},
            "skipped": {},
            "opset": "13 -> 14",
        }
        assert ops == Counter({"Conv": 1, "HardSwish": 1})
    else:
        assert prepared.fusions == {"applied": {}, "skipped": {}, "opset": None}
        assert ops["BatchNormalization"] == 1 and ops["Clip"] == 1


CONV_AFFINE_RELU_TEXT = """
<ir_version: 8, opset_import: ["" : 13]>
car (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) <
    float[4, 3, 3, 3] w = {WEIGHTS},
    float[4] b = {0.1, -0.2, 0.3, 0.0},
    float scale = {0.5},
    float offset = {0.2}
> {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    s = Mul (c, scale)
    a = Add (s, offset)
    y = Relu (a)
}
"""


def test_every_fusion_rule_has_its_anchor_ops_and_a_net_without_them_skips_onnxscript():
    """A rule runs only where the op types its patterns need are present: a Conv + Mul + Add
    chain fuses (conv_affine), a Conv/Relu net without any anchor returns untouched without
    importing onnxscript (0.3 s of a 1.8 s quantization of the demo net)."""
    import subprocess
    import sys

    from onnxslim.compat.onnxscript import quantization_fusion_rules
    from onnxslim.passes.quantization._fusion import FUSION_ANCHORS

    assert set(FUSION_ANCHORS) == set(quantization_fusion_rules())
    text = CONV_AFFINE_RELU_TEXT.replace("{WEIGHTS}", _values(4 * 3 * 3 * 3, seed=4))
    fused, report = fuse_for_quantization(ir.from_proto(onnx.parser.parse_model(text)))
    assert report.applied == {"conv_affine": 1}
    assert [n.op_type for n in fused.graph] == ["Conv", "Relu"]
    # Conv, Relu and a residual Add: no Mul, BatchNormalization, Clip, HardSigmoid, ReduceMean
    plain = text.replace("s = Mul (c, scale)", "s = Relu (c)").replace(
        "a = Add (s, offset)", "a = Add (s, c)"
    )
    script = f"""
import sys
import onnx, onnx_ir as ir
from onnxslim.passes.quantization._fusion import fuse_for_quantization
model = ir.from_proto(onnx.parser.parse_model({plain!r}))
fused, report = fuse_for_quantization(model)
print(fused is model, report.applied, report.skipped, "onnxscript" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split("\n")[0] == "True {} {} False", done.stderr[-2000:]
