"""A user ``nn.Module`` as the student: wrapped to return named outputs, exported afterwards,
and the export written into the pass's model object (the pass is in place)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from onnxslim import SlimError

__all__ = ["DictOutputs", "export_module", "replace_model"]


class DictOutputs(torch.nn.Module):
    """Wraps a user module so that it returns ``{graph output name: tensor}``."""

    def __init__(
        self, module: torch.nn.Module, output_names: Sequence[str], hint_names: Sequence[str]
    ):
        super().__init__()
        if hint_names:
            raise SlimError(
                "distill: hint losses need the graph student (intermediate values are named in the graph), not a user nn.Module."
            )
        self.module = module
        self.output_names = list(output_names)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.module(*inputs.values())
        if isinstance(outputs, Mapping):
            return dict(outputs)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return dict(zip(self.output_names, outputs, strict=True))


def export_module(
    module: torch.nn.Module, model: ir.Model, example: Mapping[str, np.ndarray], workdir: Path
) -> ir.Model:
    """Exports a user student with torch.onnx.export under the graph's input/output names."""
    from onnxslim import load

    input_names = list(example)
    output_names = [v.name or "" for v in model.graph.outputs]
    dynamic_axes: dict[str, dict[int, str]] = {}
    for value in list(model.graph.inputs) + list(model.graph.outputs):
        if value.shape is not None:
            axes = {i: str(d) for i, d in enumerate(value.shape) if not isinstance(d, int)}
            if axes:
                dynamic_axes[value.name or ""] = axes
    opset = model.opset_imports.get("", 17)
    path = workdir / "distilled_student.onnx"
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(np.ascontiguousarray(example[name])) for name in input_names),
            str(path),
            dynamo=False,
            opset_version=max(opset, 13),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes or None,
        )
    return load(path)


def replace_model(target: ir.Model, source: ir.Model) -> None:
    """Moves ``source``'s graph, opsets and functions into ``target`` (the same object after)."""
    graph, moved = target.graph, source.graph
    graph.outputs.clear()
    graph.remove(list(graph), safe=False)
    graph.inputs.clear()
    graph.initializers.clear()
    nodes = list(moved)
    moved.remove(nodes, safe=False)
    inputs, outputs = list(moved.inputs), list(moved.outputs)
    initializers = list(moved.initializers.values())
    moved.inputs.clear()
    moved.outputs.clear()
    moved.initializers.clear()
    graph.inputs.extend(inputs)
    for value in initializers:
        graph.register_initializer(value)
    graph.extend(nodes)
    graph.outputs.extend(outputs)
    graph.name = moved.name
    graph.opset_imports.clear()
    graph.opset_imports.update(moved.opset_imports)
    target.functions.clear()
    target.functions.update(source.functions)
    target.ir_version = source.ir_version
    target.producer_name, target.producer_version = source.producer_name, source.producer_version
