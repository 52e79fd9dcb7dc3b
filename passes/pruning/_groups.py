"""Dependency groups: slots reached from each producer, element-level union into prunable units."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.model import WEIGHT_INPUTS
from onnxslim.passes.pruning._family import (
    ACTIVATION,
    CONSUMER,
    PARAM,
    PRODUCER,
    STAT,
    Family,
)
from onnxslim.passes.pruning._handlers_recurrent import recurrent_state
from onnxslim.passes.pruning._ir import is_constant, is_stored_constant
from onnxslim.passes.pruning._view import GraphView

_PRODUCER_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"}
_RECURRENT_OPS = {"LSTM", "GRU", "RNN"}  # hidden units seed from W's gate rows


@dataclasses.dataclass
class Slot:
    value: ir.Value
    axis: int
    size: int
    role: str
    offset: int = 0  # first element id in the group's element space
    # Nodes reading a per-channel parameter: it gets its own cut copy, so sharing never couples.
    users: list = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.value.name}[{self.axis}]"


@dataclasses.dataclass(frozen=True)
class Block:
    """Why some slots cannot change size: ``cause`` (no node names or digits, counted when
    nothing is pruned), ``text`` (the reason as reported, ``node (Op): why``) and the keys of the
    slots that must keep their size; none when the whole group is at fault."""

    cause: str
    text: str
    slots: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass
class Segment:
    """Units that appear in exactly the same slots: rounding applies to each segment."""

    units: np.ndarray
    step: int


@dataclasses.dataclass
class Group:
    """Slots tied together; ``unit_of[slot index]`` maps each slot element to a unit id."""

    index: int
    slots: list[Slot]
    nodes: list[ir.Node]
    blocks: list[Block]  # what blocks the whole group
    rewrites: list
    lossy: list[str]
    unit_of: list[np.ndarray] = dataclasses.field(default_factory=list)
    num_units: int = 0
    segments: list[Segment] = dataclasses.field(default_factory=list)
    ignored: str | None = None
    # Units kept whole because a slot they reach cannot change size (a Concat part read by a
    # graph output); the other units stay prunable. ``pinned_by``: those slots' blocks.
    pinned: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    pinned_by: list[Block] = dataclasses.field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [block.text for block in self.blocks]

    @property
    def prunable(self) -> bool:
        free = self.num_units - len(self.pinned)
        return not self.blocks and self.ignored is None and self.num_units > 1 and free > 0

    @property
    def producers(self) -> list[Slot]:
        return [s for s in self.slots if s.role == PRODUCER]

    def describe(self) -> dict:
        return {
            "group": self.index,
            "size": self.num_units,
            "prunable": self.prunable,
            "reasons": list(self.reasons) + ([self.ignored] if self.ignored else []),
            "kept_whole": {
                "units": len(self.pinned),
                "reasons": list(dict.fromkeys(b.text for b in self.pinned_by)),
            },
            "producers": [s.label for s in self.producers],
            "members": [s.label for s in self.slots],
            "lossy": sorted(set(self.lossy)),
        }


class _UnionFind:
    def __init__(self, size: int):
        self.parent = np.arange(size)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union_many(self, a: np.ndarray, b: np.ndarray) -> None:
        for i, j in zip(a.tolist(), b.tolist()):
            ri, rj = self.find(i), self.find(j)
            if ri != rj:
                self.parent[max(ri, rj)] = min(ri, rj)


def _node_label(node: ir.Node) -> str:
    return f"{node.name or '<unnamed>'} ({node.op_type})"


def build_groups(view: GraphView) -> list[Group]:
    """Every dependency group reachable from a producer's output axis, blocked or not."""
    groups: list[Group] = []
    visited: set[tuple[int, int]] = set()
    for node in ir.traversal.RecursiveGraphIterator(view.graph):  # bodies of If/Loop/Scan too
        seed = _seed(view, node)
        if seed is None or (id(seed[0]), seed[1]) in visited:
            continue
        groups.append(_explore(view, seed, len(groups), visited))
    _block_shared_slots(groups)
    return groups


