"""Progress bars where people wait: calibration, guard candidates, distillation, benchmark rounds.

One door for every long loop, built on ``tqdm`` (small, pure Python, no dependencies of its own,
and it already writes rates and ETAs; ``rich`` would bring a rendering stack for the same bar).
Bars go to stderr on a terminal only: never when stderr is not a TTY, in CI (``CI`` set), or
after ``set_quiet(True)`` (the CLI's ``--quiet``). ``ONNXSLIM_PROGRESS=1`` forces them on (for
recordings), ``=0`` off.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Task", "enabled", "set_quiet", "task", "track"]

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turns every bar off (``--quiet``) or back to the terminal default."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """Whether bars are drawn now: a terminal on stderr, not CI, not quiet (env can force)."""
    forced = os.environ.get("ONNXSLIM_PROGRESS", "").strip()
    if _quiet:
        return False
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CI"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class Task:
    """One running bar; a silent one when bars are off (same calls, nothing drawn)."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self._bar: Any = None
        if enabled():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=description,
                unit=unit,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                mininterval=0.2,
            )

    def advance(self, steps: int = 1, **fields: Any) -> None:
        """Moves the bar on by ``steps``; ``fields`` (loss=0.12) show after the bar."""
        if self._bar is None:
            return
        if fields:
            self._bar.set_postfix(fields, refresh=False)
        self._bar.update(steps)

    def describe(self, **fields: Any) -> None:
        """Updates the fields after the bar without moving it."""
        if self._bar is not None:
            self._bar.set_postfix(fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def task(description: str, total: int | None = None, unit: str = "it") -> Iterator[Task]:
    """``with task("calibration", total=n, unit="sample") as bar: ... bar.advance()``."""
    bar = Task(description, total, unit)
    try:
        yield bar
    finally:
        bar.close()


def track(
    items: Iterable[T], description: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Yields ``items`` while a bar counts them (``total`` from ``len`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total, unit) as bar:
        for item in items:
            yield item
            bar.advance()
