"""Torch -> ONNX export helper for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxslim.testing._requires import _torch


def export_torch(
    module,
    example_inputs: tuple,
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: dict | None = None,
    opset: int = 13,
    do_constant_folding: bool = True,
) -> Path:
    """Exports with the TorchScript-based exporter (fast, deterministic), batch axis dynamic."""
    torch = _torch()
    path = Path(path)
    input_names = list(input_names or [f"input{i}" for i in range(len(example_inputs))])
    output_names = list(output_names or ["output"])
    if dynamic_axes is None and dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in input_names + output_names}
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(example_inputs),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=do_constant_folding,
        )
    return path
