"""MACs of a whole graph, control-flow bodies included: an If counts its larger branch, a Loop
its body times the trip count, a Scan its body times the sequence length."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from onnxslim.model._macs import ShapeOf, constant_int, node_macs, unknown_reason

__all__ = ["MacCount", "graph_macs"]


@dataclasses.dataclass
class MacCount:
    """MACs of a graph: the total, per node (bodies scaled by how often they run), the nodes of
    unknown shape, and one note per control-flow node whose count is a choice or a guess."""

    total: int = 0
    per_node: dict[str, int] = dataclasses.field(default_factory=dict)
    unknown: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    # node key -> why its MACs are unknown (a missing shape, a negative dim)
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    def merge(self, other: MacCount) -> None:
        self.total += other.total
        self.per_node.update(other.per_node)
        self.unknown += other.unknown
        self.notes += other.notes
        self.reasons.update(other.reasons)


def graph_macs(graph: ir.Graph, shape_of: ShapeOf) -> MacCount:
    """MACs of ``graph`` by :func:`node_macs`, looking inside If/Loop/Scan bodies.

    If: the branch with more MACs (the worst case; a note names it when the branches differ).
    Loop: the body times its trip count ``M`` when that is a constant, else one iteration (a
    note says so). Scan: the body times the length of its first scan input along its scan axis
    (one iteration, with a note, when that length is unknown). Other graph attributes: once.
    """
    count = MacCount()
    _count(graph, shape_of, 1, count, [0])
    return count


def _count(
    graph: ir.Graph, shape_of: ShapeOf, scale: int, count: MacCount, seen: list[int]
) -> None:
    for node in graph:
        seen[0] += 1
        key = node.name or f"{node.op_type}_{seen[0]}"
        bodies = [
            (attribute.name, attribute.as_graph())
            for attribute in node.attributes.values()
            if attribute.type == ir.AttributeType.GRAPH
        ]
        if bodies:
            count.merge(_control_flow(node, key, bodies, shape_of, scale, seen))
            continue
        macs = node_macs(node, shape_of)
        if macs is None:
            count.unknown.append(key)
            count.reasons[key] = unknown_reason(node, shape_of)
        elif macs:
            count.per_node[key] = macs * scale
            count.total += macs * scale


def _body(body: ir.Graph, shape_of: ShapeOf, scale: int, seen: list[int]) -> MacCount:
    count = MacCount()
    _count(body, shape_of, scale, count, seen)
    return count


def _control_flow(
    node: ir.Node,
    key: str,
    bodies: list[tuple[str, ir.Graph]],
    shape_of: ShapeOf,
    scale: int,
    seen: list[int],
) -> MacCount:
    if node.op_type == "If" and node.domain in ("", "ai.onnx") and len(bodies) == 2:
        branches = [(name, _body(body, shape_of, scale, seen)) for name, body in bodies]
        name, larger = max(branches, key=lambda branch: branch[1].total)
        if branches[0][1].total != branches[1][1].total:
            larger.notes.append(f"If '{key}': its larger branch ({name}) counted")
        for _, other in branches:
            if other is not larger:  # an unknown node there might make it the larger one
                larger.unknown += [k for k in other.unknown if k not in larger.unknown]
                larger.reasons.update(other.reasons)
        return larger
    repeats, note = 1, None
    if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
        repeats, note = _trip_count(node, key)
    elif node.op_type == "Scan" and node.domain in ("", "ai.onnx"):
        repeats, note = _scan_length(node, key, shape_of)
    count = MacCount()
    for _, body in bodies:
        count.merge(_body(body, shape_of, scale * repeats, seen))
    if note is not None and count.total:
        count.notes.append(note)
    return count


def _trip_count(node: ir.Node, key: str) -> tuple[int, str | None]:
    value = constant_int(node.inputs[0] if node.inputs else None)
    if value is not None and value >= 0:
        return value, None
    return 1, f"Loop '{key}': trip count not a constant, one iteration counted"


def _scan_length(node: ir.Node, key: str, shape_of: ShapeOf) -> tuple[int, str | None]:
    scan_inputs = node.attributes.get_int("num_scan_inputs", 0)
    first = (
        node.inputs[len(node.inputs) - scan_inputs] if 0 < scan_inputs <= len(node.inputs) else None
    )
    axes = node.attributes.get_ints("scan_input_axes", None) or [0]
    shape = shape_of(first) if first is not None else None
    if shape is not None and len(shape) > 0:
        return int(shape[axes[0] % len(shape)]), None
    return 1, f"Scan '{key}': sequence length unknown, one iteration counted"
