"""The training loop's progress: one bar over every step, with epoch, loss, fidelity and ETA.

The loop hands over its status lines (``update`` per batch, ``done`` per validated epoch); the
figures are read back from them, so the loop's calls stay as they are. Drawn through
``onnxslim.progress``: on a terminal only, never with ``--quiet``, in CI or when not a TTY.
"""

from __future__ import annotations

import re

from onnxslim import progress

__all__ = ["Progress"]

# "distill epoch 2/5 batch 3/10 loss 0.1234", as the loop writes it after each step
_STEP = re.compile(r"epoch (\d+)/(\d+) batch (\d+)/(\d+|\?) loss (\S+)")
# "distill epoch 2/5 loss 0.1234 max|Δ| 0.5, SQNR 21.3 dB, top-1 99.0%", after validation
_EPOCH = re.compile(r"epoch (\d+)/(\d+) loss (\S+)\s*(.*)")
_SQNR = re.compile(r"SQNR (\S+) dB")


class Progress:
    """A bar over the run's steps on a terminal (stderr), silent otherwise.

    ``enabled``: ``None`` draws where ``onnxslim.progress`` draws (a terminal), ``True`` also
    off a terminal (quiet still wins), ``False`` never (ranks other than 0).
    """

    def __init__(self, enabled: bool | None):
        self.enabled = progress.enabled(enabled)
        self._show = enabled
        self._bar: progress.Task | None = None
        self._first_epoch = 1
        self._per_epoch: int | None = None
        self._position = 0
        self._fidelity = ""

    def _open(self, epoch: int, epochs: int, per_epoch: int | None) -> progress.Task:
        if self._bar is None:
            self._first_epoch, self._per_epoch = epoch, per_epoch
            total = (epochs - epoch + 1) * per_epoch if per_epoch else None
            self._bar = progress.Task("distill", total, "step", self._show)
        return self._bar

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        match = _STEP.search(text)
        if match is None:
            self._open(1, 1, None).describe(status=text)
            return
        epoch, epochs, batch = int(match[1]), int(match[2]), int(match[3])
        per_epoch = None if match[4] == "?" else int(match[4])
        bar = self._open(epoch, epochs, per_epoch)
        position = (epoch - self._first_epoch) * (self._per_epoch or 0) + batch
        if not self._per_epoch:  # unknown epoch length: count steps as they come
            position = self._position + 1
        fields = {"epoch": f"{epoch}/{epochs}", "loss": match[5]}
        if self._fidelity:
            fields["SQNR"] = self._fidelity
        bar.advance(max(position - self._position, 0), **fields)
        self._position = position

    def done(self, text: str) -> None:
        if not self.enabled:
            return
        match = _EPOCH.search(text)
        sqnr = _SQNR.search(text)
        if sqnr is not None:
            self._fidelity = f"{sqnr[1]} dB"
        progress.write(text)  # one lasting line per validated epoch, above the bar
        if match is not None and self._bar is not None:
            self._bar.describe(epoch=f"{match[1]}/{match[2]}", loss=match[3], SQNR=self._fidelity)
            if int(match[1]) >= int(match[2]):
                self._bar.close()
                self._bar = None