def _block_shared_slots(groups: list[Group]) -> None:
    """An activation axis reached by two groups (e.g. both parts of a merged Reshape axis) would
    be cut twice by unrelated plans: both groups block."""
    owners: dict[tuple[int, int], list[Group]] = {}
    for group in groups:
        for slot in group.slots:
            if slot.role == ACTIVATION:
                owners.setdefault((id(slot.value), slot.axis), []).append(group)
    for key, sharing in owners.items():
        if len(sharing) > 1 and sum(not g.blocks for g in sharing) > 1:
            label = next(s.label for s in sharing[0].slots if (id(s.value), s.axis) == key)
            for group in sharing:
                others = ", ".join(str(g.index) for g in sharing if g is not group)
                text = f"'{label}' is also in group {others}"
                group.blocks.append(Block("an axis shared with another group", text))


def _seed(view: GraphView, node: ir.Node) -> tuple[ir.Value, int] | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in _RECURRENT_OPS:
        w, r = node.inputs[1], node.inputs[2]
        if w is None or not (is_constant(w) and is_constant(r)):
            return None
        return w, 1
    if node.op_type not in _PRODUCER_OPS:
        return None
    y = node.outputs[0]
    shape = view.shape(y)
    if shape is None or len(shape) < 2:
        return None
    # the producer's kernel (its weight input): channels are cut along its output axis
    kernel = node.inputs[WEIGHT_INPUTS[node.op_type][0]]
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        return (y, 1) if is_constant(kernel) else None
    if node.op_type == "MatMul":
        weight_shape = view.shape(kernel)
        return (y, len(shape) - 1) if is_constant(kernel) and len(weight_shape) == 2 else None
    if (
        is_constant(kernel)
        and len(view.shape(kernel)) == 2
        and node.attributes.get_int("axis", 0) == 0
    ):
        return (y, len(shape) - 1)
    return None


def _explore(view: GraphView, seed: tuple[ir.Value, int], index: int, visited: set) -> Group:
    slots: dict[tuple[int, int], Slot] = {}
    families: list[tuple[Family, ir.Node]] = []
    seen_families: set[tuple[int, int]] = set()
    blocks: list[Block] = []
    nodes: list[ir.Node] = []
    queue: list = []
    rewrites: list = []  # declared shapes of the KV cache inputs/outputs the cut resizes

    def add_slot(value: ir.Value, axis: int, role: str, user: ir.Node | None = None) -> None:
        key = (id(value), axis)
        leaf = role in (PARAM, STAT) and is_constant(value)
        if key in slots:
            slot = slots[key]
            if leaf and slot.role in (PARAM, STAT):
                slot.users.append(user)
            elif role in (PRODUCER, CONSUMER) and slot.role == ACTIVATION:
                slot.role = role
            return
        slots[key] = Slot(value, axis, int(view.shape(value)[axis]), role)
        if leaf:
            slots[key].users.append(user)
        else:
            queue.append((value, axis, role))

    add_slot(seed[0], seed[1], ACTIVATION)
    while queue:
        value, axis, _ = queue.pop()
        key = (id(value), axis)
        visited.add(key)
        blocks.extend(Block(c, t, (key,)) for c, t in _boundary(view, value, axis, rewrites))
        touching = [user for user, _ in value.uses()]
        producer = value.producer()
        if producer is not None and not is_stored_constant(value):  # Constant, ConstantOfShape
            touching.append(producer)
        for node in touching:
            if node.graph is not value.graph and not is_constant(value):
                # an activation captured by a body: both branches would have to be cut alike
                text = (
                    f"{view.subgraph_label(node.graph) or _node_label(node)} reads "
                    f"'{value.name}' inside a subgraph (control flow): a captured value of an "
                    "enclosing graph is not followed"
                )
                blocks.append(Block("a value captured by a subgraph", text, (key,)))
                continue
            result = view.families(node)
            if isinstance(result, str):
                blocks.append(Block(_cause(node, result), f"{_node_label(node)}: {result}", (key,)))
                continue
            matching = [f for f in result if f.index_of(value, axis) is not None]
            if not matching:
                text = f"{_node_label(node)}: axis {axis} of '{value.name}' is not followed"
                blocks.append(Block(f"{node.op_type} not following the axis", text, (key,)))
                continue
            # A merged Reshape axis is in two families (outer, inner): the one entered through holds.
            if any((id(node), id(f)) in seen_families for f in matching):
                continue
            family = matching[0]
            seen_families.add((id(node), id(family)))
            nodes.append(node)
            families.append((family, node))
            if family.blocked:  # the node as a whole: every slot of the family keeps its size
                members = tuple((id(v), a) for v, a, _ in family.members)
                text = f"{_node_label(node)}: {family.blocked}"
                blocks.append(Block(_cause(node, family.blocked), text, members))
            for member_value, member_axis, role in family.members:
                add_slot(member_value, member_axis, role, node)
    group = Group(
        index=index,
        slots=list(slots.values()),
        nodes=nodes,
        blocks=[],
        rewrites=[f.rewrite for f, _ in families if f.rewrite is not None] + rewrites,
        lossy=[f"{_node_label(n)}: {f.lossy}" for f, n in families if f.lossy],
    )
    _build_units(group, slots, families)
    _pin_or_block(group, blocks)
    return group


