"""onnxslim.model: THE MAC rule, parameter count, shapes and the value probe, on real models.

The MAC numbers were pinned against every copy of the rule before they were unified
(``_stats._node_macs``, ``benchmark._coverage._node_macs``, pruning's ``macs_of_node``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import onnxslim
from onnxslim.benchmark import int8_coverage
from onnxslim.model import (
    INTEGER_OPS,
    MAC_OPS,
    WEIGHT_INPUTS,
    ValueProbe,
    inferred_shapes,
    model_stats,
    node_macs,
    observed_shapes,
    parameter_count,
    probe_values,
    shape_lookup,
)


def _model(text: str, int_inputs: dict[str, list[int]] | None = None) -> ir.Model:
    """ONNX text whose inputs named w*/b*/s* become random initializers (int64 ones from ``int_inputs``)."""
    m = ir.from_onnx_text(text)
    rng = np.random.default_rng(0)
    for value in list(m.graph.inputs):
        if value.name[0] in "wbs":
            m.graph.inputs.remove(value)
            if int_inputs and value.name in int_inputs:
                data = np.array(int_inputs[value.name], np.int64)
            else:
                shape = [int(d) for d in value.shape]
                data = rng.standard_normal(shape).astype(value.dtype.numpy())
            value.const_value = ir.tensor(data, name=value.name)
            m.graph.register_initializer(value)
    return m


CONV_NET = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 32, 32] x, float[8, 3, 3, 3] w1, float[8] b1, float[16, 8, 3, 3] w2,
   float[10, 16] wf, float[10] bf) => (float[N, 10] y) {
    c1 = Conv <strides = [2, 2], pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2)
    p = GlobalAveragePool (c2)
    f = Flatten (p)
    y = Gemm <transB = 1> (f, wf, bf)
}"""
CONV_NET_MACS = {"c1": 2 * 8 * 16 * 16 * 27, "c2": 2 * 16 * 16 * 16 * 72, "y": 2 * 16 * 10}

GROUPED = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 8, 10, 10] x, float[8, 1, 3, 3] wd, float[16, 4, 1, 1] wg, float[16, 2, 2, 2] wu)
  => (float[1, 4, 20, 20] y) {
    d = Conv <group = 8, pads = [1, 1, 1, 1]> (x, wd)
    c = Conv <group = 2> (d, wg)
    y = ConvTranspose <strides = [2, 2], group = 2> (c, wu)
}"""
# depthwise: 9 per output; grouped 1x1: 8/2 inputs per output; transpose: 16*100 inputs x 2*2*2
GROUPED_MACS = {"d": 8 * 100 * 9, "c": 16 * 100 * 4, "y": 16 * 100 * 8}

TRANSFORMER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 16, 32] x, float[32, 32] wq, float[32, 32] wk, float[32, 32] wv, float[32, 32] wo,
   int64[4] s_heads, int64[3] s_back, float[32] w_ln, float[32] b_ln, float[32, 64] w1,
   float[64, 32] w2) => (float[2, 16, 32] y) {
    q = MatMul (x, wq)
    k = MatMul (x, wk)
    v = MatMul (x, wv)
    qh = Reshape (q, s_heads)
    kh = Reshape (k, s_heads)
    vh = Reshape (v, s_heads)
    qt = Transpose <perm = [0, 2, 1, 3]> (qh)
    kt = Transpose <perm = [0, 2, 3, 1]> (kh)
    vt = Transpose <perm = [0, 2, 1, 3]> (vh)
    scores = MatMul (qt, kt)
    attn = Softmax <axis = -1> (scores)
    ctx = MatMul (attn, vt)
    ct = Transpose <perm = [0, 2, 1, 3]> (ctx)
    cr = Reshape (ct, s_back)
    o = MatMul (cr, wo)
    res = Add (o, x)
    ln = LayerNormalization <axis = -1> (res, w_ln, b_ln)
    h = MatMul (ln, w1)
    hr = Relu (h)
    y = MatMul (hr, w2)
}"""
TRANSFORMER_INTS = {"s_heads": [2, 16, 4, 8], "s_back": [2, 16, 32]}
TRANSFORMER_MACS = {
    "q": 2 * 16 * 32 * 32,
    "k": 2 * 16 * 32 * 32,
    "v": 2 * 16 * 32 * 32,
    "scores": 2 * 4 * 16 * 8 * 16,  # [2,4,16,8] @ [2,4,8,16]
    "ctx": 2 * 4 * 16 * 16 * 8,  # [2,4,16,16] @ [2,4,16,8]
    "o": 2 * 16 * 32 * 32,
    "h": 2 * 16 * 32 * 64,
    "y": 2 * 16 * 64 * 32,
}

