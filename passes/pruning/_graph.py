"""Dimension slots and op handlers: how a channel axis travels through each ONNX op.

A slot is ``(value, axis)``. A handler turns one node into *families*: sets of slots whose
elements are tied by index maps (identity, offset, repeat, block). A slot that enters a node
through an axis no family of that node covers blocks its group; unknown ops block everything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)

# Roles of constant slots: a producer cuts the output axis of a weight, a consumer its input
# axis; a param is a per-channel parameter cut along (BN, bias, depthwise weight).
PRODUCER, CONSUMER, PARAM, STAT, ACTIVATION = "producer", "consumer", "param", "stat", "activation"

SlotKey = tuple[ir.Value, int]


@dataclasses.dataclass
class Family:
    """Slots of one node tied together: ``links`` are (member i, member j, indices i, indices j)."""

    members: list[tuple[ir.Value, int, str]]
    links: list[tuple[int, int, np.ndarray, np.ndarray]]
    blocked: str | None = None
    rewrite: Callable[[Any], None] | None = None
    lossy: str | None = None

    def index_of(self, value: ir.Value, axis: int) -> int | None:
        for index, (member, member_axis, _) in enumerate(self.members):
            if member is value and member_axis == axis:
                return index
        return None


def identity(n: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.arange(n)
    return indices, indices


def _through_identity(value: ir.Value | None) -> ir.Value | None:
    # Exporters share one initializer between layers through Identity nodes.
    while (
        value is not None
        and value.producer() is not None
        and value.producer().op_type == "Identity"
    ):
        value = value.producer().inputs[0]
    return value


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant content (initializer, Constant node, or Identity of one), else None."""
    value = _through_identity(value)
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def is_stored_constant(value: ir.Value | None) -> bool:
    """An initializer or the output of a Constant node: something whose content can be cut."""
    if value is None:
        return False
    if value.const_value is not None or value.is_initializer():
        return True
    producer = value.producer()
    return (
        producer is not None
        and producer.op_type == "Constant"
        and producer.domain in ("", "ai.onnx")
    )


def is_constant(value: ir.Value | None) -> bool:
    return is_stored_constant(_through_identity(value))


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """Replaces a constant's content in place (initializer or Constant node)."""
    tensor = ir.tensor(np.ascontiguousarray(array), name=value.name)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        for key in list(producer.attributes):
            del producer.attributes[key]
        producer.attributes["value"] = ir.AttrTensor("value", tensor)
    else:
        value.const_value = tensor
    value.shape = ir.Shape(array.shape)
    value.dtype = ir.DataType.from_numpy(array.dtype)


