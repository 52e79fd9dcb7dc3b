"""The handler table, in one place: which function tells how each ONNX op moves a channel axis.

A handler returns the node's families, or ``Blocked(reason)`` when it cannot follow the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxslim.passes.pruning._family import Blocked, Handler, HandlerResult
from onnxslim.passes.pruning._handlers_conv import conv, conv_transpose
from onnxslim.passes.pruning._handlers_dims import expand
from onnxslim.passes.pruning._handlers_elementwise import (
    batch_norm,
    elementwise,
    layer_norm,
    pad,
    pool,
    resize,
    unary,
)
from onnxslim.passes.pruning._handlers_matmul import gather, gemm, matmul
from onnxslim.passes.pruning._handlers_recurrent import recurrent
from onnxslim.passes.pruning._handlers_reduce import reduce, softmax
from onnxslim.passes.pruning._handlers_shape import (
    concat,
    flatten,
    reshape,
    shape_op,
    slice_,
    split,
    squeeze_unsqueeze,
    tile,
    transpose,
)

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView


def blocker(reason: str) -> Handler:
    """A handler for an op that always blocks, with ``reason``."""

    def handler(view: GraphView, node: ir.Node) -> HandlerResult:
        return Blocked(reason)

    return handler


UNARY_OPS = (
    "Relu LeakyRelu PRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Tanh Clip Gelu Erf Sqrt Exp Log "
    "Abs Neg Reciprocal Softplus Softsign Mish Cast Identity Dropout Floor Ceil Round Sign Not IsNaN "
    "IsInf Sin Cos ThresholdedRelu Shrink Swish"
).split()
ELEMENTWISE_OPS = "Add Sub Mul Div Pow Max Min Sum Mean Equal Greater Less GreaterOrEqual LessOrEqual And Or Xor Where Mod".split()
POOL_OPS = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool".split()
REDUCE_OPS = "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin".split()

HANDLERS: dict[str, Handler] = {
    **{op: unary for op in UNARY_OPS},
    **{op: elementwise for op in ELEMENTWISE_OPS},
    **{op: pool for op in POOL_OPS},
    **{op: reduce for op in REDUCE_OPS},
    "PRelu": elementwise,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": batch_norm,
    "Resize": resize,
    "Upsample": resize,
    "Pad": pad,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "Gather": gather,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Transpose": transpose,
    "Squeeze": squeeze_unsqueeze,
    "Unsqueeze": squeeze_unsqueeze,
    "Reshape": reshape,
    "Flatten": flatten,
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Hardmax": softmax,
    "LayerNormalization": layer_norm,
    "Shape": shape_op,
    "Tile": tile,
    "Expand": expand,
    "LSTM": recurrent,
    "GRU": recurrent,
    "RNN": recurrent,
    "DepthToSpace": blocker("DepthToSpace moves channels into space"),
    "SpaceToDepth": blocker("SpaceToDepth moves space into channels"),
    # Channels inside a body are followed there (groups seed in bodies too); a value passed
    # through the node itself (a Loop/Scan carried state or scanned input) is not.
    "If": blocker("control flow (If): its outputs keep the size its branches return"),
    "Loop": blocker("control flow (Loop): carried and scanned values are not followed"),
    "Scan": blocker("control flow (Scan): carried and scanned values are not followed"),
    "QuantizeLinear": blocker("the graph is already quantized (QuantizeLinear)"),
    "DequantizeLinear": blocker("the graph is already quantized (DequantizeLinear)"),
    "GroupNormalization": blocker("GroupNormalization normalizes over channel groups"),
}
