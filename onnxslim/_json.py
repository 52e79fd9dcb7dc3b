"""The one JSON encoding of report values: non-finite floats become "inf", "-inf", "nan".

Records keep real floats; this runs only at the JSON edge (``Report.to_dict`` and friends).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_float", "json_safe"]


def json_float(value: float | None) -> float | str | None:
    """``value`` unchanged when finite (or None), else "inf", "-inf" or "nan"."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def json_safe(value: Any) -> Any:
    """``value`` with dict keys as strings, tuples as lists, numpy scalars and paths as plain
    values, and non-finite floats as strings; everything else unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, (float, np.floating)):
        return json_float(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