GEMMS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[16, 4] a, float[10, 16] wt, float[4, 1, 6, 8] x, float[3, 8, 5] wb, float[8] v)
  => (float[4, 10] y, float[4, 3, 6, 5] z, float[4, 1, 6] u) {
    y = Gemm <transA = 1, transB = 1> (a, wt)
    z = MatMul (x, wb)
    u = MatMul (x, v)
}"""
# batched MatMul broadcasts [4,1] with [3]: 12 products of 6x8 @ 8x5; 1-D B reduces the last axis
GEMMS_MACS = {"y": 4 * 16 * 10, "z": 4 * 3 * 6 * 8 * 5, "u": 4 * 6 * 8}

ORT_KERNELS = """
<ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
g (float[1, 3, 8, 8] x, float[8, 3, 3, 3] w, float[4, 16] a, float[16, 10] wb,
   float[10, 16] wt, uint8[1, 3, 8, 8] xq, float xs, uint8 xz, int8[8, 3, 3, 3] wq, float ws,
   int8 wz, float ys, uint8 yz, uint8[4, 16] aq, int8[16, 10] bq, uint8[1, 8, 4, 4] tq,
   int8[8, 2, 2, 2] wtq, float[4, 16] af, float[2, 4, 16] a3, uint8[10, 1, 8] wn)
  => (float[1, 8, 8, 8] fc, float[4, 10] fg, float[4, 10] fm, uint8[1, 8, 8, 8] qc,
      int32[1, 8, 8, 8] ci, uint8[4, 10] qm, int32[4, 10] mi, float[4, 10] mf, float[4, 10] dq,
      uint8[4, 10] qg, uint8[1, 2, 8, 8] qt, float[2, 4, 10] nb) {
    fc = com.microsoft.FusedConv <activation = "Relu", pads = [1, 1, 1, 1]> (x, w)
    fg = com.microsoft.FusedGemm <activation = "Relu"> (a, wb)
    fm = com.microsoft.FusedMatMul <transB = 1> (af, wt)
    qc = com.microsoft.QLinearConv <pads = [1, 1, 1, 1]> (xq, xs, xz, wq, ws, wz, ys, yz)
    ci = ConvInteger <pads = [1, 1, 1, 1]> (xq, wq, xz, wz)
    qm = QLinearMatMul (aq, xs, xz, bq, ws, wz, ys, yz)
    mi = MatMulInteger (aq, bq, xz, wz)
    mf = com.microsoft.MatMulIntegerToFloat (aq, bq, xs, ws, xz, wz)
    dq = com.microsoft.DynamicQuantizeMatMul (af, bq, ws, wz)
    qg = com.microsoft.QGemm (aq, xs, xz, bq, ws, wz, , ys, yz)
    qt = com.microsoft.QLinearConvTranspose <strides = [2, 2], group = 1, kernel_shape = [2, 2]>
        (tq, xs, xz, wtq, ws, wz, ys, yz)
    nb = com.microsoft.MatMulNBits <K = 16, N = 10, bits = 4, block_size = 16> (a3, wn, ws)
}"""
ORT_KERNEL_MACS = {
    "fc": 8 * 8 * 8 * 27,
    "fg": 4 * 16 * 10,
    "fm": 4 * 16 * 10,
    "qc": 8 * 8 * 8 * 27,
    "ci": 8 * 8 * 8 * 27,
    "qm": 4 * 16 * 10,
    "mi": 4 * 16 * 10,
    "mf": 4 * 16 * 10,
    "dq": 4 * 16 * 10,
    "qg": 4 * 16 * 10,
    "qt": 8 * 4 * 4 * 2 * 2 * 2,
    "nb": 2 * 4 * 10 * 16,
}

FIXTURES = {
    "conv_net": (CONV_NET, None, {"N": 2}, CONV_NET_MACS),
    "grouped": (GROUPED, None, None, GROUPED_MACS),
    "transformer": (TRANSFORMER, TRANSFORMER_INTS, None, TRANSFORMER_MACS),
    "gemms": (GEMMS, None, None, GEMMS_MACS),
}


def _macs_by_output(model: ir.Model, shape_of) -> dict[str, int | None]:
    return {node.outputs[0].name: node_macs(node, shape_of) for node in model.graph}


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_node_macs_on_inferred_shapes(fixture: str) -> None:
    text, ints, sizes, expected = FIXTURES[fixture]
    m = _model(text, ints)
    macs = _macs_by_output(m, shape_lookup(inferred_shapes(m, sizes)))
    assert {name: n for name, n in macs.items() if n} == expected
    assert all(macs[n.outputs[0].name] == 0 for n in m.graph if n.op_type not in MAC_OPS)
    assert model_stats(m, sizes).macs == sum(expected.values())


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_node_macs_on_observed_shapes(fixture: str) -> None:
    """The same numbers from shapes of one ORT run (the lookup pruning builds)."""
    text, ints, sizes, expected = FIXTURES[fixture]
    m = _model(text, ints)
    feeds = onnxslim.random_inputs(m, sizes)
    macs = _macs_by_output(m, shape_lookup(observed_shapes(m, feeds)))
    assert {name: n for name, n in macs.items() if n} == expected


def test_node_macs_of_ort_fused_and_quantized_kernels() -> None:
    m = _model(ORT_KERNELS)
    macs = _macs_by_output(m, shape_lookup({}))
    assert macs == ORT_KERNEL_MACS


def test_node_macs_unknown_shape_is_none_other_domains_zero() -> None:
    m = _model(
        """
        <ir_version: 8, opset_import: ["" : 13, "custom" : 1]>
        g (float[N, 3, H, W] x, float[8, 3, 3, 3] w) => (float[N, 8, H, W] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w)
            y = custom.Conv (c, w)
        }"""
    )
    conv, custom = list(m.graph)
    assert node_macs(conv, shape_lookup({})) is None
    assert node_macs(conv, shape_lookup({"c": (1, 8, 4, 4)})) == 8 * 16 * 27
    assert node_macs(custom, shape_lookup({})) == 0


def test_parameter_count_counts_weights_not_shape_constants() -> None:
    m = _model(TRANSFORMER, TRANSFORMER_INTS)
    weights = 4 * 32 * 32 + 2 * 32 + 2 * 32 * 64
    assert parameter_count(m) == weights
    assert onnxslim.model_stats(m).parameters == weights  # the top-level re-export agrees
    quantized = ir.from_onnx_text(
        """
        <ir_version: 9, opset_import: ["" : 21]>
        g (float[2, 4] x) => (float[2, 4] y) {
            q = Constant <value = int8[4, 4] {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}> ()
            s = Constant <value = int64[2] {4, 4}> ()
            r = Reshape (q, s)
            d = DequantizeLinear (r, x)
            y = Identity (d)
        }"""
    )
    assert parameter_count(quantized) == 16


def test_tables_are_consistent() -> None:
    assert {"QLinearConv", "QLinearAdd", "QLinearConvTranspose"} <= INTEGER_OPS
    assert "Conv" not in INTEGER_OPS and "FusedConv" not in INTEGER_OPS
    assert MAC_OPS <= set(WEIGHT_INPUTS)
    assert WEIGHT_INPUTS["QLinearConv"][0] == 3 and WEIGHT_INPUTS["Gemm"][0] == 1


# ---------------------------------------------------------------------------- the probe


PROBE_MODEL = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x, bool c) => (float[2, 3] y) {
    r = Relu (x)
    n = Shape (r)
    y = If (c) <
        then_branch = t () => (float[2, 3] inner) { inner = Neg (r) },
        else_branch = e () => (float[2, 3] other) { other = Identity (r) }
    >
}"""


