"""Registry of torch kernels for ONNX ops: ``(op_type) -> builder(node, opset) -> callable(*inputs)``.

A builder reads the node's attributes once (at module construction) and returns a callable
that takes the node's inputs as tensors (``None`` for omitted optional inputs) and returns a
tensor or a tuple of tensors. Attribute combinations a kernel cannot honour raise
:class:`UnsupportedKernelError` at construction time, never mid-training.
"""

from __future__ import annotations

# Importing each family module registers its kernels in the one KERNELS table.
from onnxslim.torch_bridge import (  # noqa: F401
    _kernels_control,
    _kernels_elementwise,
    _kernels_nn,
    _kernels_quant,
    _kernels_recurrent,
    _kernels_reduce,
    _kernels_resize,
    _kernels_shape,
)
from onnxslim.torch_bridge._kernels_shape import constant_value
from onnxslim.torch_bridge._registry import (
    KERNELS,
    Builder,
    UnsupportedKernelError,
    supported_ops,
    torch_dtype,
)

__all__ = [
    "KERNELS",
    "Builder",
    "UnsupportedKernelError",
    "constant_value",
    "supported_ops",
    "torch_dtype",
]
