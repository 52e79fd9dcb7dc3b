"""The torch import for the builders, at call time, so ``onnxslim.testing`` imports without torch."""

from __future__ import annotations

from typing import Any


def _torch() -> Any:
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("these builders need torch: pip install 'onnxslim[torch]'") from error
    return torch