def test_probe_returns_values_and_says_why_it_skips() -> None:
    m = ir.from_onnx_text(PROBE_MODEL)
    before = ir.to_proto(m).SerializeToString()
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)
    probe = ValueProbe(m, ["r", "n", "x", "inner", "nope", "y"])
    assert ir.to_proto(m).SerializeToString() == before  # the model is left as it was
    assert probe.names == ("r", "n", "x", "y")
    assert probe.skipped == {
        "inner": "inside a subgraph (If/Loop/Scan body): only main-graph values can be outputs",
        "nope": "no value of that name in the graph",
    }
    values = probe.run({"x": x, "c": np.array(True), "unused": x})
    np.testing.assert_array_equal(values["r"], np.maximum(x, 0))
    np.testing.assert_array_equal(values["n"], np.array([2, 3], np.int64))
    np.testing.assert_array_equal(values["x"], x)
    np.testing.assert_array_equal(values["y"], -np.maximum(x, 0))
    assert probe.outputs == ("r", "n", "x", "y")
    assert probe.run({"x": x, "c": np.array(True)}, []) == {}
    only = probe_values(m, ["n"], {"x": x, "c": np.array(False)})
    assert list(only) == ["n"] and only["n"].tolist() == [2, 3]


def test_probe_reads_a_model_file_with_external_data(tmp_path: Path) -> None:
    m = _model(CONV_NET)
    path = onnxslim.save(m, tmp_path / "net.onnx", external_data=True)
    assert (tmp_path / "net.onnx.data").exists()
    feeds = onnxslim.random_inputs(m, {"N": 1})
    probe = ValueProbe(path, ["c2", "p"])
    values = probe.run(feeds)
    assert values["c2"].shape == (1, 16, 16, 16) and values["p"].shape == (1, 16, 1, 1)
    # the loaded model's external weights are hard-linked, not copied: same values
    linked = ValueProbe(onnxslim.load(path), ["c2"]).run(feeds)
    np.testing.assert_array_equal(linked["c2"], ValueProbe(m, ["c2"]).run(feeds)["c2"])
    # all main-graph values when no names are given, with a caller's session options
    options = onnxslim.session_options(intra_op_threads=1, optimization_level="all")
    every = ValueProbe(path, None, options=options).run(feeds)
    assert sorted(every) == ["c1", "c2", "f", "p", "r1", "y"]


