"""The op tables: which inputs are weights, which ops compute in integers, which bear MACs."""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir

__all__ = [
    "onnx_opset",
    "WEIGHT_INPUTS",
    "INTEGER_OPS",
    "MAC_OPS",
    "CONV_OPS",
    "CONV_TRANSPOSE_OPS",
    "RECURRENT_OPS",
    "SPECTRAL_OPS",
]

# op -> input slots holding the op's parameters; the FIRST slot is the kernel (Conv W, Gemm and
# MatMul B) whose shape gives the MACs. Scalars there are still weights (a 1-channel bias).
WEIGHT_INPUTS: Mapping[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "FusedConv": (1, 2),
    "NhwcFusedConv": (1, 2),
    "ConvInteger": (1,),
    "QLinearConv": (3, 8),
    "ConvTranspose": (1, 2),
    "QLinearConvTranspose": (3, 8),
    "Gemm": (1, 2, 0),
    "FusedGemm": (1, 2, 0),
    "QGemm": (3, 6),
    "MatMul": (1, 0),
    "FusedMatMul": (1, 0),
    "MatMulInteger": (1,),
    "QLinearMatMul": (3,),
    "MatMulIntegerToFloat": (1, 6),
    "DynamicQuantizeMatMul": (1, 4),
    "MatMulNBits": (1, 5),
    "MatMulBnb4": (1,),
    "BatchNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "PRelu": (1,),
    "Gather": (0,),
}

# weight [M, C/group, k...]: MACs = output elements x prod(weight[1:])
CONV_OPS = frozenset({"Conv", "FusedConv", "NhwcFusedConv", "ConvInteger", "QLinearConv"})
# weight [C, M/group, k...]: MACs = input elements x prod(weight[1:])
CONV_TRANSPOSE_OPS = frozenset({"ConvTranspose", "QLinearConvTranspose"})
GEMM_OPS = frozenset({"Gemm", "FusedGemm", "QGemm"})
MATMUL_OPS = frozenset(
    {
        "MatMul",
        "MatMulInteger",
        "QLinearMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)
# B is packed ([N, blocks, blob]) or transposed: MACs = output elements x A's reduction dim
OUTPUT_REDUCTION_OPS = frozenset({"FusedMatMul", "MatMulNBits", "MatMulBnb4"})
MAC_OPS = CONV_OPS | CONV_TRANSPOSE_OPS | GEMM_OPS | MATMUL_OPS | OUTPUT_REDUCTION_OPS
# X [seq, batch, in] (layout 1: [batch, seq, in]); W [dirs, gates*hidden, in] and R [dirs,
# gates*hidden, hidden] (ORT's DynamicQuantizeLSTM holds them transposed: same element count)
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
# signal [..., length, 1 | 2] -> [..., bins, 2]: MACs = complex bins x length x (2 | 4)
SPECTRAL_OPS = frozenset({"DFT", "STFT"})

# Ops of ORT's optimized graph that compute in integers (MAC-bearing or not).
INTEGER_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearConvTranspose",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearSoftmax",
        "QAttention",
    }
)


def onnx_opset(model: ir.Model | ir.Graph) -> int | None:
    """The default-domain opset a model (or graph) imports ("" or "ai.onnx"); None if neither."""
    imports = model.opset_imports
    version = imports.get("", imports.get("ai.onnx"))
    return None if version is None else int(version)
