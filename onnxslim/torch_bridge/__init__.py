"""Torch bridge: run an ONNX graph as a trainable ``torch.nn.Module`` and write its weights back.

Needs the ``torch`` extra: ``pip install 'onnxslim[torch]'``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "onnxslim.torch_bridge needs PyTorch; install it with: pip install 'onnxslim[torch]'"
    ) from error

from onnxslim.torch_bridge._export import write_back
from onnxslim.torch_bridge._kernels import KERNELS, UnsupportedKernelError, supported_ops
from onnxslim.torch_bridge._module import OnnxModule

__all__ = ["KERNELS", "OnnxModule", "UnsupportedKernelError", "supported_ops", "write_back"]