@pytest.mark.parametrize(
    "text, names",
    [
        (CONV_NET, ["c2", "p", "nope", "y"]),  # node outputs and a missing name: the file's door
        (CONV_NET, ["x", "c1"]),  # a graph input needs an Identity: the copy's door
        (PROBE_MODEL, ["r", "inner", "nope"]),  # subgraph names: the copy's door says which
        (CONV_NET, []),  # the model's own outputs: ORT reads the file as it is
    ],
)
def test_probe_on_a_file_matches_the_probe_on_its_model(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    m = _model(text)
    path = onnxslim.save(m, tmp_path / "m.onnx", external_data=False)
    on_file, in_memory = ValueProbe(path, names), ValueProbe(m, names)
    for attribute in ("names", "skipped", "outputs", "graph_outputs", "input_names"):
        assert getattr(on_file, attribute) == getattr(in_memory, attribute), attribute
    assert on_file.graph_outputs == ("y",)
    feeds = onnxslim.random_inputs(m, {"N": 2})
    feeds = {k: v for k, v in feeds.items() if k in on_file.input_names}
    if "c" in feeds:
        feeds["c"] = np.array(True)
    got, want = on_file.run(feeds, on_file.outputs), in_memory.run(feeds, in_memory.outputs)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_observed_shapes_fall_back_to_inference_when_ort_cannot_run() -> None:
    m = _model(
        """
        <ir_version: 8, opset_import: ["" : 13, "custom" : 1]>
        g (float[N, 4] x, float[4, 3] w) => (float[N, 3] y) {
            h = MatMul (x, w)
            y = custom.Unknown (h)
        }"""
    )
    feeds = {"x": np.zeros((5, 4), np.float32)}
    shapes = observed_shapes(m, feeds)
    assert shapes["h"] == (5, 3) and shapes["x"] == (5, 4) and shapes["w"] == (4, 3)
    assert "y" not in shapes


def test_int8_coverage_of_ort_optimized_qdq_conv_net(tmp_path: Path) -> None:
    """A QDQ conv net through ORT's optimizer: QLinearConv/QGemm-or-MatMul MACs pinned."""
    m = _model(CONV_NET)
    source = onnxslim.save(m, tmp_path / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(3)
            self.batches = iter(
                [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.batches, None)

    target = tmp_path / "int8.onnx"
    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    coverage = int8_coverage(target, "cpu", sizes={"N": 2})
    per_batch = {k: v // 2 for k, v in CONV_NET_MACS.items()}
    assert coverage.macs_per_kernel == {
        "QLinearConv": 2 * (per_batch["c1"] + per_batch["c2"]),
        "QGemm": 2 * per_batch["y"],
    }
    assert coverage.integer_macs == sum(CONV_NET_MACS.values()) and coverage.float_macs == 0
    assert coverage.uncounted_ops == [] and coverage.verdict == "int8"
    float_coverage = int8_coverage(source, "cpu", sizes={"N": 2})
    # level "all" fuses Conv+Relu into FusedConv; Gemm stays
    assert float_coverage.macs_per_kernel == {
        "FusedConv": CONV_NET_MACS["c1"],
        "Conv": CONV_NET_MACS["c2"],
        "Gemm": CONV_NET_MACS["y"],
    }
    assert math.isclose(float_coverage.total_macs, sum(CONV_NET_MACS.values()))
    assert "CPUExecutionProvider" in ort.get_available_providers()


def test_expose_values_keeps_the_old_calibration_names_and_float_default() -> None:
    # pinned from the removed calibration.augment_with_outputs (a clone, then expose_values)
    from onnxslim.model import expose_values

    m = ir.from_onnx_text(PROBE_MODEL)
    augmented = m.clone()
    expose_values(
        augmented,
        ["x", "r", "inner", "nope"],
        input_suffix="__calibration",
        default_dtype=ir.DataType.FLOAT,
    )
    assert [v.name for v in augmented.graph.outputs] == ["y", "x__calibration", "r"]
    assert augmented.graph.outputs[2].dtype == ir.DataType.FLOAT
    assert [v.name for v in m.graph.outputs] == ["y"]  # the original is untouched


def test_parameter_count_reads_subgraphs_and_every_constant_form() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (bool c, float[2] x) => (float[2] y) <float[3] w = {1.0, 2.0, 3.0}> {
            s = Constant <value_float = 2.0> ()
            v = Constant <value_floats = [1.0, 2.0]> ()
            y = If (c) <
                then_branch = t () => (float[2] a) <float[2] inner = {4.0, 5.0}> {
                    a = Mul (x, inner)
                },
                else_branch = e () => (float[2] b) {
                    k = Constant <value = float[2] {6.0, 7.0}> ()
                    b = Add (x, k)
                }
            >
        }
        """
    )
    # w (3) + value_float (1) + value_floats (2) + the then-branch initializer (2) + the
    # else-branch Constant (2)
    assert parameter_count(model) == 10


def test_onnx_opset_reads_either_default_domain_spelling() -> None:
    from onnxslim.model import onnx_opset

    model = ir.from_onnx_text(
        '<ir_version: 8, opset_import: ["" : 15]> g (float[1] x) => (float[1] y) { y = Relu (x) }'
    )
    assert onnx_opset(model) == 15 and onnx_opset(model.graph) == 15
    model.opset_imports.pop("")
    model.opset_imports["ai.onnx"] = 12
    assert onnx_opset(model) == 12
    model.opset_imports.pop("ai.onnx")
    assert onnx_opset(model) is None
