"""Graph-level structured pruning: dependency groups on the ONNX IR, channels/features/heads removed.

Stages: observe shapes and build the view (``analyze``), dependency groups, importance
(``score_groups``), selection (``plan_pruning``), graph surgery (``apply_plan``), summary.
"""

from onnxslim.passes.pruning._analysis import PruneAnalysis, analyze, dependency_groups
from onnxslim.passes.pruning._apply import apply_plan
from onnxslim.passes.pruning._family import Blocked, Family
from onnxslim.passes.pruning._groups import Group
from onnxslim.passes.pruning._handlers import HANDLERS
from onnxslim.passes.pruning._hints import choose_hint_points, read_hints, record_hints
from onnxslim.passes.pruning._importance import score_groups
from onnxslim.passes.pruning._options import PruneOptions
from onnxslim.passes.pruning._plan import Plan, plan_pruning
from onnxslim.passes.pruning._structured_prune import StructuredPrune, cpu_channel_block
from onnxslim.passes.pruning._view import GraphView

__all__ = [
    "HANDLERS",
    "Blocked",
    "Family",
    "GraphView",
    "Group",
    "Plan",
    "PruneOptions",
    "PruneAnalysis",
    "StructuredPrune",
    "analyze",
    "apply_plan",
    "choose_hint_points",
    "cpu_channel_block",
    "dependency_groups",
    "plan_pruning",
    "read_hints",
    "record_hints",
    "score_groups",
]
