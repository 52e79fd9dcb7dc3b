"""QDQ emission of a model too big to hold: ORT's quantizer runs on one node range at a time
(only that range's float weights in memory, its int8 weights written to disk at once), and the
quantized ranges are stitched back into one graph that references their data files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import helper

from onnxslim.model import segment_nodes

__all__ = ["emit_in_segments"]


def _part(
    skeleton: onnx.ModelProto, nodes: list[onnx.NodeProto], later: set[str]
) -> onnx.ModelProto:
    """The sub-model of ``nodes``: inputs and outputs typed from the shape-inferred skeleton."""
    graph = skeleton.graph
    declared = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    initializers = {t.name: t for t in graph.initializer}
    used = {name for node in nodes for name in node.input if name}
    produced = [name for node in nodes for name in node.output if name]
    wanted = later | {o.name for o in graph.output}
    inputs = sorted(used - set(produced) - set(initializers))
    outputs = [name for name in produced if name in wanted]
    if any(name not in declared for name in [*inputs, *outputs]):
        raise ValueError("a value crossing segments has no inferred type")
    values = used | set(produced)
    part = helper.make_graph(
        nodes,
        graph.name,
        [declared[name] for name in inputs],
        [declared[name] for name in outputs],
        [initializers[name] for name in sorted(used & set(initializers))],
        value_info=[v for v in graph.value_info if v.name in values],
    )
    model = helper.make_model(part, opset_imports=skeleton.opset_import)
    model.ir_version = skeleton.ir_version
    model.metadata_props.extend(skeleton.metadata_props)  # ORT's "shapes inferred" mark
    return model


def _rename_clashes(part: onnx.GraphProto, taken: set[str], shared: set[str], suffix: str) -> None:
    """Names ORT made in two parts (e.g. the Q/DQ of a value both sides quantize) get a suffix."""
    own = {name for node in part.node for name in node.output} | {t.name for t in part.initializer}
    clashes = {name: f"{name}{suffix}" for name in own - shared if name in taken}
    for node in part.node:
        node.input[:] = [clashes.get(name, name) for name in node.input]
        node.output[:] = [clashes.get(name, name) for name in node.output]
        if node.name in taken:
            node.name = f"{node.name}{suffix}"
    for tensor in part.initializer:
        tensor.name = clashes.get(tensor.name, tensor.name)
    for value in part.value_info:
        value.name = clashes.get(value.name, value.name)


def emit_in_segments(
    skeleton: onnx.ModelProto,
    output: Path,
    budget: int,
    quantize: Callable[[onnx.ModelProto, Path], None],
    load_weights: Callable[[onnx.ModelProto], None],
) -> Path:
    """Quantizes ``skeleton`` (weights on disk) range by range with ``quantize(part, path)``
    and writes the stitched model at ``output``; the parts' data files stay beside it."""
    ranges = segment_nodes(skeleton.graph, budget)
    later_inputs: list[set[str]] = []
    seen: set[str] = set()
    for nodes in reversed(ranges):
        later_inputs.append(set(seen))
        seen |= {name for node in nodes for name in node.input}
    later_inputs.reverse()
    stitched = onnx.ModelProto()
    stitched.CopyFrom(skeleton)
    graph = stitched.graph
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    taken: set[str] = {i.name for i in graph.input}
    for index, (nodes, later) in enumerate(zip(ranges, later_inputs, strict=True)):
        part = _part(skeleton, nodes, later)
        load_weights(part)
        path = output.with_name(f"{output.stem}.part{index}.onnx")
        quantize(part, path)  # ORT writes the part's weights to <part>.onnx.data
        del part
        quantized = onnx.load(str(path), load_external_data=False)
        shared = {i.name for i in quantized.graph.input}
        _rename_clashes(quantized.graph, taken, shared, f"_seg{index}")
        graph.node.extend(quantized.graph.node)
        graph.initializer.extend(quantized.graph.initializer)
        known = {v.name for v in graph.value_info}
        graph.value_info.extend(v for v in quantized.graph.value_info if v.name not in known)
        taken |= {name for node in quantized.graph.node for name in [*node.output, node.name]}
        taken |= {t.name for t in quantized.graph.initializer}
        for opset in quantized.opset_import:
            if opset.domain not in {o.domain for o in stitched.opset_import}:
                stitched.opset_import.append(opset)
        stitched.producer_name = quantized.producer_name
        stitched.producer_version = quantized.producer_version
        path.unlink()  # its data file stays: the stitched model references it
    onnx.save(stitched, str(output))
    return output
