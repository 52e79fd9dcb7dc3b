"""Streaming activation statistics and threshold search (the readers live in onnxslim.inputs)."""

from onnxslim.calibration._collector import (
    StatisticsCache,
    StatisticsCollector,
    StreamingHistogram,
    TensorStatistics,
    augment_with_outputs,
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

# shim: removed in wave 2 (the readers' home is onnxslim.inputs)
from onnxslim.inputs import (
    BatchedReader as CalibrationReader,
)
from onnxslim.inputs import (
    ImageFolderReader,
    ImagePreprocessing,
    IterableReader,
    NpyFolderReader,
    NpzReader,
    RandomReader,
    open_reader,
    validate_feeds,
)

__all__ = [
    "METHODS",
    "CalibrationReader",
    "ImageFolderReader",
    "ImagePreprocessing",
    "IterableReader",
    "NpyFolderReader",
    "NpzReader",
    "RandomReader",
    "StatisticsCache",
    "StatisticsCollector",
    "StreamingHistogram",
    "TensorStatistics",
    "augment_with_outputs",
    "augment_with_statistics",
    "collect_statistics",
    "compute_range",
    "entropy_threshold",
    "model_fingerprint",
    "mse_range",
    "open_reader",
    "percentile_range",
    "validate_feeds",
]
