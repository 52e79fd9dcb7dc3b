"""Model statistics moved to :mod:`onnxslim.model`.

# shim: removed in wave 2 (last caller: onnxslim/cli.py, being rewritten by the lead)
"""

from __future__ import annotations

from onnxslim.model import model_stats

__all__ = ["model_stats"]
