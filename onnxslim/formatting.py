"""How figures are written out: counts (1.23M), byte sizes (4.00 MiB), progress lines, JSON values."""

from __future__ import annotations

from onnxslim._json import json_safe

__all__ = ["human_bytes", "human_count", "json_safe", "progress_to_stderr"]


def human_count(number: float, unit: str = "") -> str:
    """``1234567`` -> ``1.23M`` (k, M, G; decimal scales), ``unit`` appended."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= scale:
            return f"{number / scale:.2f}{suffix}{unit}"
    return f"{number:.0f}{unit}"


def human_bytes(size: float) -> str:
    """``4194304`` -> ``4.00 MiB`` (binary scales)."""
    for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= scale:
            return f"{size / scale:.2f} {suffix}"
    return f"{size:.0f} B"


def progress_to_stderr(message: str) -> None:
    """A ``progress`` callback for ``Pipeline.run``: one flushed line on stderr per event
    (above any open progress bar, see :func:`onnxslim.progress.write`)."""
    from onnxslim.progress import write

    write(message)
