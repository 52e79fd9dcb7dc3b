"""Streaming activation statistics and threshold search (the readers live in onnxslim.inputs)."""

from onnxslim.calibration._collector import (
    StatisticsCache,
    StatisticsCollector,
    StreamingHistogram,
    TensorStatistics,
    augment_with_statistics,
    collect_statistics,
    model_fingerprint,
)
from onnxslim.calibration._thresholds import (
    METHODS,
    compute_range,
    entropy_threshold,
    mse_range,
    percentile_range,
)

__all__ = [
    "METHODS",
    "StatisticsCache",
    "StatisticsCollector",
    "StreamingHistogram",
    "TensorStatistics",
    "augment_with_statistics",
    "collect_statistics",
    "compute_range",
    "entropy_threshold",
    "model_fingerprint",
    "mse_range",
    "percentile_range",
]
