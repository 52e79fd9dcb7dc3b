"""The one table of passes: stable name -> where its class, options and inspection hooks live.

The engine reaches a concrete pass only through this table (imported on first use), so
``import onnxslim`` stays light and a pass's heavy dependencies (torch) load only when that
pass is used. ``onnxslim.passes`` derives its lazy attributes from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from onnxslim._errors import RecipeError

if TYPE_CHECKING:
    from onnxslim._pass import SlimPass

__all__ = [
    "PASSES",
    "PassEntry",
    "get_options_class",
    "get_pass_class",
    "get_pass_hook",
    "pass_names",
]


@dataclasses.dataclass(frozen=True)
class PassEntry:
    """Where a registered pass lives (``"module:attribute"`` strings, imported lazily).

    Attributes:
        target: The pass class.
        options: Its declared ``Options`` dataclass, in a module light enough for ``--help``.
        hooks: Named inspection helpers, e.g. ``groups`` for ``onnxslim inspect --groups``.
    """

    target: str
    options: str
    hooks: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.split(":")[1]


PASSES: dict[str, PassEntry] = {
    "cleanup": PassEntry(
        "onnxslim.passes._cleanup:Cleanup",
        options="onnxslim.passes._cleanup_options:CleanupOptions",
    ),
    "prune": PassEntry(
        "onnxslim.passes.pruning:StructuredPrune",
        options="onnxslim.passes.pruning._options:PruneOptions",
        hooks={"groups": "onnxslim.passes.pruning:dependency_groups"},
    ),
    "distill": PassEntry(
        "onnxslim.passes.distillation:Distill",
        options="onnxslim.passes.distillation._options:DistillOptions",
    ),
    "quantize": PassEntry(
        "onnxslim.passes.quantization:QuantizeStatic",
        options="onnxslim.passes.quantization._options:QuantizeOptions",
    ),
    "quantize_int4": PassEntry(
        "onnxslim.passes.quantization:QuantizeWeightsInt4",
        options="onnxslim.passes.quantization._int4:Int4Options",
    ),
}


def pass_names() -> list[str]:
    return list(PASSES)


def _resolve(location: str) -> Any:
    module_name, attribute = location.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def _entry(name: str) -> PassEntry:
    if name not in PASSES:
        close = difflib.get_close_matches(name, PASSES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RecipeError(f"unknown pass '{name}'{hint}; valid passes: {', '.join(PASSES)}.")
    return PASSES[name]


def get_pass_class(name: str) -> type[SlimPass]:
    """The pass class registered under ``name``; an unknown name lists the valid ones."""
    return _resolve(_entry(name).target)


def get_options_class(name: str) -> type:
    """The declared ``Options`` dataclass of pass ``name`` (its module is light: no torch)."""
    return _resolve(_entry(name).options)


def get_pass_hook(name: str, hook: str) -> Callable[..., Any]:
    """An inspection helper a pass registers (e.g. ``get_pass_hook("prune", "groups")``)."""
    entry = _entry(name)
    if hook not in entry.hooks:
        raise RecipeError(f"pass '{name}' has no '{hook}' hook; it has: {sorted(entry.hooks)}.")
    return _resolve(entry.hooks[hook])
