"""The passes: cleanup, structured pruning, distillation, static int8 quantization.

Imported lazily so that ``from onnxslim.passes import Cleanup`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Cleanup", "StructuredPrune", "Distill", "QuantizeStatic"]

_LOCATIONS = {
    "Cleanup": "onnxslim.passes._cleanup",
    "StructuredPrune": "onnxslim.passes.pruning",
    "Distill": "onnxslim.passes.distillation",
    "QuantizeStatic": "onnxslim.passes.quantization",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'onnxslim.passes' has no attribute {name!r}")
