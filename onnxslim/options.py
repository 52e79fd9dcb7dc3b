"""Pass options declared once, as a frozen dataclass, and everything derived from it.

A pass sets ``Options`` to a frozen dataclass whose fields are its options::

    @dataclasses.dataclass(frozen=True)
    class CleanupOptions:
        target_opset: int | None = option(None, help="upgrade to this opset", flag="--opset")

From that one declaration come recipe validation (real type checks: :func:`check_value`),
the report's echo of the options, ``recipe_to_toml`` and the ``onnxslim optimize --help`` text.
The declaration is the only source: a pass without ``Options`` has no options.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from onnxslim._errors import RecipeError

__all__ = [
    "OptionSpec",
    "REQUIRED",
    "add_option_flags",
    "check_value",
    "describe_type",
    "flags_enable",
    "option",
    "option_specs",
    "option_values",
    "options_from_flags",
]

_MISSING: Any = dataclasses.MISSING


class _Required:
    """The default of an option that has none (the user must give it)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def option(
    default: Any = _MISSING,
    *,
    help: str,
    flag: str | None = None,
    metavar: str | None = None,
    enables: bool = False,
) -> Any:
    """A field of a pass's ``Options`` dataclass: default, one-line help, optional CLI flag.

    ``enables``: giving the flag to ``onnxslim optimize`` adds the pass to the pipeline. A bool
    option's flag sets it to False when the flag starts with ``--no-``, else to True.
    """
    metadata = {"help": help, "flag": flag, "metavar": metavar, "enables": enables}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of a pass: its name, resolved type, default (``REQUIRED``: none), help."""

    name: str
    annotation: Any
    default: Any = REQUIRED
    help: str = ""
    flag: str | None = None
    metavar: str | None = None
    enables: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def option_specs(pass_class: type) -> dict[str, OptionSpec]:
    """The options of a pass class (or of an ``Options`` dataclass itself): the declared
    dataclass's fields; none for a pass that declares no ``Options``."""
    declared = (
        pass_class if dataclasses.is_dataclass(pass_class) else getattr(pass_class, "Options", None)
    )
    if declared is None:
        return {}
    hints = typing.get_type_hints(declared)
    return {
        field.name: OptionSpec(
            name=field.name,
            annotation=hints[field.name],
            default=_field_default(field),
            help=field.metadata.get("help", ""),
            flag=field.metadata.get("flag"),
            metavar=field.metadata.get("metavar"),
            enables=field.metadata.get("enables", False),
        )
        for field in dataclasses.fields(declared)
    }


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()  # type: ignore[misc,operator]
    return REQUIRED


def option_values(slim_pass: Any) -> dict[str, Any]:
    """A pass instance's option values for the report and recipes (plain values; else type name)."""
    values = {}
    for name in option_specs(type(slim_pass)):
        if hasattr(slim_pass, name):
            value = getattr(slim_pass, name)
            if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)):
                values[name] = value
            else:
                values[name] = type(value).__name__
    return values


# --- type checks ------------------------------------------------------------------------------

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_MAPPINGS = (dict, collections.abc.Mapping)


class _Refused(Exception):
    """Internal: the value does not fit the annotation (caught inside this module only)."""


