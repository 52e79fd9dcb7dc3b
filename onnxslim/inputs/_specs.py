"""Graph input specs and sample inputs generated from them (symbolic dims resolved)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim._errors import InputDataError
from onnxslim.inputs._branches import branch_values

__all__ = ["InputSpec", "input_specs", "fixed_batch", "resolve_shape", "random_inputs", "DimSizes"]

# Sizes for symbolic dims: a dim name -> size, or an input name -> its full shape.
DimSizes = Mapping[str, "int | Sequence[int]"]

_DEFAULT_BATCH = 1
_DEFAULT_SPATIAL = 64  # float inputs of rank >= 3 (images, feature maps)
_DEFAULT_SEQUENCE = 16  # everything else (token sequences)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Name, numpy dtype and shape (ints, or str/None for symbolic dims) of a graph input."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name}: {self.dtype} [{dims}]"


def input_specs(model: ir.Model) -> list[InputSpec]:
    """The graph inputs that are not initializers, with dtype and shape."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        if value.dtype is None:
            raise InputDataError(
                f"graph input '{value.name}' has no element type; re-export the model with typed inputs."
            )
        shape: tuple[int | str | None, ...] = ()
        if value.shape is not None:
            # Some exporters (Paddle) write -1 for a dynamic dim: treat it as symbolic.
            shape = tuple(
                (d if d >= 0 else None)
                if isinstance(d, int)
                else (d.value if isinstance(d, ir.SymbolicDim) else None)
                for d in value.shape
            )
        specs.append(InputSpec(value.name or "", value.dtype.numpy(), shape))
    return specs


def fixed_batch(model: ir.Model, name: str | None = None, axis: int = 0) -> int:
    """The batch size the graph fixes on input ``name`` (default: its first input) at its batch
    ``axis``; 0 where that dim is symbolic or unknown (Paddle's -1 included) or declared 0
    (which ORT takes literally: only empty batches)."""
    specs = input_specs(model)
    spec = specs[0] if name is None and specs else next((s for s in specs if s.name == name), None)
    dim = spec.shape[axis] if spec is not None and len(spec.shape) > axis else None
    return dim if isinstance(dim, int) and dim > 0 else 0


def resolve_shape(spec: InputSpec, sizes: DimSizes | None = None) -> tuple[int, ...]:
    """Concrete shape for ``spec``: user sizes first (by input name, then dim name), then defaults."""
    sizes = dict(sizes or {})
    if spec.name in sizes:
        full = sizes[spec.name]
        full = tuple(int(d) for d in (full if isinstance(full, Sequence) else [full]))
        if len(full) != len(spec.shape) or any(
            isinstance(d, int) and d != f for d, f in zip(spec.shape, full)
        ):
            raise InputDataError(
                f"input '{spec.name}': given shape {list(full)} does not fit the model's "
                f"{list(spec.shape)}; fix the size given for it."
            )
        return full
    is_image_like = np.issubdtype(spec.dtype, np.floating) and len(spec.shape) >= 3
    resolved = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            resolved.append(dim)
        elif isinstance(dim, str) and dim in sizes:
            resolved.append(int(sizes[dim]))  # type: ignore[arg-type]
        elif axis == 0:
            resolved.append(_DEFAULT_BATCH)
        else:
            resolved.append(_DEFAULT_SPATIAL if is_image_like else _DEFAULT_SEQUENCE)
    return tuple(resolved)


def _index_upper_bound(model: ir.Model, name: str) -> int | None:
    """Smallest table size among constant-table Gathers indexed directly by input ``name``."""
    bound = None
    value = next((v for v in model.graph.inputs if v.name == name), None)
    if value is None:
        return None
    for node, index in value.uses():
        if node.op_type == "Gather" and index == 1 and node.inputs[0] is not None:
            table = node.inputs[0]
            if table.shape is not None and table.shape.is_static():
                axis = node.attributes.get_int("axis", 0)
                size = table.shape[axis]
                if isinstance(size, int):  # is_static(): always, but typed int | SymbolicDim
                    bound = size if bound is None else min(bound, size)
    return bound


def random_inputs(
    model: ir.Model, sizes: DimSizes | None = None, *, seed: int = 0, batch: int | None = None
) -> dict[str, np.ndarray]:
    """Random inputs from the graph's input shapes; for smoke runs and verification only.

    A 0-d integer input the graph tests with ``Equal`` takes, by ``seed``, each value that
    selects a branch in turn (:func:`branch_values`): random values would take no branch the
    model was built for, one value only one of them."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in input_specs(model):
        shape = list(resolve_shape(spec, sizes))
        if batch is not None and shape and not isinstance(spec.shape[0], int):
            shape[0] = batch
        lowered = spec.name.lower()
        if spec.dtype == np.bool_:
            array = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(spec.dtype, np.integer):
            if "mask" in lowered:
                array = np.ones(shape, dtype=spec.dtype)
            elif "type" in lowered or "segment" in lowered:
                array = np.zeros(shape, dtype=spec.dtype)
            elif not shape and (values := branch_values(model, spec.name)):
                # the branches the model tests for, one per sample (seed), in turn
                array = np.array(values[seed % len(values)], dtype=spec.dtype)
            else:
                upper = _index_upper_bound(model, spec.name) or 100
                array = rng.integers(0, upper, size=shape).astype(spec.dtype)
        else:
            array = rng.standard_normal(shape).astype(spec.dtype)
        feeds[spec.name] = array
    return feeds