def _cause(node: ir.Node, reason: str) -> str:
    """A handler's reason as a cause counted across nodes: numbers read N, the op named."""
    generic = re.sub(r"\d+", "N", str(reason))
    return generic if node.op_type in generic else f"{node.op_type}: {generic}"


def _pin_or_block(group: Group, blocks: list[Block]) -> None:
    """A blocked slot keeps its size when none of its units is cut: those units are pinned and
    the rest of the group stays prunable; when every unit is pinned, the group is blocked."""
    position = {(id(s.value), s.axis): i for i, s in enumerate(group.slots)}
    pinned = np.unique(
        np.concatenate(
            [np.zeros(0, np.int64)]
            + [group.unit_of[position[k]] for b in blocks for k in b.slots if k in position]
        )
    )
    unique: dict[str, Block] = {}
    for b in blocks:
        unique.setdefault(b.text, b)  # the first block of each text, in the order found
    whole = any(not b.slots or any(k not in position for k in b.slots) for b in blocks)
    if whole or len(pinned) >= group.num_units:
        group.blocks = list(unique.values())
    else:
        group.pinned, group.pinned_by = pinned.astype(np.int64), list(unique.values())


def _boundary(view: GraphView, value: ir.Value, axis: int, rewrites: list) -> list[tuple[str, str]]:
    """Why ``value`` cannot change size at a graph's edge, as (cause, text); a KV cache is
    resized instead."""
    boundary = value in view.graph_inputs or value in view.graph_outputs
    if boundary and is_cache(value, axis):
        rewrites.append(_resize_declared(value, axis))
        return _body_boundary(view, value)
    if value in view.graph_inputs:
        return [("a graph input", f"'{value.name}' is a graph input"), *_body_boundary(view, value)]
    if value in view.graph_outputs:
        return [
            ("a graph output", f"'{value.name}' is a graph output"),
            *_body_boundary(view, value),
        ]
    return _body_boundary(view, value)


def _body_boundary(view: GraphView, value: ir.Value) -> list[tuple[str, str]]:
    """Why ``value`` cannot change size at the edge of an If/Loop/Scan body (its owner's inputs
    and outputs keep their shapes), or nothing for values inside a body or the main graph."""
    graph = value.graph
    label = view.subgraph_label(graph)
    if graph is None or label is None:
        return []
    if value in graph.inputs:
        return [("a subgraph input", f"'{value.name}' is an input of {label}")]
    if value in graph.outputs:
        return [("a subgraph output", f"'{value.name}' is an output of {label}")]
    return []


