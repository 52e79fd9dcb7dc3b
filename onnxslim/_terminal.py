"""What reaches the user's terminal during a command: our messages and bars, no foreign log.

ONNX Runtime's C++ log goes through Python logging (``onnxslim.ort``); third-party Python
logging (onnxscript, onnx_ir, torch, ORT's quantization tools, ``warnings``) at WARNING or
below is dropped. ``--debug`` shows everything: ORT's warnings too, every logger at DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["terminal"]

_FORMAT = "%(levelname)s %(name)s: %(message)s"
# loggers that format expensive records nobody sees: muted at the source unless --debug
_NOISY = ("onnxscript", "onnx_ir", "torch", "onnxruntime")


def _ours(record: logging.LogRecord) -> bool:
    """A record of onnxslim's own (ORT's forwarded C++ log is not: it is ORT talking)."""
    name = record.name
    return (name == "onnxslim" or name.startswith("onnxslim.")) and not name.startswith(
        "onnxslim.ort"
    )


class _TerminalHandler(logging.Handler):
    """stderr, written above any open progress bar; foreign records only above WARNING."""

    def __init__(self, debug: bool) -> None:
        super().__init__(logging.DEBUG if debug else logging.WARNING)
        self.debug = debug
        self.setFormatter(logging.Formatter(_FORMAT))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.debug or _ours(record) or record.levelno > logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        from onnxslim.progress import write

        try:
            write(self.format(record))
        except Exception:  # a log line must never end the command
            self.handleError(record)


@contextlib.contextmanager
def terminal(*, debug: bool, quiet: bool) -> Iterator[None]:
    """Logging, ORT's log and progress bars set for one command; all restored on exit."""
    from onnxslim import progress
    from onnxslim.runtime import ort_log_to_python, set_log_severity

    root = logging.getLogger()
    handler = _TerminalHandler(debug)
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    # torch installs its own stderr handler and stops propagation: route through ours instead
    muted = {}
    for name in _NOISY:
        logger = logging.getLogger(name)
        muted[name] = (logger.level, logger.propagate, list(logger.handlers))
        for own in muted[name][2]:
            logger.removeHandler(own)
        logger.propagate = True
        logger.setLevel(logging.DEBUG if debug else logging.ERROR)
    logging.captureWarnings(True)  # warnings.warn (torch's, onnx's) become py.warnings records
    # the bars would tear between debug lines; --debug's log is its own progress
    progress.set_quiet(quiet or debug)
    severity = set_log_severity(2 if debug else 3)
    try:
        with warnings.catch_warnings(), ort_log_to_python(2 if debug else 3):
            if not debug:
                warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        set_log_severity(severity)
        progress.set_quiet(False)
        logging.captureWarnings(False)
        for name, (level, propagate, handlers) in muted.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate
            for own in handlers:
                logger.addHandler(own)
        root.removeHandler(handler)
        root.setLevel(previous_level)
