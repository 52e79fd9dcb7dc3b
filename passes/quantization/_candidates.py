"""Candidates: the int8 variants a run tries, as values; which op sets to try; user exclusions."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxslim.fidelity import Fidelity
from onnxslim.model import proto_graphs

__all__ = [
    "COMPUTE_OPS",
    "Candidate",
    "Evaluation",
    "Rejected",
    "candidate_op_sets",
    "quantizable_op_types",
    "select_nodes",
    "unranged_exclusions",
    "user_exclusions",
]

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ELEMENTWISE_OPS = ("Add", "Mul", "Sub", "Div", "Sigmoid", "HardSigmoid", "Resize", "Where", "Pow")

Ranges = Mapping[str, tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class Rejected:
    """Why a candidate was not returned, e.g. "accuracy: output SQNR 12.0 dB < 20 dB"."""

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A candidate's fidelity to the float model and the bound's violations (none: accurate).

    ``logits_sqnr_db`` is the SQNR on the logits where the guard checks logits (outputs made by
    a final Sigmoid/Softmax), else None. ``task_scores``: each task metric's score (metric
    name, with the output it judged -> score).
    """

    fidelity: Fidelity
    problems: tuple[str, ...] = ()
    logits_sqnr_db: float | None = None
    on_logits: bool = False
    task_scores: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def accurate(self) -> bool:
        return not self.problems

    @property
    def score(self) -> float:
        """Higher is better: the logits SQNR where the guard checks logits, else the output SQNR."""
        value = self.fidelity.sqnr_db if self.logits_sqnr_db is None else self.logits_sqnr_db
        if value is None or np.isnan(value):
            return float("-inf")
        return float(value)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One int8 variant: its op types (None: dynamic MatMul/Gemm), file, evaluation, timing."""

    label: str
    op_types: tuple[str, ...] | None
    path: Path
    evaluation: Evaluation
    ranges: Ranges | None = None  # widened ranges; None: the calibrated ones
    excluded: Mapping[str, str] = dataclasses.field(default_factory=dict)  # extra float nodes
    widened: int = 0  # ranges widened back to min/max by the accuracy guard
    # the candidate this one is a latency variant of (its slow int8 kernels in float): ranked
    # ahead of it when timed at least as fast
    variant_of: str | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    speedup_confirmed: float | None = None
    rejected: Rejected | None = None

    @property
    def dynamic(self) -> bool:
        return self.op_types is None

    def replace(self, **changes) -> Candidate:
        return dataclasses.replace(self, **changes)


def quantizable_op_types() -> list[str]:
    """The op types ORT's QDQ quantizer knows how to place Q/DQ around."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def candidate_op_sets(
    proto: onnx.ModelProto, op_types: Sequence[str] | None, mode: str
) -> list[tuple[str, tuple[str, ...] | None]]:
    """(label, op types) to try; op types None means dynamic MatMul quantization."""
    present = {n.op_type for n in proto.graph.node}
    all_ops = tuple(op for op in quantizable_op_types() if op in present)
    if op_types is not None:
        return [("user op types", tuple(op_types))]
    candidates: list[tuple[str, tuple[str, ...] | None]] = []
    if mode in ("auto", "static"):
        candidates.append(("all quantizable ops", all_ops))
        no_elementwise = tuple(op for op in all_ops if op not in ELEMENTWISE_OPS)
        if no_elementwise != all_ops:
            candidates.append(("elementwise ops in float", no_elementwise))
        compute_only = tuple(op for op in all_ops if op in COMPUTE_OPS)
        if compute_only and compute_only != no_elementwise:
            candidates.append(("only Conv/MatMul/Gemm", compute_only))
    graphs = list(proto_graphs(proto.graph))  # dynamic quantization reaches subgraphs too
    initializers = {i.name for graph in graphs for i in graph.initializer}
    has_weight_matmul = any(
        n.op_type in ("MatMul", "Gemm") and any(i in initializers for i in n.input[1:2])
        for graph in graphs
        for n in graph.node
    )
    if mode == "dynamic" or (mode == "auto" and has_weight_matmul):
        candidates.append(("dynamic MatMul/Gemm", None))
    return candidates


def select_nodes(
    graph: onnx.GraphProto, selectors: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Nodes matched by selectors ("name", "re:REGEX", "op:OpType") -> the selector that matched;
    and the selectors that matched nothing."""
    matched: dict[str, str] = {}
    unmatched = []
    for selector in selectors:
        if selector.startswith("re:"):
            pattern = re.compile(selector[3:])
            hits = [n.name for n in graph.node if n.name and pattern.search(n.name)]
        elif selector.startswith("op:"):
            hits = [n.name for n in graph.node if n.op_type == selector[3:]]
        else:
            hits = [n.name for n in graph.node if n.name == selector]
        if not hits:
            unmatched.append(selector)
        for name in hits:
            matched.setdefault(name, selector)
    return matched, unmatched


def user_exclusions(
    proto: onnx.ModelProto, selectors: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Nodes the user keeps in float -> the reason; and a warning per selector matching none."""
    matched, unmatched = select_nodes(proto.graph, selectors)
    excluded = {name: f"excluded by the user ('{selector}')" for name, selector in matched.items()}
    return excluded, [f"exclude selector '{selector}' matches no node" for selector in unmatched]


def unranged_exclusions(
    proto: onnx.ModelProto, names: Sequence[str], ranges: Ranges, already: Mapping[str, str]
) -> dict[str, str]:
    """Nodes touching a calibrated tensor never finite on the data (ORT needs a range for every
    tensor it quantizes) -> the reason."""
    unranged = set(names) - set(ranges)
    return {
        node.name: "no finite calibration values on its tensors (NaN/Inf)"
        for node in proto.graph.node
        if node.name and node.name not in already and unranged & {*node.input, *node.output}
    }
