"""Parameters and MACs against hand-computed values."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import onnxslim


def model(text: str) -> ir.Model:
    """Parses ONNX text whose graph inputs named like weights (w*, b*, up, dw, heads) become initializers."""
    m = ir.from_onnx_text(text)
    rng = np.random.default_rng(0)
    for value in list(m.graph.inputs):
        if value.name[0] in "wbhdu":
            m.graph.inputs.remove(value)
            shape = [int(d) for d in value.shape]
            data = rng.standard_normal(shape).astype(value.dtype.numpy())
            value.const_value = ir.tensor(data, name=value.name)
            m.graph.register_initializer(value)
    return m


def test_conv_macs_and_parameters() -> None:
    m = model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 3, 32, 32] x, float[8, 3, 3, 3] w, float[8] b) => (float[N, 8, 16, 16] y) {
            y = Conv <strides = [2, 2], pads = [1, 1, 1, 1]> (x, w, b)
        }"""
    )
    stats = onnxslim.model_stats(m, {"N": 2})
    # per output element 3*3*3 MACs; output 2*8*16*16
    assert stats.macs == 2 * 8 * 16 * 16 * 27
    assert stats.parameters == 8 * 27 + 8
    assert stats.nodes == 1


def test_grouped_conv_and_conv_transpose() -> None:
    m = model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1, 8, 10, 10] x, float[8, 1, 3, 3] dw, float[8, 2, 2, 2] up) => (float[1, 4, 20, 20] y) {
            d = Conv <group = 8, pads = [1, 1, 1, 1]> (x, dw)
            y = ConvTranspose <strides = [2, 2], group = 2> (d, up)
        }"""
    )
    stats = onnxslim.model_stats(m)
    depthwise = 8 * 10 * 10 * 9
    # transpose: every input element (8*10*10) scatters to (C_out/group=2)*2*2 outputs
    transpose = 8 * 10 * 10 * 2 * 2 * 2
    assert stats.macs == depthwise + transpose
    assert sorted(stats.macs_per_node.values()) == sorted([depthwise, transpose])


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm(trans_b: int) -> None:
    weight_shape = "10, 64" if trans_b else "64, 10"
    m = model(
        f"""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[B, 64] x, float[{weight_shape}] w, float[10] b) => (float[B, 10] y) {{
            y = Gemm <transB = {trans_b}> (x, w, b)
        }}"""
    )
    assert onnxslim.model_stats(m, {"B": 4}).macs == 4 * 64 * 10


def test_batched_and_attention_matmuls() -> None:
    m = model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[B, S, 32] x, float[32, 32] wq, int64[4] heads) => (float[B, 4, S, 8] y) {
            q = MatMul (x, wq)
            r = Reshape (q, heads)
            t = Transpose <perm = [0, 2, 1, 3]> (r)
            k = Transpose <perm = [0, 1, 3, 2]> (t)
            scores = MatMul (t, k)
            y = MatMul (scores, t)
        }"""
    )
    m.graph.initializers["heads"].const_value = ir.tensor([2, 16, 4, 8], dtype=ir.DataType.INT64)
    stats = onnxslim.model_stats(m, {"B": 2, "S": 16})
    projection = 2 * 16 * 32 * 32
    scores = 2 * 4 * 16 * 8 * 16  # [2,4,16,8] @ [2,4,8,16]
    context = 2 * 4 * 16 * 16 * 8  # [2,4,16,16] @ [2,4,16,8]
    assert stats.macs == projection + scores + context
    assert stats.parameters == 32 * 32  # int64 shape constants are not parameters


def test_input_shape_by_name_overrides_defaults() -> None:
    m = model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 3, H, W] x, float[4, 3, 1, 1] w) => (float[N, 4, H, W] y) {
            y = Conv (x, w)
        }"""
    )
    assert onnxslim.model_stats(m, {"x": [1, 3, 10, 20]}).macs == 4 * 10 * 20 * 3
    with pytest.raises(onnxslim.InputDataError, match="input 'x': given shape"):
        onnxslim.model_stats(m, {"x": [1, 4, 10, 20]})


def test_stats_leave_model_untouched() -> None:
    m = model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 300] x, float[300, 300] w, float[300] b) => (float[N, 300] y) {
            y = Gemm (x, w, b)
        }"""
    )
    before = ir.to_proto(m).SerializeToString()
    onnxslim.model_stats(m, {"N": 3})
    assert ir.to_proto(m).SerializeToString() == before
