"""Streaming activation statistics (sharded over torch.distributed ranks, merged exactly) and
threshold search (the readers live in onnxslim.inputs)."""

from onnxslim.calibration._cache import StatisticsCache, model_fingerprint
from onnxslim.calibration._collector import (
    StatisticsCollector,
    StreamingHistogram,
    TensorStatistics,
    augment_with_statistics,
    collect_statistics,
    merge_collectors,
)
from onnxslim.calibration._distributed import (
    Shard,
    join_launch,
    join_process_group,
    launched_rank,
    leave_if_worker,
    refuse_moving_average,
    writes_outputs,
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
    "Shard",
    "StatisticsCache",
    "StatisticsCollector",
    "StreamingHistogram",
    "TensorStatistics",
    "augment_with_statistics",
    "collect_statistics",
    "compute_range",
    "entropy_threshold",
    "join_launch",
    "join_process_group",
    "launched_rank",
    "leave_if_worker",
    "merge_collectors",
    "model_fingerprint",
    "mse_range",
    "percentile_range",
    "refuse_moving_average",
    "writes_outputs",
]
