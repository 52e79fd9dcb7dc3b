"""Run a model whose weights should not all be resident at once: consecutive node ranges, each
in its own ORT session that is built, run and closed in turn (its mapped weights leave memory)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

__all__ = [
    "SEGMENT_BYTES",
    "SEGMENT_THRESHOLD_BYTES",
    "SegmentedRunner",
    "can_segment",
    "proto_graphs",
    "external_bytes",
    "proto_weight_bytes",
    "segment_nodes",
]

# Models whose external weights exceed this run segment by segment, each segment holding at
# most SEGMENT_BYTES of weights (one larger tensor gets a segment of its own).
SEGMENT_THRESHOLD_BYTES = 1 << 30
SEGMENT_BYTES = 256 << 20


def external_bytes(model: ir.Model) -> int:
    """Bytes of the model's weights stored in external files (memory-mapped, not loaded)."""
    return sum(
        value.const_value.nbytes
        for graph in model.graphs()
        for value in graph.initializers.values()
        if isinstance(value.const_value, ir.ExternalTensor)
    )


@dataclasses.dataclass
class _Segment:
    nodes: list[onnx.NodeProto]
    inputs: list[str]
    outputs: list[str]
    path: Path | None = None  # written at the first run, when the inputs' types are known


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    return tensor.ByteSize()


def proto_weight_bytes(graph: onnx.GraphProto) -> int:
    """Bytes of a graph proto's initializers, external ones by their recorded length."""
    return sum(_tensor_bytes(t) for t in graph.initializer)


def proto_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph below it (If branches, Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from proto_graphs(subgraph)


def can_segment(graph: onnx.GraphProto) -> bool:
    """Segments need a flat graph whose outputs are all node outputs or graph inputs."""
    if any(a.HasField("g") or a.graphs for n in graph.node for a in n.attribute):
        return False
    produced = {name for node in graph.node for name in node.output}
    produced |= {i.name for i in graph.input}
    return all(o.name in produced for o in graph.output)


def segment_nodes(graph: onnx.GraphProto, budget: int) -> list[list[onnx.NodeProto]]:
    """Consecutive node ranges (graph order) each using at most ``budget`` bytes of weights."""
    sizes = {t.name: _tensor_bytes(t) for t in graph.initializer}
    ranges: list[list[onnx.NodeProto]] = [[]]
    held: set[str] = set()
    total = 0
    for node in graph.node:
        new = {name for name in node.input if name in sizes and name not in held}
        extra = sum(sizes[name] for name in new)
        if ranges[-1] and total + extra > budget:
            ranges.append([])
            held, total = set(), 0
            new = {name for name in node.input if name in sizes}
            extra = sum(sizes[name] for name in new)
        ranges[-1].append(node)
        held |= new
        total += extra
    return ranges


class SegmentedRunner:
    """Runs the model at ``path`` (weights external) one segment of ~``budget`` bytes at a time.

    ``session`` builds an ORT session from a model path (the probe's providers and options).
    """

    def __init__(
        self, path: Path, budget: int, session: Callable[[Path], Any], fetch: Sequence[str]
    ) -> None:
        self.folder = path.parent
        self.proto = onnx.load(str(path), load_external_data=False)
        self.session = session
        graph = self.proto.graph
        initializers = {t.name for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in initializers]
        self.outputs = [o.name for o in graph.output]
        ranges = segment_nodes(graph, budget)
        wanted = set(self.outputs) | set(fetch)
        needed_later: list[set[str]] = []
        later: set[str] = set()
        for nodes in reversed(ranges):
            needed_later.append(set(later))
            later |= {name for node in nodes for name in node.input}
        needed_later.reverse()
        self.segments = []
        for nodes, after in zip(ranges, needed_later, strict=True):
            produced = [name for node in nodes for name in node.output if name]
            used = {name for node in nodes for name in node.input if name}
            inputs = sorted(used - set(produced) - initializers)
            outputs = [name for name in produced if name in after or name in wanted]
            self.segments.append(_Segment(nodes, inputs, outputs))

    def _write(self, index: int, segment: _Segment, env: Mapping[str, np.ndarray]) -> Path:
        graph = self.proto.graph
        used = {name for node in segment.nodes for name in node.input}
        declared = {i.name: i for i in graph.input}
        inputs = [
            declared[name]
            if name in declared
            else helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(env[name].dtype), None
            )
            for name in segment.inputs
        ]
        part = helper.make_graph(
            segment.nodes,
            f"{graph.name}-segment-{index}",
            inputs,
            [onnx.ValueInfoProto(name=name) for name in segment.outputs],  # ORT types them
            [t for t in graph.initializer if t.name in used],
        )
        model = helper.make_model(part, opset_imports=self.proto.opset_import)
        model.ir_version = self.proto.ir_version
        path = self.folder / f"segment-{index}.onnx"
        onnx.save(model, str(path))
        return path

    def run(self, feeds: Mapping[str, np.ndarray], fetch: Sequence[str]) -> list[np.ndarray]:
        env = dict(feeds)
        keep = set(fetch)
        for index, segment in enumerate(self.segments):
            if not segment.outputs:  # nothing of it is read later (ORT would return everything)
                continue
            if segment.path is None:
                segment.path = self._write(index, segment, env)
            session = self.session(segment.path)
            values = session.run(segment.outputs, {name: env[name] for name in segment.inputs})
            del session  # closes the segment's weight maps before the next one opens
            env.update(zip(segment.outputs, values, strict=True))
            later = {n for s in self.segments[index + 1 :] for n in s.inputs}
            env = {k: v for k, v in env.items() if k in later or k in keep}
        return [env[name] for name in fetch]
