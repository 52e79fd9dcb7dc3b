"""Model statistics moved to :mod:`onnxslim.model`.

# shim: removed in wave 2 (callers: onnxslim/__init__, cli, _pipeline, quantization)
"""

from __future__ import annotations

from onnxslim.model import ModelStats, model_stats
from onnxslim.model import inferred_shapes as infer_value_shapes

__all__ = ["ModelStats", "model_stats", "infer_value_shapes"]
