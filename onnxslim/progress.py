"""Progress bars where people wait: calibration, guard candidates, distillation, benchmark rounds.

One door for every long loop, built on ``tqdm`` (small, pure Python, no dependencies of its own,
and it already writes rates and ETAs; ``rich`` would bring a rendering stack for the same bar).
Bars go to stderr on a terminal only: never when stderr is not a TTY, in CI (``CI`` set), or
after ``set_quiet(True)`` (the CLI's ``--quiet`` and ``--debug``). ``ONNXSLIM_PROGRESS=1``
forces them on (for recordings), ``=0`` off. :func:`write` prints a line above open bars.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Task", "enabled", "set_quiet", "task", "track", "write"]

T = TypeVar("T")

_quiet = False
# a known total shows percent, count, elapsed and the ETA spelled out (people look for "ETA")
_BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
    "[{elapsed}, ETA {remaining}{postfix}]"
)
# steps of very unequal length (the pipeline's passes): an ETA from the first would mislead
_NO_ETA_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]"


def set_quiet(quiet: bool) -> None:
    """Turns every bar off (``--quiet``) or back to the terminal default."""
    global _quiet
    _quiet = quiet


def enabled(requested: bool | None = None) -> bool:
    """Whether bars are drawn now: a terminal on stderr, not CI, not quiet (env can force).

    ``requested`` is a caller's own switch (e.g. distillation's ``progress`` option): ``False``
    never draws, ``True`` draws off a terminal too; quiet and ``ONNXSLIM_PROGRESS=0`` still win.
    """
    forced = os.environ.get("ONNXSLIM_PROGRESS", "").strip()
    if _quiet or requested is False or forced == "0":
        return False
    if forced == "1" or requested is True:
        return True
    if os.environ.get("CI"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def _size() -> tuple[int, int] | None:
    """None: follow the terminal's size; 100x20 where it reports 0x0 (a bare pty, a recording),
    on which tqdm draws nothing at all."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return 100, 20
    return None if size.columns > 0 and size.lines > 0 else (100, 20)


def _field(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Task:
    """One running bar; a silent one when bars are off (same calls, nothing drawn)."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str,
        show: bool | None = None,
        eta: bool = True,
    ) -> None:
        self._bar: Any = None
        self._format = _BAR_FORMAT if eta else _NO_ETA_FORMAT
        if enabled(show):
            from tqdm import tqdm

            size = _size()
            self._bar = tqdm(
                total=total,
                desc=description,
                unit=unit,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=size is None,
                ncols=size and size[0],
                nrows=size and size[1],
                mininterval=0.2,
                bar_format=self._format if total else None,
            )

    @property
    def active(self) -> bool:
        """Whether this bar is drawn."""
        return self._bar is not None

    def advance(self, steps: int = 1, **fields: Any) -> None:
        """Moves the bar on by ``steps``; ``fields`` (loss=0.12) show after the bar."""
        if self._bar is None:
            return
        if fields:
            self._bar.set_postfix({k: _field(v) for k, v in fields.items()}, refresh=False)
        self._bar.update(steps)

    def describe(self, **fields: Any) -> None:
        """Updates the fields after the bar without moving it."""
        if self._bar is not None:
            self._bar.set_postfix({k: _field(v) for k, v in fields.items()})

    def set_total(self, total: int) -> None:
        """A total learned late (rounds that fit a time budget): percent and ETA from now on."""
        if self._bar is not None and total != self._bar.total:
            self._bar.total = total
            self._bar.bar_format = self._format
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def task(
    description: str,
    total: int | None = None,
    unit: str = "it",
    *,
    show: bool | None = None,
    eta: bool = True,
) -> Iterator[Task]:
    """``with task("calibration", total=n, unit="sample") as bar: ... bar.advance()``.

    ``show``: the caller's own switch, see :func:`enabled`; ``eta=False`` for steps of very
    unequal length.
    """
    bar = Task(description, total, unit, show, eta)
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


def write(message: str) -> None:
    """One flushed line on stderr, above any open bar (a bare print would tear the bar)."""
    if enabled():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
