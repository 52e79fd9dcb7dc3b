"""Summarize a run: the report's entries for the candidates, the chosen model (its excluded
nodes checked on the graph ORT runs), its tensors."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from onnxslim.model import INTEGER_OPS
from onnxslim.passes.quantization._candidates import Candidate, Evaluation
from onnxslim.passes.quantization._profiles import TargetProfile
from onnxslim.runtime import create_session, session_options

__all__ = [
    "candidates_summary",
    "excluded_reasons",
    "fidelity_summary",
    "float_nodes_after_optimization",
    "optimized_graph",
    "quantized_nodes",
    "start_summary",
    "tensors_summary",
]


def _rounded(value: float | None) -> float | None:
    # floats stay floats (inf included): the pipeline's report encodes non-finite ones once
    return None if value is None else round(float(value), 2)


def fidelity_summary(evaluation: Evaluation) -> dict:
    """The evaluation's fidelity as plain floats, with the logits' SQNR where it was judged on them."""
    values = evaluation.fidelity.as_record()
    if evaluation.on_logits:
        values["logits_sqnr_db"] = _rounded(evaluation.logits_sqnr_db)
    if evaluation.task_scores:
        values["task_scores"] = {k: round(float(v), 4) for k, v in evaluation.task_scores.items()}
    return values


def start_summary(reader: Any, smoke: bool, method: str, profile: TargetProfile) -> dict:
    summary: dict[str, Any] = {
        "data": reader.describe(),
        "smoke_data": smoke,
        "method": method,
        "profile": profile.to_dict(),
        "warnings": list(profile.warnings),
    }
    if smoke:
        summary["warnings"].append("calibrated on random smoke data: not fit for deployment")
    return summary


def candidates_summary(tried: Sequence[Candidate], chosen: int | None) -> list[dict]:
    def rounded(value: float | None) -> float | None:
        return round(value, 3) if value is not None else None

    return [
        {
            "label": c.label,
            "op_types": list(c.op_types) if c.op_types is not None else "dynamic MatMul/Gemm",
            "fidelity": fidelity_summary(c.evaluation),
            "speedup": rounded(c.speedup),
            "speedup_confirmed": rounded(c.speedup_confirmed),
            "extra_float_nodes": len(c.excluded),
            "ranges_widened_to_minmax": c.widened,
            "chosen": index == chosen,
            "rejected": c.rejected.reason if c.rejected is not None else None,
        }
        for index, c in enumerate(tried)
    ]


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _all_nodes(subgraph)


def quantized_nodes(
    before: onnx.ModelProto, after: ir.Model, op_types: Sequence[str] | None
) -> list[str]:
    """Nodes of ``before`` that run quantized in ``after``: fed by a DequantizeLinear (static),
    or replaced by integer ops (dynamic quantization renames MatMul/Gemm)."""
    after_all = list(ir.traversal.RecursiveGraphIterator(after.graph))  # subgraphs' nodes too
    producers = {o.name: n.op_type for n in after_all for o in n.outputs}
    after_nodes = {n.name or "": n for n in after_all}  # the proto's name of an unnamed node
    quantized = []
    for node in _all_nodes(before.graph):
        current = after_nodes.get(node.name)
        if current is None or current.op_type != node.op_type:
            if op_types is None and node.op_type in ("MatMul", "Gemm"):
                quantized.append(node.name)
        elif op_types is not None and any(
            i is not None and producers.get(i.name) == "DequantizeLinear" for i in current.inputs
        ):
            quantized.append(node.name)
    return quantized


def excluded_reasons(
    proto: onnx.ModelProto,
    excluded: Mapping[str, str],
    op_types: Sequence[str] | None,
    static_ops: Sequence[str],
) -> dict[str, str]:
    """Every node kept in float -> why (user, guards, or an op class the latency guard left out)."""
    not_chosen_ops = sorted(
        {
            n.op_type
            for n in proto.graph.node
            if op_types is not None and n.op_type in static_ops and n.op_type not in op_types
        }
    )
    reasons = dict(excluded)
    for node in proto.graph.node:
        if node.op_type in not_chosen_ops and node.name not in reasons:
            reasons[node.name] = f"latency guard: {node.op_type} runs faster in float here"
    return reasons


def tensors_summary(
    ranges: Mapping[str, tuple[float, float]],
    chosen_ranges: Mapping[str, tuple[float, float]],
    method: str,
    tensor_sqnr: Mapping[str, float],
) -> dict[str, dict]:
    return {
        name: {
            "range": [round(lo, 6), round(hi, 6)],
            "method": method
            if chosen_ranges[name] == ranges[name]
            else f"minmax (accuracy guard: {method} clipped too much)",
            "sqnr_db": _rounded(tensor_sqnr.get(name)),
        }
        for name, (lo, hi) in chosen_ranges.items()
    }


def optimized_graph(
    path: str | os.PathLike, workdir: Path, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> onnx.GraphProto:
    """The graph ORT actually runs (after its QDQ fusions), via optimized_model_filepath."""
    target = workdir / (Path(path).stem + ".ort-optimized.onnx")
    options = session_options(optimized_model_path=target, optimization_level="extended")
    create_session(Path(path), providers, options)
    return onnx.load(str(target), load_external_data=False).graph


def float_nodes_after_optimization(
    graph: onnx.GraphProto, node_names: Sequence[str]
) -> dict[str, str]:
    """For each node name: "float" if ORT still runs it as its float op, else the op it became."""
    by_name = {node.name: node.op_type for node in graph.node}
    verdict = {}
    for name in node_names:
        op = by_name.get(name)
        if op is None:
            verdict[name] = "fused or renamed"
        elif op in INTEGER_OPS:
            verdict[name] = op
        else:
            verdict[name] = "float"
    return verdict
