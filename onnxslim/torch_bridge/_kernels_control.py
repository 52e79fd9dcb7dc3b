"""Torch kernels for control flow: If, Loop and Scan run their bodies as nested graph plans.

A body reads values of the enclosing scopes (outer-scope captures) and its own initializers. Both
reach the kernel as extra inputs after the node's own: the builder lists them in
``kernel.captured`` and ``OnnxModule`` feeds their tensors, so initializers of every graph stay
one ``nn.Parameter`` each (owned by the top module, trained and written back by name) and gradients
flow through a branch into them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import onnx_ir as ir
import torch
from torch import nn

from onnxslim.torch_bridge._kernels_shape import constant_value
from onnxslim.torch_bridge._registry import (
    KERNELS,
    Step,
    UnsupportedKernelError,
    _kernel,
    run_step,
)

__all__ = ["all_initializers", "captured_values", "subgraphs"]


def subgraphs(node: ir.Node) -> list[tuple[str, ir.Graph]]:
    """The node's graph attributes, ``(attribute name, graph)``, in attribute order."""
    found = []
    for name, attribute in node.attributes.items():
        if attribute.type == ir.AttributeType.GRAPH:
            found.append((name, attribute.as_graph()))
        elif attribute.type == ir.AttributeType.GRAPHS:
            found += [(name, graph) for graph in attribute.as_graphs()]
    return found


def _graph_tree(graph: ir.Graph) -> Iterator[ir.Graph]:
    """``graph`` and every graph nested in it, outermost first."""
    yield graph
    for node in graph:
        for _, inner in subgraphs(node):
            yield from _graph_tree(inner)


def all_initializers(graph: ir.Graph) -> Iterator[tuple[str, ir.Value]]:
    """Initializers of ``graph`` and of every subgraph in it, outermost first."""
    for inner in _graph_tree(graph):
        yield from inner.initializers.items()


def captured_values(graphs: Sequence[ir.Graph]) -> list[ir.Value]:
    """Values the bodies read but do not compute: outer-scope values and the bodies' own
    initializers (at any depth), in first-use order."""
    tree = [inner for graph in graphs for inner in _graph_tree(graph)]
    defined = {id(value) for inner in tree for value in inner.inputs}
    defined |= {id(value) for inner in tree for node in inner for value in node.outputs}
    needed: dict[int, ir.Value] = {}
    for inner in tree:
        reads = [value for node in inner for value in node.inputs] + list(inner.outputs)
        for value in reads:
            if value is not None and id(value) not in defined:
                needed.setdefault(id(value), value)
    return list(needed.values())


