"""The one explicit table of passes: stable name -> pass class (imported on first use).

The engine never imports a concrete pass except through this table, so ``import onnxslim``
stays light and a pass's heavy dependencies (torch) load only when that pass is used.
"""

from __future__ import annotations

import difflib
import importlib

from onnxslim._errors import RecipeError

__all__ = ["PASSES", "get_pass_class", "pass_names"]

PASSES: dict[str, str] = {
    "cleanup": "onnxslim.passes._cleanup:Cleanup",
    "prune": "onnxslim.passes.pruning:StructuredPrune",
    "distill": "onnxslim.passes.distillation:Distill",
    "quantize": "onnxslim.passes.quantization:QuantizeStatic",
}


def pass_names() -> list[str]:
    return list(PASSES)


def get_pass_class(name: str) -> type:
    """The pass class registered under ``name``; an unknown name lists the valid ones."""
    if name not in PASSES:
        close = difflib.get_close_matches(name, PASSES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RecipeError(f"unknown pass '{name}'{hint}; valid passes: {', '.join(PASSES)}.")
    module_name, class_name = PASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
