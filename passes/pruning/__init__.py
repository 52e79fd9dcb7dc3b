"""Graph-level structured pruning: dependency groups on the ONNX IR, channels/features/heads removed."""

from onnxslim.passes.pruning._structured_prune import (
    PruneAnalysis,
    StructuredPrune,
    analyze,
    cpu_channel_block,
    dependency_groups,
    plan_pruning,
)

__all__ = [
    "PruneAnalysis",
    "StructuredPrune",
    "analyze",
    "cpu_channel_block",
    "dependency_groups",
    "plan_pruning",
]