class _GraphPlan(nn.Module):
    """Runs one body: its formal inputs and the captured values in, its outputs out."""

    def __init__(
        self, graph: ir.Graph, opset: int, captured: Sequence[ir.Value], owner: str
    ) -> None:
        super().__init__()
        slots: dict[int, int] = {}

        def slot(value: ir.Value) -> int:
            return slots.setdefault(id(value), len(slots))

        self._input_slots = [slot(value) for value in graph.inputs]
        self._captured_slots = [slot(value) for value in captured]
        self.nested = nn.ModuleList()  # control-flow kernels inside this body
        self._constants: list[tuple[int, str]] = []
        self._steps: list[Step] = []
        for node in graph:
            label = f"{node.op_type} ('{node.name}')"
            if node.domain not in ("", "ai.onnx") or node.op_type not in KERNELS:
                raise UnsupportedKernelError(f"{owner} has no torch kernel for {label}")
            if node.op_type == "Constant":
                key = f"constant_{len(self._constants)}"
                self.register_buffer(key, torch.from_numpy(constant_value(node).copy()))
                self._constants.append((slot(node.outputs[0]), key))
                continue
            try:
                kernel = KERNELS[node.op_type](node, opset)
            except UnsupportedKernelError as error:
                raise UnsupportedKernelError(f"{owner}, {label}: {error}") from error
            if isinstance(kernel, nn.Module):
                self.nested.append(kernel)
            reads = [*node.inputs, *getattr(kernel, "captured", ())]
            input_slots = tuple(-1 if value is None else slot(value) for value in reads)
            output_slots = tuple(slot(value) for value in node.outputs)
            is_bn = bool(getattr(kernel, "batch_norm", False))
            self._steps.append((kernel, input_slots, output_slots, is_bn, node.name or label))
        self._output_slots = [slot(value) for value in graph.outputs]
        self._slot_count = len(slots)

    def forward(  # type: ignore[override]
        self, inputs: Sequence[torch.Tensor], captured: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        env: list[Any] = [None] * self._slot_count
        for slot, tensor in zip(self._input_slots, inputs, strict=True):
            env[slot] = tensor
        for slot, tensor in zip(self._captured_slots, captured, strict=True):
            env[slot] = tensor
        for slot, key in self._constants:
            env[slot] = getattr(self, key)
        for step in self._steps:
            run_step(step, env)
        return [env[slot] for slot in self._output_slots]


class _ControlKernel(nn.Module):
    """Shared part: the node's explicit input count and the captured values its bodies read."""

    def __init__(self, node: ir.Node, bodies: Sequence[ir.Graph]) -> None:
        super().__init__()
        self.explicit_count = len(node.inputs)
        self.captured = captured_values(bodies)

    def split(self, args: Sequence[Any]) -> tuple[list[Any], list[torch.Tensor]]:
        """(the node's own inputs, ``None``-padded; the captured tensors)."""
        explicit = list(args[: self.explicit_count])
        explicit += [None] * (self.explicit_count - len(explicit))
        return explicit, list(args[self.explicit_count :])


class _If(_ControlKernel):
    def __init__(self, node: ir.Node, opset: int) -> None:
        then_graph = node.attributes["then_branch"].as_graph()
        else_graph = node.attributes["else_branch"].as_graph()
        super().__init__(node, [then_graph, else_graph])
        label = f"If ('{node.name}')"
        self.then_branch = _GraphPlan(then_graph, opset, self.captured, f"{label} then_branch")
        self.else_branch = _GraphPlan(else_graph, opset, self.captured, f"{label} else_branch")

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        (condition,), captured = self.split(args)
        branch = self.then_branch if bool(condition.reshape(-1)[0]) else self.else_branch
        return tuple(branch([], captured))


class _Loop(_ControlKernel):
    def __init__(self, node: ir.Node, opset: int) -> None:
        body = node.attributes["body"].as_graph()
        super().__init__(node, [body])
        inputs = list(node.inputs) + [None] * (2 - len(node.inputs))
        if inputs[0] is None and inputs[1] is None:
            raise UnsupportedKernelError("a Loop with neither trip count nor condition never ends")
        self.carried_count = len(node.inputs) - 2
        self.body = _GraphPlan(body, opset, self.captured, f"Loop ('{node.name}') body")

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        (trip_count, condition, *carried), captured = self.split(args)
        device = next((t.device for t in args if isinstance(t, torch.Tensor)), None)
        trips = None if trip_count is None else int(trip_count.reshape(-1)[0])
        # The body's condition is honoured even without a condition input, as ONNX Runtime does
        # (the ONNX text calls it ignored there; ORT is the deployment target).
        running = True if condition is None else bool(condition.reshape(-1)[0])
        scanned: list[list[torch.Tensor]] = []
        iteration = 0
        while running and (trips is None or iteration < trips):
            outputs = self.body(
                [
                    torch.tensor(iteration, dtype=torch.int64, device=device),
                    torch.tensor(running, device=device),
                    *carried,
                ],
                captured,
            )
            running = bool(outputs[0].reshape(-1)[0])
            carried = outputs[1 : 1 + self.carried_count]
            steps = outputs[1 + self.carried_count :]
            scanned = scanned or [[] for _ in steps]
            for collected, step in zip(scanned, steps, strict=True):
                collected.append(step)
            iteration += 1
        scan_count = len(self.body._output_slots) - 1 - self.carried_count
        stacked = [torch.stack(c) for c in scanned] or [
            torch.empty((0,), device=device) for _ in range(scan_count)
        ]
        return (*carried, *stacked)


def _axes(node: ir.Node, name: str, count: int) -> list[int]:
    attribute = node.attributes.get(name)
    return [0] * count if attribute is None else list(attribute.as_ints())


class _Scan(_ControlKernel):
    def __init__(self, node: ir.Node, opset: int) -> None:
        if opset < 9:
            raise UnsupportedKernelError("Scan before opset 9 (batched, sequence_lens) is not run")
        body = node.attributes["body"].as_graph()
        super().__init__(node, [body])
        scan_inputs = node.attributes["num_scan_inputs"].as_int()
        self.state_count = len(node.inputs) - scan_inputs
        scan_outputs = len(body.outputs) - self.state_count
        self.input_axes = _axes(node, "scan_input_axes", scan_inputs)
        self.input_reversed = [d == 1 for d in _axes(node, "scan_input_directions", scan_inputs)]
        self.output_axes = _axes(node, "scan_output_axes", scan_outputs)
        self.output_reversed = [d == 1 for d in _axes(node, "scan_output_directions", scan_outputs)]
        self.body = _GraphPlan(body, opset, self.captured, f"Scan ('{node.name}') body")

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        explicit, captured = self.split(args)
        states, sequences = explicit[: self.state_count], explicit[self.state_count :]
        axes = [a % s.dim() for a, s in zip(self.input_axes, sequences, strict=True)]
        length = sequences[0].shape[axes[0]]
        scanned: list[list[torch.Tensor]] = [[] for _ in self.output_axes]
        for step in range(length):
            slices = [
                s.select(axis, length - 1 - step if backward else step)
                for s, axis, backward in zip(sequences, axes, self.input_reversed, strict=True)
            ]
            outputs = self.body([*states, *slices], captured)
            states = outputs[: self.state_count]
            for collected, value in zip(scanned, outputs[self.state_count :], strict=True):
                collected.append(value)
        stacked = []
        for collected, axis, backward in zip(
            scanned, self.output_axes, self.output_reversed, strict=True
        ):
            ordered = collected[::-1] if backward else collected
            stacked.append(torch.stack(ordered, dim=axis % (ordered[0].dim() + 1)))
        return (*states, *stacked)


@_kernel("If")
def _if(node: ir.Node, opset: int) -> _If:
    return _If(node, opset)


@_kernel("Loop")
def _loop(node: ir.Node, opset: int) -> _Loop:
    return _Loop(node, opset)


@_kernel("Scan")
def _scan(node: ir.Node, opset: int) -> _Scan:
    return _Scan(node, opset)
