"""Old home of :mod:`onnxslim.fidelity`."""

# shim: removed in wave 2
from onnxslim.fidelity import (  # noqa: F401
    Fidelity,
    FidelityBounds,
    compare_outputs,
    decisive_top1_agreement,
    looks_like_scores,
    sqnr_db,
)

__all__ = [
    "Fidelity",
    "FidelityBounds",
    "compare_outputs",
    "decisive_top1_agreement",
    "looks_like_scores",
    "sqnr_db",
]