def new_constant(graph: ir.Graph, array: np.ndarray, hint: str) -> ir.Value:
    """A fresh initializer with a unique name (shape constants are never edited in place)."""
    names = {v.name for v in graph.initializers.values()}
    index, name = 0, f"{hint}_pruned"
    while name in names:
        index += 1
        name = f"{hint}_pruned_{index}"
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
    )
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def observe_shapes(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of every value, from one ORT run with all intermediates as outputs."""
    import onnxruntime as ort

    shapes: dict[str, tuple[int, ...]] = {}
    for value in _all_values(model.graph):
        if value.shape is not None and value.shape.is_static():
            shapes[value.name] = tuple(int(d) for d in value.shape)
    proto = ir.serde.serialize_model(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as error:  # noqa: BLE001 - inference is best effort, ORT below is authoritative
        logger.debug("shape inference failed before observation: %s", error)
    typed = {vi.name: vi for vi in list(proto.graph.value_info)}
    existing = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for name in node.output:
            if name and name not in existing and name in typed:
                proto.graph.output.append(typed[name])
                existing.add(name)
    for info in list(proto.graph.value_info) + list(proto.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes.setdefault(info.name, tuple(d.dim_value for d in dims))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    external_dir = next(
        (
            v.const_value.base_dir
            for v in model.graph.initializers.values()
            if isinstance(v.const_value, ir.ExternalTensor)
        ),
        None,
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            if external_dir is not None and proto.ByteSize() < (1 << 30):
                # external weights (> 2 GB models) are read where they are, not copied
                options.add_session_config_entry(
                    "session.model_external_initializers_file_folder_path", str(external_dir)
                )
                model_source = proto.SerializeToString()
            else:
                model_source = str(Path(folder) / "observe.onnx")
                onnx.save(proto, model_source, save_as_external_data=proto.ByteSize() > (1 << 30))
            session = ort.InferenceSession(
                model_source, options, providers=["CPUExecutionProvider"]
            )
            names = [o.name for o in session.get_outputs()]
            results = session.run(names, dict(feeds))
    except Exception as error:  # noqa: BLE001 - custom ops ORT lacks: fall back to inferred shapes
        logger.warning(
            "could not run the model to observe shapes (%s); using inferred shapes only", error
        )
        names, results = [], []
    for name, array in zip(names, results):
        if isinstance(array, np.ndarray):  # sequence/map values (lists, dicts) have no shape
            shapes[name] = array.shape
    for name, array in feeds.items():
        shapes[name] = tuple(array.shape)
    return shapes


def _all_values(graph: ir.Graph):
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from (v for v in node.outputs if v is not None)


class GraphView:
    """The graph, its concrete shapes and options that handlers read."""

    def __init__(
        self, model: ir.Model, shapes: Mapping[str, tuple[int, ...]], prune_hidden: bool = False
    ):
        self.model = model
        self.graph = model.graph
        self.shapes = dict(shapes)
        self.prune_hidden = prune_hidden
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 13))
        self.graph_inputs = {v for v in self.graph.inputs if not v.is_initializer()}
        self.graph_outputs = set(self.graph.outputs)
        self._families: dict[int, list[Family] | str] = {}

    def shape(self, value: ir.Value | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        array = None
        if is_constant(value):
            array = constant_array(value)
        if array is not None:
            return tuple(array.shape)
        return self.shapes.get(value.name)

    def families(self, node: ir.Node) -> list[Family] | str:
        """All families of ``node``, or a reason string when the node blocks every slot."""
        key = id(node)
        if key not in self._families:
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                domain = f" in domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
                result: list[Family] | str = f"op {node.op_type}{domain} has no pruning handler"
            elif any(self.shape(v) is None for v in node.inputs if v is not None) or any(
                self.shape(v) is None
                for v in node.outputs
                if v is not None and v.uses() or v in self.graph_outputs
            ):
                result = "shapes unknown"
            else:
                try:
                    result = handler(self, node)
                except _Blocked as blocked:
                    result = str(blocked)
            self._families[key] = result
        return self._families[key]


class _Blocked(Exception):
    pass


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _ints(node: ir.Node, attribute: str, input_index: int | None) -> list[int] | None:
    """An int list given as an attribute (old opsets) or as a constant input (new opsets)."""
    attr = node.attributes.get(attribute)
    if attr is not None:
        return list(attr.as_ints())
    if (
        input_index is not None
        and len(node.inputs) > input_index
        and node.inputs[input_index] is not None
    ):
        array = constant_array(node.inputs[input_index])
        if array is None:
            raise _Blocked(f"its '{attribute}' input is not a constant")
        return [int(a) for a in np.atleast_1d(array)]
    return None


# --- handlers ---------------------------------------------------------------------------


def _same_axes(
    view: GraphView, node: ir.Node, inputs: list[int], outputs: list[int], skip=()
) -> list[Family]:
    """Identity families axis by axis across the given inputs/outputs (same rank)."""
    x = node.inputs[inputs[0]]
    rank = len(view.shape(x))
    families = []
    for axis in range(rank):
        if axis in skip:
            continue
        members = [(node.inputs[i], axis, ACTIVATION) for i in inputs if node.inputs[i] is not None]
        members += [
            (node.outputs[o], axis, ACTIVATION) for o in outputs if node.outputs[o] is not None
        ]
        size = view.shape(x)[axis]
        families.append(Family(members, [(0, j, *identity(size)) for j in range(1, len(members))]))
    return families


def unary(view: GraphView, node: ir.Node) -> list[Family]:
    # Extra inputs (Clip min/max, Dropout ratio) are scalars and do not couple.
    return _same_axes(view, node, [0], [0])


def elementwise(view: GraphView, node: ir.Node) -> list[Family]:
    """Broadcasting n-ary op: operands of size 1 on an axis do not couple; constants are params."""
    out = node.outputs[0]
    out_shape = view.shape(out)
    rank = len(out_shape)
    families = []
    for axis in range(rank):
        members = [(out, axis, ACTIVATION)]
        for operand in node.inputs:
            shape = view.shape(operand)
            operand_axis = axis - (rank - len(shape))
            if operand_axis < 0 or (shape[operand_axis] == 1 and out_shape[axis] != 1):
                continue
            role = PARAM if is_constant(operand) else ACTIVATION
            members.append((operand, operand_axis, role))
        families.append(
            Family(members, [(0, j, *identity(out_shape[axis])) for j in range(1, len(members))])
        )
    return families


def where(view: GraphView, node: ir.Node) -> list[Family]:
    return elementwise(view, node)


def batch_norm(view: GraphView, node: ir.Node) -> list[Family]:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    families = []
    for axis in range(rank):
        members = [(x, axis, ACTIVATION), (y, axis, ACTIVATION)]
        if axis == 1:
            roles = (
                [PARAM, PARAM, STAT, STAT]
                if node.op_type == "BatchNormalization"
                else [PARAM, PARAM]
            )
            members += [(v, 0, role) for v, role in zip(node.inputs[1:], roles) if v is not None]
        families.append(
            Family(
                members, [(0, j, *identity(view.shape(x)[axis])) for j in range(1, len(members))]
            )
        )
    return families


def _spatial_preserving(view: GraphView, node: ir.Node, reason: str) -> list[Family]:
    """Batch and channel axes pass through; spatial axes are not slots."""
    families = _same_axes(view, node, [0], [0], skip=range(2, len(view.shape(node.inputs[0]))))
    for axis in range(2, len(view.shape(node.inputs[0]))):
        families.append(
            Family([(node.inputs[0], axis, ACTIVATION)], [], blocked=f"{reason} axis {axis}")
        )
    return families


def pool(view: GraphView, node: ir.Node) -> list[Family]:
    return _spatial_preserving(view, node, "pooling over")


def resize(view: GraphView, node: ir.Node) -> list[Family]:
    in_shape, out_shape = view.shape(node.inputs[0]), view.shape(node.outputs[0])
    families = []
    for axis in range(len(in_shape)):
        if in_shape[axis] != out_shape[axis]:
            families.append(
                Family([(node.inputs[0], axis, ACTIVATION)], [], blocked=f"resizes axis {axis}")
            )
            continue
        family = Family(
            [(node.inputs[0], axis, ACTIVATION), (node.outputs[0], axis, ACTIVATION)],
            [(0, 1, *identity(in_shape[axis]))],
        )
        sizes = node.inputs[3] if len(node.inputs) > 3 else None
        if sizes is not None:
            if constant_array(sizes) is None:
                family.blocked = "its 'sizes' input is computed, not constant"
            else:
                family.rewrite = _rewrite_vector_entry(view, node, 3, axis, node.outputs[0])
        families.append(family)
    return families


def pad(view: GraphView, node: ir.Node) -> list[Family]:
    pads = _ints(node, "pads", 1)
    rank = len(view.shape(node.inputs[0]))
    families = []
    for axis in range(rank):
        if pads and (pads[axis] != 0 or pads[axis + rank] != 0):
            families.append(
                Family([(node.inputs[0], axis, ACTIVATION)], [], blocked=f"pads axis {axis}")
            )
            continue
        families.append(
            Family(
                [(node.inputs[0], axis, ACTIVATION), (node.outputs[0], axis, ACTIVATION)],
                [(0, 1, *identity(view.shape(node.inputs[0])[axis]))],
            )
        )
    return families


def conv(view: GraphView, node: ir.Node) -> list[Family]:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    groups = node.attributes.get_int("group", 1)
    c_in, c_out = view.shape(x)[1], view.shape(y)[1]
    per_group_in, per_group_out = c_in // groups, c_out // groups
    batch = Family([(x, 0, ACTIVATION), (y, 0, ACTIVATION)], [(0, 1, *identity(view.shape(x)[0]))])
    spatial = [
        Family([(x, axis, ACTIVATION)], [], blocked=f"Conv reads spatial axis {axis}")
        for axis in range(2, len(view.shape(x)))
    ]
    w_role = PRODUCER if is_constant(w) else ACTIVATION
    if groups == 1:
        in_family = Family(
            [(x, 1, ACTIVATION), (w, 1, CONSUMER if is_constant(w) else ACTIVATION)],
            [(0, 1, *identity(c_in))],
        )
        out_members = [(y, 1, ACTIVATION), (w, 0, w_role)]
        if bias is not None:
            out_members.append((bias, 0, PARAM))
        out_family = Family(
            out_members, [(0, j, *identity(c_out)) for j in range(1, len(out_members))]
        )
        return [batch, in_family, out_family, *spatial]
    if groups == c_in:
        # Depthwise (channel multiplier m): input c feeds outputs [c*m, (c+1)*m).
        multiplier = c_out // c_in
        members = [(x, 1, ACTIVATION), (y, 1, ACTIVATION), (w, 0, PARAM)]
        repeated = np.repeat(np.arange(c_in), multiplier)
        links = [(0, 1, repeated, np.arange(c_out)), (1, 2, *identity(c_out))]
        if bias is not None:
            members.append((bias, 0, PARAM))
            links.append((1, 3, *identity(c_out)))
        family = Family(members, links, rewrite=_rewrite_group(node, x))
        return [batch, family, *spatial]
    # Grouped: position k within every group is one unit, so each group keeps the same count.
    in_family = Family(
        [(x, 1, ACTIVATION), (w, 1, CONSUMER)],
        [
            (0, 0, np.arange(c_in), np.arange(c_in) % per_group_in),
            (0, 1, np.arange(per_group_in), np.arange(per_group_in)),
        ],
    )
    out_members = [(y, 1, ACTIVATION), (w, 0, w_role)]
    if bias is not None:
        out_members.append((bias, 0, PARAM))
    out_links = [(0, 0, np.arange(c_out), np.arange(c_out) % per_group_out)]
    out_links += [(0, j, *identity(c_out)) for j in range(1, len(out_members))]
    return [batch, in_family, Family(out_members, out_links), *spatial]


def _rewrite_group(node: ir.Node, x: ir.Value) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        node.attributes["group"] = ir.AttrInt64("group", plan.new_size(x, 1))

    return rewrite


def conv_transpose(view: GraphView, node: ir.Node) -> list[Family]:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    if node.attributes.get_int("group", 1) != 1:
        raise _Blocked("grouped ConvTranspose is not handled")
    if node.attributes.get("output_shape") is not None:
        raise _Blocked("ConvTranspose with an explicit output_shape is not handled")
    batch = Family([(x, 0, ACTIVATION), (y, 0, ACTIVATION)], [(0, 1, *identity(view.shape(x)[0]))])
    in_family = Family(
        [(x, 1, ACTIVATION), (w, 0, CONSUMER)], [(0, 1, *identity(view.shape(x)[1]))]
    )
    out_members = [(y, 1, ACTIVATION), (w, 1, PRODUCER)]
    if bias is not None:
        out_members.append((bias, 0, PARAM))
    out_family = Family(
        out_members, [(0, j, *identity(view.shape(y)[1])) for j in range(1, len(out_members))]
    )
    return [batch, in_family, out_family]


def gemm(view: GraphView, node: ir.Node) -> list[Family]:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    trans_a, trans_b = node.attributes.get_int("transA", 0), node.attributes.get_int("transB", 0)
    m, n = view.shape(y)
    k = view.shape(a)[0 if trans_a else 1]
    constant_b = is_constant(b)
    row_members = [(y, 0, ACTIVATION), (a, 1 if trans_a else 0, ACTIVATION)]
    col_members = [
        (y, 1, ACTIVATION),
        (b, 0 if trans_b else 1, PRODUCER if constant_b else ACTIVATION),
    ]
    if c is not None:
        c_shape = view.shape(c)
        if len(c_shape) >= 1 and c_shape[-1] == n and n > 1:
            col_members.append((c, len(c_shape) - 1, PARAM if is_constant(c) else ACTIVATION))
        if len(c_shape) == 2 and c_shape[0] == m and m > 1:
            row_members.append((c, 0, PARAM if is_constant(c) else ACTIVATION))
    k_family = Family(
        [
            (a, 0 if trans_a else 1, ACTIVATION),
            (b, 1 if trans_b else 0, CONSUMER if constant_b else ACTIVATION),
        ],
        [(0, 1, *identity(k))],
    )
    return [
        Family(row_members, [(0, j, *identity(m)) for j in range(1, len(row_members))]),
        Family(col_members, [(0, j, *identity(n)) for j in range(1, len(col_members))]),
        k_family,
    ]


def matmul(view: GraphView, node: ir.Node) -> list[Family]:
    a, b = node.inputs
    y = node.outputs[0]
    a_shape, b_shape, y_shape = view.shape(a), view.shape(b), view.shape(y)
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise _Blocked("MatMul with a 1-D operand is not handled")
    rank = len(y_shape)
    constant_b = is_constant(b)
    families = []
    for axis in range(rank - 2):
        members = [(y, axis, ACTIVATION)]
        for operand, shape in ((a, a_shape), (b, b_shape)):
            operand_axis = axis - (rank - len(shape))
            if operand_axis >= 0 and shape[operand_axis] != 1:
                members.append((operand, operand_axis, ACTIVATION))
        families.append(
            Family(members, [(0, j, *identity(y_shape[axis])) for j in range(1, len(members))])
        )
    families.append(
        Family(
            [(y, rank - 2, ACTIVATION), (a, len(a_shape) - 2, ACTIVATION)],
            [(0, 1, *identity(y_shape[-2]))],
        )
    )
    families.append(
        Family(
            [
                (y, rank - 1, ACTIVATION),
                (b, len(b_shape) - 1, PRODUCER if constant_b else ACTIVATION),
            ],
            [(0, 1, *identity(y_shape[-1]))],
        )
    )
    families.append(
        Family(
            [
                (a, len(a_shape) - 1, ACTIVATION),
                (b, len(b_shape) - 2, CONSUMER if constant_b else ACTIVATION),
            ],
            [(0, 1, *identity(a_shape[-1]))],
        )
    )
    return families


def gather(view: GraphView, node: ir.Node) -> list[Family]:
    data, indices = node.inputs
    out = node.outputs[0]
    data_shape, index_shape = view.shape(data), view.shape(indices)
    axis = _norm_axis(node.attributes.get_int("axis", 0), len(data_shape))
    families = []
    role = PRODUCER if is_constant(data) else ACTIVATION
    for data_axis in range(len(data_shape)):
        if data_axis == axis:
            families.append(
                Family([(data, axis, ACTIVATION)], [], blocked=f"Gather selects along axis {axis}")
            )
            continue
        out_axis = data_axis if data_axis < axis else data_axis + len(index_shape) - 1
        families.append(
            Family(
                [(out, out_axis, ACTIVATION), (data, data_axis, role)],
                [(0, 1, *identity(data_shape[data_axis]))],
            )
        )
    return families


def concat(view: GraphView, node: ir.Node) -> list[Family]:
    out = node.outputs[0]
    out_shape = view.shape(out)
    axis = _norm_axis(node.attributes.get_int("axis", 0), len(out_shape))
    families = []
    for slot_axis in range(len(out_shape)):
        members = [(out, slot_axis, ACTIVATION)]
        links = []
        offset = 0
        for operand in node.inputs:
            size = view.shape(operand)[slot_axis]
            index = len(members)
            # The same tensor twice is one member linked at two offsets.
            existing = next(
                (i for i, (v, a, _) in enumerate(members) if v is operand and a == slot_axis), None
            )
            if existing is None:
                members.append((operand, slot_axis, ACTIVATION))
            else:
                index = existing
            if slot_axis == axis:
                links.append((0, index, np.arange(offset, offset + size), np.arange(size)))
                offset += size
            else:
                links.append((0, index, *identity(size)))
        families.append(Family(members, links))
    return families


def split(view: GraphView, node: ir.Node) -> list[Family]:
    x = node.inputs[0]
    in_shape = view.shape(x)
    axis = _norm_axis(node.attributes.get_int("axis", 0), len(in_shape))
    outputs = [o for o in node.outputs]
    families = []
    for slot_axis in range(len(in_shape)):
        members = [(x, slot_axis, ACTIVATION)] + [(o, slot_axis, ACTIVATION) for o in outputs]
        links = []
        offset = 0
        for j, o in enumerate(outputs, start=1):
            size = view.shape(o)[slot_axis]
            if slot_axis == axis:
                links.append((0, j, np.arange(offset, offset + size), np.arange(size)))
                offset += size
            else:
                links.append((0, j, *identity(size)))
        family = Family(members, links)
        if slot_axis == axis:
            family.rewrite = _rewrite_split(view, node, axis)
            if node.attributes.get("num_outputs") is not None:
                family.blocked = "Split uses num_outputs (equal parts)"
            if (
                len(node.inputs) > 1
                and node.inputs[1] is not None
                and constant_array(node.inputs[1]) is None
            ):
                family.blocked = "its split sizes are computed, not constant"
        families.append(family)
    return families


def _rewrite_split(view: GraphView, node: ir.Node, axis: int) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        sizes = np.array([plan.new_size(o, axis) for o in node.outputs], dtype=np.int64)
        if node.attributes.get("split") is not None:
            node.attributes["split"] = ir.AttrInt64s("split", [int(s) for s in sizes])
        elif len(node.inputs) > 1 and node.inputs[1] is not None:
            node.replace_input_with(
                1, new_constant(view.graph, sizes, node.inputs[1].name or "split")
            )
        else:
            sizes_value = new_constant(view.graph, sizes, f"{node.name}_split")
            if view.opset >= 13:
                node.resize_inputs(2)
                node.replace_input_with(1, sizes_value)
            else:
                node.attributes["split"] = ir.AttrInt64s("split", [int(s) for s in sizes])

    return rewrite


def slice_(view: GraphView, node: ir.Node) -> list[Family]:
    x, y = node.inputs[0], node.outputs[0]
    in_shape = view.shape(x)
    rank = len(in_shape)
    if view.opset < 10 or node.attributes.get("starts") is not None:
        starts, ends, axes, steps = (
            list(node.attributes[k].as_ints()) if k in node.attributes else None
            for k in ("starts", "ends", "axes", "steps")
        )
    else:
        starts, ends = _ints(node, "starts", 1), _ints(node, "ends", 2)
        axes, steps = _ints(node, "axes", 3), _ints(node, "steps", 4)
    axes = [_norm_axis(a, rank) for a in (axes or range(len(starts)))]
    steps = steps or [1] * len(starts)
    families = []
    for slot_axis in range(rank):
        if slot_axis not in axes:
            families.append(
                Family(
                    [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)],
                    [(0, 1, *identity(in_shape[slot_axis]))],
                )
            )
            continue
        position = axes.index(slot_axis)
        selected = np.arange(in_shape[slot_axis])[
            slice(starts[position], ends[position], steps[position])
        ]
        family = Family(
            [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)],
            [(0, 1, selected, np.arange(len(selected)))],
        )
        if steps[position] != 1:
            family.blocked = f"Slice with step {steps[position]} on axis {slot_axis}"
        elif view.opset < 10 or node.attributes.get("starts") is not None:
            family.blocked = "Slice bounds given as attributes are not rewritten"
        else:
            family.rewrite = _rewrite_slice(
                view,
                node,
                x,
                slot_axis,
                position,
                int(selected[0]) if len(selected) else 0,
                len(selected),
            )
        families.append(family)
    return families


def _rewrite_slice(view, node, x, axis, position, start, length) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        removed = plan.removed(x, axis)
        new_start = start - int(np.sum(removed < start))
        new_end = new_start + length - int(np.sum((removed >= start) & (removed < start + length)))
        for input_index, new_value in ((1, new_start), (2, new_end)):
            array = constant_array(node.inputs[input_index]).copy()
            array[position] = new_value
            node.replace_input_with(
                input_index,
                new_constant(view.graph, array, node.inputs[input_index].name or "slice"),
            )

    return rewrite


def transpose(view: GraphView, node: ir.Node) -> list[Family]:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    perm = (
        list(node.attributes["perm"].as_ints())
        if "perm" in node.attributes
        else list(reversed(range(rank)))
    )
    return [
        Family(
            [(x, perm[out_axis], ACTIVATION), (y, out_axis, ACTIVATION)],
            [(0, 1, *identity(view.shape(y)[out_axis]))],
        )
        for out_axis in range(rank)
    ]


def squeeze_unsqueeze(view: GraphView, node: ir.Node) -> list[Family]:
    # Size-1 axes appear or vanish; the other axes keep their order, so pair them by position.
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    in_axes = [a for a, d in enumerate(in_shape) if d != 1]
    out_axes = [a for a, d in enumerate(out_shape) if d != 1]
    if len(in_axes) != len(out_axes):
        raise _Blocked("axes could not be paired")
    return [
        Family([(x, i, ACTIVATION), (y, o, ACTIVATION)], [(0, 1, *identity(in_shape[i]))])
        for i, o in zip(in_axes, out_axes)
    ]


def reshape(view: GraphView, node: ir.Node) -> list[Family]:
    """Follows an axis through Reshape/Flatten: identity, merge (c -> [c*k,(c+1)*k)) or split (heads)."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    families = []
    in_prefix = np.cumprod([1, *in_shape])
    out_prefix = np.cumprod([1, *out_shape])
    for in_axis, size in enumerate(in_shape):
        if size == 1:
            continue
        candidates = [
            b
            for b in range(len(out_shape))
            if out_prefix[b] == in_prefix[in_axis] and out_shape[b] != 1
        ]
        if not candidates:
            families.append(
                Family(
                    [(x, in_axis, ACTIVATION)],
                    [],
                    blocked=f"{node.op_type} merges axis {in_axis} into a preceding axis (channel shuffle or flatten of a leading axis)",
                )
            )
            continue
        out_axis = candidates[0]
        out_size = out_shape[out_axis]
        members = [(x, in_axis, ACTIVATION), (y, out_axis, ACTIVATION)]
        if out_size == size:
            links = [(0, 1, *identity(size))]
        elif (
            out_size % size == 0
            and int(np.prod(in_shape[in_axis:])) % out_size == 0
            and in_prefix[in_axis] * out_size in in_prefix
        ):
            inner = out_size // size
            links = [(0, 1, np.repeat(np.arange(size), inner), np.arange(out_size))]
        elif size % out_size == 0 and out_prefix[out_axis] * size in out_prefix:
            inner = size // out_size
            links = [(0, 1, np.arange(size), np.arange(size) // inner)]
        else:
            families.append(
                Family(
                    [(x, in_axis, ACTIVATION)],
                    [],
                    blocked=f"cannot follow axis {in_axis} from {list(in_shape)} to {list(out_shape)}",
                )
            )
            continue
        family = Family(members, links)
        if node.op_type == "Reshape":
            reason = _target_entry_problem(view, node, out_axis)
            if reason:
                family.blocked = reason
            else:
                family.rewrite = _rewrite_reshape(view, node, out_axis)
        families.append(family)
    return families


def _shape_pieces(view: GraphView, value: ir.Value) -> list[tuple[ir.Node | None, int, int]] | None:
    """For a Concat-built shape: (concat node, input index, position) per target entry."""
    producer = value.producer()
    if producer is None or producer.op_type != "Concat":
        return None
    pieces = []
    for input_index, piece in enumerate(producer.inputs):
        shape = view.shape(piece)
        if shape is None or len(shape) != 1:
            return None
        for offset in range(shape[0]):
            pieces.append((producer, input_index, offset))
    return pieces


def _target_entry_problem(view: GraphView, node: ir.Node, out_axis: int) -> str | None:
    target = node.inputs[1]
    array = constant_array(target)
    if array is not None:
        return None
    pieces = _shape_pieces(view, target)
    if pieces is None or out_axis >= len(pieces):
        return "Reshape target is computed in a way not understood"
    concat_node, input_index, _ = pieces[out_axis]
    piece = concat_node.inputs[input_index]
    piece_array = constant_array(piece)
    if piece_array is None:
        return f"Reshape target entry {out_axis} is computed from shapes"
    return None


def _rewrite_reshape(view: GraphView, node: ir.Node, out_axis: int) -> Callable[[Any], None]:
    def rewrite(plan) -> None:
        y = node.outputs[0]
        new_size = plan.new_size(y, out_axis)
        target = node.inputs[1]
        array = constant_array(target)
        if array is not None:
            if array[out_axis] in (0, -1):
                return
            array = array.copy()
            array[out_axis] = new_size
            node.replace_input_with(1, new_constant(view.graph, array, target.name or "shape"))
            return
        concat_node, input_index, offset = _shape_pieces(view, target)[out_axis]
        piece = concat_node.inputs[input_index]
        piece_array = constant_array(piece).copy()
        if piece_array.reshape(-1)[offset] == -1:
            return
        piece_array.reshape(-1)[offset] = new_size
        concat_node.replace_input_with(
            input_index, new_constant(view.graph, piece_array, piece.name or "shape")
        )

    return rewrite


def flatten(view: GraphView, node: ir.Node) -> list[Family]:
    return reshape(view, node)


def _reduced_axes(view: GraphView, node: ir.Node, rank: int) -> list[int]:
    axes = _ints(
        node,
        "axes",
        1 if (view.opset >= 18 or node.op_type == "ReduceSum" and view.opset >= 13) else None,
    )
    if not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(_norm_axis(a, rank) for a in axes)


def reduce(view: GraphView, node: ir.Node) -> list[Family]:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [_norm_axis(node.attributes.get_int("axis", 0), rank)]
        keepdims = node.attributes.get_int("keepdims", 1)
    else:
        axes = _reduced_axes(view, node, rank)
        keepdims = node.attributes.get_int("keepdims", 1)
    families = []
    for axis in range(rank):
        if axis in axes:
            families.append(
                Family(
                    [(x, axis, ACTIVATION)], [], blocked=f"{node.op_type} reduces over axis {axis}"
                )
            )
            continue
        out_axis = axis if keepdims else axis - sum(1 for a in axes if a < axis)
        families.append(
            Family(
                [(x, axis, ACTIVATION), (y, out_axis, ACTIVATION)],
                [(0, 1, *identity(view.shape(x)[axis]))],
            )
        )
    return families


def softmax(view: GraphView, node: ir.Node) -> list[Family]:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    axis = _norm_axis(node.attributes.get_int("axis", -1 if view.opset >= 13 else 1), rank)
    # Before opset 13 Softmax flattens every axis from `axis` on into one.
    normalized = {axis} if view.opset >= 13 else set(range(axis, rank))
    families = []
    for slot_axis in range(rank):
        if slot_axis in normalized:
            families.append(
                Family(
                    [(x, slot_axis, ACTIVATION)],
                    [],
                    blocked=f"{node.op_type} normalizes over axis {slot_axis}",
                )
            )
        else:
            families.append(
                Family(
                    [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)],
                    [(0, 1, *identity(view.shape(x)[slot_axis]))],
                )
            )
    return families


def layer_norm(view: GraphView, node: ir.Node) -> list[Family]:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(view.shape(x))
    axis = _norm_axis(node.attributes.get_int("axis", -1), rank)
    families = []
    for slot_axis in range(rank):
        members = [(x, slot_axis, ACTIVATION), (y, slot_axis, ACTIVATION)]
        size = view.shape(x)[slot_axis]
        if slot_axis < axis:
            families.append(Family(members, [(0, 1, *identity(size))]))
            continue
        param_axis = slot_axis - axis
        for param, role in zip(node.inputs[1:], (PARAM, PARAM)):
            if (
                param is not None
                and view.shape(param)[param_axis - (rank - axis - len(view.shape(param)))] != 1
            ):
                members.append((param, len(view.shape(param)) - (rank - slot_axis), role))
        family = Family(
            members,
            [(0, j, *identity(size)) for j in range(1, len(members))],
            lossy="LayerNormalization normalizes over it",
        )
        if not view.prune_hidden:
            family.blocked = f"LayerNormalization normalizes over axis {slot_axis} (hidden-size pruning is off: prune_hidden=True)"
        families.append(family)
    return families


def shape_op(view: GraphView, node: ir.Node) -> list[Family]:
    """Shape is harmless when every reader picks entries other than the slot's axis."""
    x = node.inputs[0]
    rank = len(view.shape(x))
    start = _norm_axis(node.attributes.get_int("start", 0), rank)
    end_attr = node.attributes.get("end")
    end = _norm_axis(end_attr.as_int(), rank) if end_attr is not None else rank
    read: set[int] = set()
    for user, _ in node.outputs[0].uses():
        if user.op_type == "Gather" and constant_array(user.inputs[1]) is not None:
            read.update(
                start + _norm_axis(int(i), end - start)
                for i in np.atleast_1d(constant_array(user.inputs[1]))
            )
        elif user.op_type == "Slice" and all(
            constant_array(v) is not None for v in user.inputs[1:3]
        ):
            begin, stop = (
                int(constant_array(user.inputs[1])[0]),
                int(constant_array(user.inputs[2])[0]),
            )
            read.update(start + a for a in range(end - start)[slice(begin, stop)])
        else:
            read.update(range(start, end))
    return [
        Family([(x, axis, ACTIVATION)], [], blocked=f"Shape reads axis {axis}")
        if axis in read
        else Family([(x, axis, ACTIVATION)], [])
        for axis in range(rank)
    ]


def tile(view: GraphView, node: ir.Node) -> list[Family]:
    """Axes repeated once pass through; a repeated size-1 axis (GQA's repeat_interleave) is no slot."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = view.shape(x), view.shape(y)
    families = []
    for axis, size in enumerate(in_shape):
        if size == out_shape[axis]:
            families.append(
                Family([(x, axis, ACTIVATION), (y, axis, ACTIVATION)], [(0, 1, *identity(size))])
            )
        elif size != 1:
            families.append(
                Family([(x, axis, ACTIVATION)], [], blocked=f"Tile repeats axis {axis}")
            )
    return families


def _blocker(reason: str) -> Callable[[GraphView, ir.Node], list[Family]]:
    def handler(view: GraphView, node: ir.Node) -> list[Family]:
        raise _Blocked(reason)

    return handler


def _rewrite_vector_entry(
    view: GraphView, node: ir.Node, input_index: int, position: int, value: ir.Value
):
    def rewrite(plan) -> None:
        array = constant_array(node.inputs[input_index]).copy()
        array[position] = plan.new_size(value, position)
        node.replace_input_with(
            input_index, new_constant(view.graph, array, node.inputs[input_index].name or "sizes")
        )

    return rewrite


UNARY_OPS = (
    "Relu LeakyRelu PRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Tanh Clip Gelu Erf Sqrt Exp Log "
    "Abs Neg Reciprocal Softplus Softsign Mish Cast Identity Dropout Floor Ceil Round Sign Not IsNaN "
    "IsInf Sin Cos ThresholdedRelu Shrink Swish"
).split()
ELEMENTWISE_OPS = "Add Sub Mul Div Pow Max Min Sum Mean Equal Greater Less GreaterOrEqual LessOrEqual And Or Xor Where Mod".split()
POOL_OPS = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool".split()
REDUCE_OPS = "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceSumSquare ArgMax ArgMin".split()

HANDLERS: dict[str, Callable[[GraphView, ir.Node], list[Family]]] = {
    **{op: unary for op in UNARY_OPS},
    **{op: elementwise for op in ELEMENTWISE_OPS},
    **{op: pool for op in POOL_OPS},
    **{op: reduce for op in REDUCE_OPS},
    "PRelu": elementwise,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": batch_norm,
    "Resize": resize,
    "Upsample": resize,
    "Pad": pad,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "Gather": gather,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Transpose": transpose,
    "Squeeze": squeeze_unsqueeze,
    "Unsqueeze": squeeze_unsqueeze,
    "Reshape": reshape,
    "Flatten": flatten,
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Hardmax": softmax,
    "LayerNormalization": layer_norm,
    "Shape": shape_op,
    "Tile": tile,
    "DepthToSpace": _blocker("DepthToSpace moves channels into space"),
    "SpaceToDepth": _blocker("SpaceToDepth moves space into channels"),
    "If": _blocker("control flow (If) is not followed"),
    "Loop": _blocker("control flow (Loop) is not followed"),
    "Scan": _blocker("control flow (Scan) is not followed"),
    "QuantizeLinear": _blocker("the graph is already quantized (QuantizeLinear)"),
    "DequantizeLinear": _blocker("the graph is already quantized (DequantizeLinear)"),
    "GroupNormalization": _blocker("GroupNormalization normalizes over channel groups"),
}


def macs_of_node(view: GraphView, node: ir.Node) -> int:
    """Multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul at the observed shapes."""
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or node.domain not in ("", "ai.onnx"):
        return 0
    shapes = [view.shape(v) for v in node.inputs[:2]] + [view.shape(node.outputs[0])]
    if any(s is None for s in shapes):
        return 0
    x_shape, w_shape, y_shape = shapes
    if op == "Conv":
        return math.prod(y_shape) * math.prod(w_shape[1:])
    if op == "ConvTranspose":
        return math.prod(x_shape) * math.prod(w_shape[1:])
    if op == "Gemm":
        k = x_shape[0] if node.attributes.get_int("transA", 0) else x_shape[1]
        return math.prod(y_shape) * k
    return math.prod(y_shape) * x_shape[-1]
