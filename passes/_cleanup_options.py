"""Cleanup's declared options (a light module: ``onnxslim optimize --help`` reads it)."""

from __future__ import annotations

import dataclasses

from onnxslim.options import option

__all__ = ["CleanupOptions"]


@dataclasses.dataclass(frozen=True)
class CleanupOptions:
    """Options of the ``cleanup`` pass."""

    target_opset: int | None = option(
        None, help="upgrade to this opset during cleanup", flag="--opset", metavar="N"
    )
    fold_constants: bool = option(True, help="fold constant subgraphs into initializers")
    fuse_batchnorm: bool = option(True, help="fold BatchNormalization into Conv/Gemm")
    shape_inference: bool = option(True, help="annotate shapes after cleanup")
    iterations: int = option(3, help="rounds of the rewrite passes (stops early when stable)")