_CACHE_NAMES = re.compile(r"past|present|cache", re.IGNORECASE)


def is_cache(value: ir.Value, axis: int) -> bool:
    """A decoder's KV cache (``past_key_values.*`` in, ``present.*`` out), or a recurrent op's
    state named ``*state*`` (a streaming model's), off its batch axis: the caller feeds back what
    the pruned model returns, so its head (hidden) axis may shrink."""
    name = value.name or ""
    if axis == 0 or not name:
        return False
    return _CACHE_NAMES.search(name) is not None or (
        "state" in name.lower() and recurrent_state(value)
    )


def _resize_declared(value: ir.Value, axis: int):
    def rewrite(plan) -> None:
        if value.shape is not None and axis < len(value.shape):
            dims = list(value.shape.dims)
            dims[axis] = plan.new_size(value, axis)
            value.shape = ir.Shape(dims)

    return rewrite


def _build_units(group: Group, slots: dict, families: list[tuple[Family, ir.Node]]) -> None:
    offset = 0
    for slot in group.slots:
        slot.offset = offset
        offset += slot.size
    union = _UnionFind(offset)
    for family, _ in families:
        for i, j, indices_i, indices_j in family.links:
            slot_i = slots[(id(family.members[i][0]), family.members[i][1])]
            slot_j = slots[(id(family.members[j][0]), family.members[j][1])]
            union.union_many(indices_i + slot_i.offset, indices_j + slot_j.offset)
    roots = np.array([union.find(e) for e in range(offset)], dtype=np.int64)
    # Units are numbered by their first appearance in the seed's output slot, so unit i is channel i there.
    _, unit_ids = np.unique(roots, return_inverse=True)
    order: dict[int, int] = {}
    for u in unit_ids.tolist():
        order.setdefault(u, len(order))
    renumber = np.array([order[u] for u in range(len(order))])
    unit_ids = renumber[unit_ids]
    group.num_units = len(order)
    group.unit_of = [unit_ids[s.offset : s.offset + s.size] for s in group.slots]
    group.segments = []


def make_segments(group: Group, round_to: int) -> None:
    """Partitions units by slot membership; each segment's step keeps every slot a multiple of round_to."""
    pinned = set(group.pinned.tolist())
    signature: dict[int, list[int]] = {u: [] for u in range(group.num_units) if u not in pinned}
    counts: dict[tuple[int, int], int] = {}
    for slot_index, units in enumerate(group.unit_of):
        for unit, count in zip(*np.unique(units, return_counts=True)):
            if int(unit) in pinned:
                continue
            signature[int(unit)].append(slot_index)
            counts[(slot_index, int(unit))] = int(count)
    by_signature: dict[tuple, list[int]] = {}
    for unit, slot_indices in signature.items():
        by_signature.setdefault(tuple(slot_indices), []).append(unit)
    segments = []
    for member_slots, members in by_signature.items():
        step = 1
        if round_to > 1:
            # Only weight slots matter for kernels: a head is one unit but dh weight columns.
            for slot_index in (i for i in member_slots if is_constant(group.slots[i].value)):
                multiplicity = math.gcd(*(counts[(slot_index, u)] for u in members))
                step = math.lcm(step, round_to // math.gcd(round_to, multiplicity))
        segments.append(Segment(np.array(sorted(members)), step))
    group.segments = segments


def apply_ignores(groups: Sequence[Group], ignore: Iterable[str]) -> None:
    """Marks groups touching a node that matches a name, a regex or an op type as ignored."""
    patterns = list(ignore or [])
    for group in groups:
        for node in group.nodes:
            pattern = next(
                (
                    p
                    for p in patterns
                    if node.op_type == p
                    or node.name == p
                    or (node.name and re.fullmatch(p, node.name))
                ),
                None,
            )
            if pattern is not None:
                group.ignored = f"ignored by '{pattern}' ({_node_label(node)})"
                break
