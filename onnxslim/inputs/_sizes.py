"""The one ``--shape`` argument parser: ``name=1x3x224x224`` / ``name=1,3,224,224`` or ``dim=8``."""

from __future__ import annotations

import argparse
import re

from onnxslim._errors import InputDataError

__all__ = ["SizeArgumentError", "parse_size_argument"]


class SizeArgumentError(InputDataError, argparse.ArgumentTypeError):
    """A malformed ``--shape`` value; argparse prints it as is (usable as an argparse ``type``)."""


def parse_size_argument(text: str) -> tuple[str, int | list[int]]:
    """``name=v`` -> ``(name, v)``; ``name=v,v,v`` or ``name=vxvxv`` -> ``(name, [v, v, v])``.

    A name is an input (its full shape) or a symbolic dim (its size). Sizes are positive integers.

    Raises:
        SizeArgumentError: an InputDataError (and argparse.ArgumentTypeError) naming the value.
    """
    name, sep, dims = text.partition("=")
    name, dims = name.strip(), dims.strip()
    if not sep or not name or not dims:
        raise SizeArgumentError(
            f"--shape '{text}': write NAME=1x3x224x224 (an input) or DIM=8 (a symbolic dim)."
        )
    parts = re.split(r"[x,]", dims.lower())
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise SizeArgumentError(
            f"--shape '{text}': sizes must be integers separated by 'x' or ','."
        ) from None
    if any(value <= 0 for value in values):
        raise SizeArgumentError(f"--shape '{text}': sizes must be positive.")
    return name, values if len(parts) > 1 else values[0]
