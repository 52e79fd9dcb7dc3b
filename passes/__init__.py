"""The passes: cleanup, structured pruning, distillation, static int8 quantization.

Imported lazily so that ``from onnxslim.passes import Cleanup`` does not load torch. The
class names and their modules come from the one pass table, ``onnxslim.registry.PASSES``.
"""

from __future__ import annotations

import importlib
from typing import Any

from onnxslim.registry import PASSES

_MODULES = {entry.class_name: entry.module for entry in PASSES.values()}

__all__ = list(_MODULES)  # Cleanup, StructuredPrune, Distill, QuantizeStatic


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'onnxslim.passes' has no attribute {name!r}")
