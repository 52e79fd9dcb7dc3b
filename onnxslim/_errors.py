"""Error types. A :class:`SlimError` is a user error: one sentence, no traceback, CLI exit 2."""

from __future__ import annotations

__all__ = [
    "SlimError",
    "ModelLoadError",
    "InputDataError",
    "RecipeError",
    "ProviderError",
    "UnsupportedModelError",
    "NothingChangedError",
    "VerificationError",
]


class SlimError(Exception):
    """An error caused by the user's input; its message names the culprit and the fix."""

    exit_code = 2


class ModelLoadError(SlimError):
    """The model file is missing, not ONNX, corrupt, or of an unsupported version."""


class InputDataError(SlimError):
    """Calibration/verification data does not match the model's inputs."""


class RecipeError(SlimError):
    """A recipe or pass option is unknown or has the wrong type."""


class ProviderError(SlimError):
    """An execution provider was asked for and is not available."""


class UnsupportedModelError(SlimError):
    """The model uses something a pass cannot handle (an op, a dtype, a structure)."""


class NothingChangedError(UnsupportedModelError):
    """A lossy pass was asked for a change and made none (``PassContext.refuse_no_op``);
    ``pass_name`` says which, so a front end can name its own options for it."""

    def __init__(self, message: str, pass_name: str) -> None:
        super().__init__(message)
        self.pass_name = pass_name


class VerificationError(SlimError):
    """A pass produced a model that fails verification; the message names the pass."""

    exit_code = 3