def describe_type(annotation: Any) -> str:
    """``list[str]`` -> "a list of str", ``int | None`` -> "NoneType/int", ``Literal`` -> choices."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return "/".join(sorted({describe_type(arg) for arg in args}))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list of {describe_type(item)}"
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        if len(args) == 2 and args[1] is not Any:
            return f"a table of {describe_type(args[1])}"
        return "a table"
    if annotation is type(None):
        return "NoneType"
    return getattr(annotation, "__name__", str(annotation))


def _convert(annotation: Any, value: Any) -> Any:
    """``value`` as ``annotation`` wants it (int -> float, tuple -> list); raises ``_Refused``."""
    if annotation is Any or annotation is object:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        # exact members first so that 3 stays an int in ``int | float``
        for arg in sorted(args, key=lambda a: a is float):
            try:
                return _convert(arg, value)
            except _Refused:
                continue
        raise _Refused
    if origin is typing.Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Refused
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Refused
        item = args[0] if args else Any
        return [_convert(item, element) for element in value]
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise _Refused
        item = args[1] if len(args) == 2 else Any
        return {key: _convert(item, element) for key, element in value.items()}
    if origin is collections.abc.Callable or annotation is collections.abc.Callable:
        if callable(value):
            return value
        raise _Refused
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Refused
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Refused
    if annotation is type(None):
        if value is None:
            return None
        raise _Refused
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Refused
    return value  # a hint this checker does not model (TypeVar, ForwardRef): no check


def check_value(pass_name: str, spec: OptionSpec, value: Any) -> Any:
    """``value`` converted for option ``spec`` of ``pass_name``; a RecipeError naming the option
    and the expected type when it does not fit."""
    try:
        return _convert(spec.annotation, value)
    except _Refused:
        raise RecipeError(
            f"option '{spec.name}' of pass '{pass_name}' expects {describe_type(spec.annotation)}, "
            f"got {type(value).__name__} {value!r}."
        ) from None


# --- CLI --------------------------------------------------------------------------------------


def _dest(pass_name: str, spec: OptionSpec) -> str:
    return f"{pass_name}_{spec.name}"


def _flag_arguments(spec: OptionSpec) -> dict[str, Any]:
    """argparse keywords for an option's flag, from its annotation."""
    union = typing.get_origin(spec.annotation) in (typing.Union, types.UnionType)
    members = [a for a in typing.get_args(spec.annotation) if a is not type(None)] if union else []
    members = members or [spec.annotation]
    if bool in members:
        return {"action": "store_const", "const": not str(spec.flag).startswith("--no-")}
    literal = next((m for m in members if typing.get_origin(m) is typing.Literal), None)
    if literal is not None:
        return {"choices": list(typing.get_args(literal)), "metavar": spec.metavar}
    sequence = next(
        (m for m in members if typing.get_origin(m) in _SEQUENCES or m in _SEQUENCES), None
    )
    if sequence is not None:
        return {"action": "append", "metavar": spec.metavar}
    kind = next((k for k in (int, float, str) if k in members), str)
    return {"type": kind, "metavar": spec.metavar}


def _default_text(spec: OptionSpec) -> str:
    if isinstance(spec.default, bool) and str(spec.flag).startswith("--no-"):
        return " (on by default; this flag turns it off)" if spec.default else ""
    if spec.required or spec.default is None or isinstance(spec.default, bool):
        return ""
    if isinstance(spec.default, (list, tuple)) and not spec.default:
        return ""
    return f" (default {spec.default})"


def add_option_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    pass_name: str,
    pass_class: type,
) -> None:
    """Adds the declared CLI flags of a pass; help text and default come from the declaration."""
    for spec in option_specs(pass_class).values():
        if spec.flag is None:
            continue
        parser.add_argument(
            spec.flag,
            dest=_dest(pass_name, spec),
            default=None,
            help=f"{pass_name}: {spec.help}{_default_text(spec)}".replace("%", "%%"),
            **_flag_arguments(spec),
        )


def options_from_flags(
    args: argparse.Namespace, pass_name: str, pass_class: type
) -> dict[str, Any]:
    """The options a user set through a pass's declared flags (unset flags are left out)."""
    values = {}
    for spec in option_specs(pass_class).values():
        if spec.flag is not None:
            value = getattr(args, _dest(pass_name, spec), None)
            if value is not None:
                values[spec.name] = value
    return values


def flags_enable(args: argparse.Namespace, pass_name: str, pass_class: type) -> bool:
    """Whether the user gave one of the flags that add this pass to the pipeline."""
    return any(
        spec.enables and getattr(args, _dest(pass_name, spec), None) is not None
        for spec in option_specs(pass_class).values()
    )
