"""A one-line progress display for the training loop."""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """A one-line progress display on a terminal (stderr), silent otherwise."""

    def __init__(self, enabled: bool | None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K" + text + "\n")
            sys.stderr.flush()
