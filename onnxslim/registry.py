"""The one table of passes: stable name -> where its class, options and inspection hooks live.

The engine reaches a concrete pass only through this table (imported on first use), so
``import onnxslim`` stays light and a pass's heavy dependencies (torch) load only when that
pass is used. ``onnxslim.passes`` derives its lazy attributes from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from onnxslim._errors import RecipeError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from onnxslim._pass import SlimPass

__all__ = [
    "PASSES",
    "PassEntry",
    "describe_summary",
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
        describe: ``describe(summary: dict) -> list[str]``: the pass's summary as a few lines
            for people (the CLI's and the HTML report's story); ``None``: a pointer to the JSON.
    """

    target: str
    options: str
    hooks: Mapping[str, str] = dataclasses.field(default_factory=dict)
    describe: str | None = None

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
        describe="onnxslim.passes._cleanup_describe:describe",
    ),
    "prune": PassEntry(
        "onnxslim.passes.pruning:StructuredPrune",
        options="onnxslim.passes.pruning._options:PruneOptions",
        hooks={"groups": "onnxslim.passes.pruning:dependency_groups"},
        describe="onnxslim.passes.pruning._describe:describe",
    ),
    "distill": PassEntry(
        "onnxslim.passes.distillation:Distill",
        options="onnxslim.passes.distillation._options:DistillOptions",
        describe="onnxslim.passes.distillation._describe:describe",
    ),
    "prune_distill": PassEntry(
        "onnxslim.passes._gradual:PruneDistill",
        options="onnxslim.passes._gradual:PruneDistillOptions",
        describe="onnxslim.passes._gradual_describe:describe",
    ),
    "quantize": PassEntry(
        "onnxslim.passes.quantization:QuantizeStatic",
        options="onnxslim.passes.quantization._options:QuantizeOptions",
        describe="onnxslim.passes.quantization._describe:describe",
    ),
    "quantize_int4": PassEntry(
        "onnxslim.passes.quantization:QuantizeWeightsInt4",
        options="onnxslim.passes.quantization._int4:Int4Options",
        describe="onnxslim.passes.quantization._describe_int4:describe",
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


def describe_summary(name: str, summary: Mapping[str, Any]) -> list[str]:
    """Pass ``name``'s summary as lines for people, by the pass's ``describe`` hook.

    Never raises: an unknown pass, a pass without the hook, or a hook failing on a summary it
    does not know yet all give one line pointing at the JSON report (which has every key).
    """
    if not summary:
        return []
    entry = PASSES.get(name)
    if entry is not None and entry.describe is not None:
        try:
            lines = [str(line) for line in _resolve(entry.describe)(summary)]
            if lines:
                return lines
        except Exception:  # a summary's story must never fail the run it describes
            logger.debug("describe hook of pass '%s' failed", name, exc_info=True)
    return [f"{len(summary)} figure(s) in the JSON report (--report)."]
