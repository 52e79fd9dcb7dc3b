"""Recipes: a pipeline as TOML. Unknown passes, keys and options are errors listing valid ones."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxslim._errors import RecipeError
from onnxslim._pass import SlimPass
from onnxslim.fidelity import FidelityBounds
from onnxslim.options import check_value
from onnxslim.registry import get_pass_class

__all__ = ["Recipe", "load_recipe", "parse_recipe", "build_pass", "recipe_to_toml"]

_TOP_LEVEL_KEYS = {"passes", "bounds", "sizes", "verify", "num_samples", "providers"}
# a recipe cannot hold a callable: the metric is Python-API only
_BOUND_FIELDS = tuple(f.name for f in dataclasses.fields(FidelityBounds) if f.name != "metric")
_BOUND_KEYS = set(_BOUND_FIELDS)


@dataclasses.dataclass
class Recipe:
    """A parsed recipe: pass instances plus pipeline settings."""

    passes: list[SlimPass]
    bounds: FidelityBounds = dataclasses.field(default_factory=FidelityBounds)
    sizes: dict[str, Any] = dataclasses.field(default_factory=dict)
    verify: bool = True
    num_samples: int = 4
    providers: list[str] | None = None


def build_pass(name: str, options: Mapping[str, Any]) -> SlimPass:
    """Instantiates a registered pass from recipe options, validating names and types."""
    pass_class = get_pass_class(name)
    valid = pass_class.options()
    checked = {}
    for option, value in options.items():
        if option not in valid:
            raise RecipeError(
                f"unknown option '{option}' for pass '{name}'; valid options: {', '.join(valid) or '(none)'}."
            )
        checked[option] = check_value(name, valid[option], value)
    try:
        return pass_class(**checked)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"pass '{name}': {error}") from None


def parse_recipe(document: Mapping[str, Any], source: str = "recipe") -> Recipe:
    unknown = sorted(set(document) - _TOP_LEVEL_KEYS)
    if unknown:
        raise RecipeError(
            f"{source}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(_TOP_LEVEL_KEYS))}."
        )
    entries = document.get("passes")
    if not isinstance(entries, list) or not entries:
        raise RecipeError(f"{source}: needs at least one [[passes]] table with a 'name'.")
    passes = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise RecipeError(
                f"{source}: pass #{index} has no 'name'; write name = \"cleanup\" etc."
            )
        options = {k: v for k, v in entry.items() if k != "name"}
        passes.append(build_pass(str(entry["name"]), options))
    bounds = document.get("bounds", {})
    if not isinstance(bounds, Mapping):
        raise RecipeError(f"{source}: 'bounds' must be a table.")
    bad = sorted(set(bounds) - _BOUND_KEYS)
    if bad:
        raise RecipeError(
            f"{source}: unknown bound(s) {bad}; valid bounds: {', '.join(sorted(_BOUND_KEYS))}."
        )
    for key, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{source}: bound '{key}' must be a number, got {value!r}.")
    verify = document.get("verify", True)
    if not isinstance(verify, bool):
        raise RecipeError(f"{source}: 'verify' must be true or false, got {verify!r}.")
    num_samples = document.get("num_samples", 4)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise RecipeError(
            f"{source}: 'num_samples' must be a positive integer, got {num_samples!r}."
        )
    sizes = document.get("sizes", {})
    if not isinstance(sizes, Mapping):
        raise RecipeError(f"{source}: 'sizes' must be a table of dim or input name -> size.")
    providers = document.get("providers")
    if providers is not None and not (
        isinstance(providers, list) and all(isinstance(p, str) for p in providers)
    ):
        raise RecipeError(f"{source}: 'providers' must be a list of provider names.")
    return Recipe(
        passes=passes,
        bounds=FidelityBounds(**{str(k): float(v) for k, v in bounds.items()}),  # type: ignore[arg-type]
        sizes=dict(sizes),
        verify=verify,
        num_samples=num_samples,
        providers=providers,
    )


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Reads a TOML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found.")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: not valid TOML ({error}).") from None
    return parse_recipe(document, source=str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def recipe_to_toml(passes: list[SlimPass], bounds: FidelityBounds | None = None) -> str:
    """The TOML recipe equivalent to a list of passes (options with TOML-representable values)."""
    lines = []
    if bounds is not None:
        set_bounds = {
            key: getattr(bounds, key) for key in _BOUND_FIELDS if getattr(bounds, key) is not None
        }
        if set_bounds:
            lines.append("[bounds]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in set_bounds.items()]
            lines.append("")
    for slim_pass in passes:
        lines.append("[[passes]]")
        lines.append(f'name = "{slim_pass.name}"')
        for key, value in slim_pass.config().items():
            if value is None:
                continue
            try:
                lines.append(f"{key} = {_toml_value(value)}")
            except TypeError:
                continue
        lines.append("")
    return "\n".join(lines)
