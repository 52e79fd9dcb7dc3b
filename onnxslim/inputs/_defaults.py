"""Default sizes for symbolic dims that make the model run: from the graph, else by trying."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim._errors import InputDataError
from onnxslim.inputs._specs import DimSizes, InputSpec, input_specs, random_inputs
from onnxslim.runtime import create_session, session_options

__all__ = ["DefaultSizeError", "runnable_sizes", "DIM_LADDERS"]

# Sizes tried in turn for a dim nothing fixes, per kind of input; the first is today's default.
DIM_LADDERS = {
    "image": (64, 224),  # float inputs of rank >= 3 (images, feature maps)
    "audio": (16, 256, 1024, 16000),  # float inputs of rank <= 2 (waveforms, feature vectors)
    "tokens": (16, 64, 256),  # integer/bool inputs (token ids, masks)
}
_BATCH = 1


class DefaultSizeError(InputDataError):
    """The model runs at none of the default sizes tried for its symbolic dims."""


@dataclasses.dataclass
class _Dim:
    """A symbolic dim no user size fixes: its name (None: unnamed) and where it occurs."""

    name: str | None
    places: list[tuple[str, int]]  # (input name, axis)
    batch: bool
    ladder: tuple[int, ...]
    bound: int = 0  # smallest size the graph allows (reflect pads), 0 where none is known
    maybe_batch: bool = (
        False  # the one symbolic dim of a [layers, ?, hidden] state: tried at 1 first
    )


def runnable_sizes(
    model: ir.Model, sizes: DimSizes | None = None, providers: str | Sequence[str] | None = None
) -> dict[str, int | list[int]]:
    """``sizes`` completed with a size for every symbolic dim, chosen so the model runs.

    A dim at axis 0 (anywhere: one name is one size across inputs) is the batch: 1. Others start
    from the graph's lower bound (a reflect ``Pad`` on the input) or the first size of their kind's
    ladder (:data:`DIM_LADDERS`); when the model fails on them, all such dims take the next size
    of their ladders together (one session, at most four runs). Unnamed dims come back as the
    input's full shape. Models without such dims cost nothing.

    Raises:
        DefaultSizeError: no size tried runs; the message names the dims and the ``--shape``.
    """
    given: dict[str, int | list[int]] = {
        k: (list(v) if isinstance(v, Sequence) else int(v)) for k, v in (sizes or {}).items()
    }
    specs = input_specs(model)
    dims = _open_dims(specs, given)
    if not dims:
        return given
    _graph_bounds(model, dims)
    free = [d for d in dims if not d.batch]
    steps = max((len(d.ladder) for d in free), default=1)
    batch_first = (True, False) if any(d.maybe_batch for d in free) else (False,)
    candidates = _cache_candidates(specs, given, dims) + [
        _candidate(specs, given, dims, step, first)
        for first in batch_first
        for step in range(steps)
    ]
    if not free:
        return candidates[0]
    session = _probe_session(model, providers)
    if session is None:  # the model does not load: not a size question, the caller reports it
        return candidates[0]
    error = ""
    for candidate in _unique(candidates):
        try:
            session.run(None, random_inputs(model, candidate))
        except Exception as failure:  # ORT raises its own types for any kernel failure
            error = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
            continue
        return candidate
    raise DefaultSizeError(_message(specs, free, error))


_CACHE_INPUT = re.compile(r"past|cache", re.IGNORECASE)
_TOTAL_DIM = re.compile(r"total|all|key|kv|past", re.IGNORECASE)
_PAST, _NEW = 15, 1  # a decode step: 15 cached tokens and one new one (16 in all)


def _cache_dims(dims: list[_Dim]) -> tuple[list[_Dim], list[_Dim]]:
    """(past dims: the symbolic axes of KV-cache inputs; the other free token dims)."""
    past = [
        d
        for d in dims
        if not d.batch and d.name is not None and any(_CACHE_INPUT.search(n) for n, _ in d.places)
    ]
    others = [d for d in dims if not d.batch and d not in past and d.name is not None]
    return past, others


def _cache_candidates(
    specs: list[InputSpec], given: dict[str, int | list[int]], dims: list[_Dim]
) -> list[dict[str, int | list[int]]]:
    """A decoder with a KV cache runs when its other sequence dims are ``past + new`` (the
    mask, the total length) or ``new``: a decode step, the likeliest assignment by name first."""
    past, others = _cache_dims(dims)
    if not past or len(others) > 3:
        return []
    base = _candidate(specs, given, dims, 0, False)
    base.update({d.name: _PAST for d in past if d.name is not None})
    likely = tuple(bool(_TOTAL_DIM.search(d.name or "")) for d in others)
    choices = [likely] + [
        c for c in itertools.product((False, True), repeat=len(others)) if c != likely
    ]
    candidates = []
    for choice in choices:
        candidate = dict(base)
        candidate.update(
            {d.name: _PAST + _NEW if total else _NEW for d, total in zip(others, choice) if d.name}
        )
        candidates.append(candidate)
    return candidates


def _open_dims(specs: list[InputSpec], given: DimSizes) -> list[_Dim]:
    by_name: dict[str, _Dim] = {}
    dims: list[_Dim] = []
    for spec in specs:
        if spec.name in given:
            continue
        kind = _kind(spec)
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) or (isinstance(dim, str) and dim in given):
                continue
            batch = axis == 0 or (isinstance(dim, str) and "batch" in dim.lower())
            if isinstance(dim, str) and dim in by_name:
                known = by_name[dim]
                known.places.append((spec.name, axis))
                known.batch = known.batch or batch
                continue
            entry = _Dim(dim, [(spec.name, axis)], batch, DIM_LADDERS[kind])
            dims.append(entry)
            if isinstance(dim, str):
                by_name[dim] = entry
    batched = any(s.shape and not isinstance(s.shape[0], int) for s in specs)
    for entry in dims:
        shape = next(s.shape for s in specs if s.name == entry.places[0][0])
        symbolic = [d for d in shape if not isinstance(d, int)]
        entry.maybe_batch = batched and not entry.batch and len(symbolic) == 1 and len(shape) >= 3
    return dims


def _kind(spec: InputSpec) -> str:
    if np.issubdtype(spec.dtype, np.floating):
        return "image" if len(spec.shape) >= 3 else "audio"
    return "tokens"


def _graph_bounds(model: ir.Model, dims: list[_Dim]) -> None:
    """A reflect Pad on an input needs each padded axis longer than its pads."""
    place_of = {place: dim for dim in dims for place in dim.places}
    for value in model.graph.inputs:
        for node, index in value.uses():
            if node.op_type != "Pad" or index != 0 or len(node.inputs) < 2:
                continue
            if node.attributes.get_string("mode", "constant") != "reflect":
                continue
            pads = node.inputs[1].const_value if node.inputs[1] is not None else None
            if pads is None:
                continue
            flat = [int(p) for p in pads.numpy().reshape(-1)]
            rank = len(flat) // 2
            for axis in range(rank):  # pads for all axes (an `axes` input is not read here)
                dim = place_of.get((value.name or "", axis))
                if dim is not None:
                    dim.bound = max(dim.bound, flat[axis] + 1, flat[axis + rank] + 1)


def _size(dim: _Dim, step: int, as_batch: bool = False) -> int:
    if dim.batch or (as_batch and dim.maybe_batch):
        return _BATCH
    fitting = [s for s in dim.ladder if s >= dim.bound] or [dim.bound]
    return fitting[min(step, len(fitting) - 1)]


def _candidate(
    specs: list[InputSpec],
    given: dict[str, int | list[int]],
    dims: list[_Dim],
    step: int,
    as_batch: bool,
) -> dict[str, int | list[int]]:
    candidate = dict(given)
    unnamed: dict[tuple[str, int], int] = {}
    for dim in dims:
        if dim.name is not None:
            candidate[dim.name] = _size(dim, step, as_batch)
        else:
            unnamed[dim.places[0]] = _size(dim, step, as_batch)
    for spec in specs:
        if any((spec.name, axis) in unnamed for axis in range(len(spec.shape))):
            candidate[spec.name] = [
                d if isinstance(d, int) else unnamed[(spec.name, a)] if d is None else candidate[d]  # type: ignore[misc]
                for a, d in enumerate(spec.shape)
            ]
    return candidate


def _unique(candidates: list[dict[str, int | list[int]]]) -> list[dict[str, int | list[int]]]:
    seen: list[dict[str, int | list[int]]] = []
    for candidate in candidates:
        if candidate not in seen:
            seen.append(candidate)
    return seen


def _probe_session(model: ir.Model, providers: str | Sequence[str] | None) -> Any:
    try:  # severity 4: a failing try must not print ORT's error lines on the terminal
        return create_session(model, providers, session_options(log_severity_level=4))
    except Exception:  # loading errors are reported by whoever runs the model next
        return None


def _message(specs: list[InputSpec], free: list[_Dim], error: str) -> str:
    tried = ", ".join(
        f"{_label(d)}={'/'.join(str(s) for s in sorted({_size(d, i) for i in range(len(d.ladder))}))}"
        for d in free
    )
    past, others = _cache_dims(free)
    if past:  # a decoder: a decode step's sizes, the sequence dims named like a total get both
        hints = [f"--shape {d.name}={_PAST}" for d in past] + [
            f"--shape {d.name}={_PAST + _NEW if _TOTAL_DIM.search(d.name or '') else _NEW}"
            for d in others
        ]
    else:
        hints = [f"--shape {d.name}=N" for d in free if d.name is not None]
    for spec in specs:  # an unnamed dim is given with its input's full shape
        if any(d.name is None and d.places[0][0] == spec.name for d in free):
            dims = [
                str(d) if isinstance(d, int) else "N" if a else "1"
                for a, d in enumerate(spec.shape)
            ]
            hints.append(f"--shape {spec.name}={'x'.join(dims)}")
    reason = f" (ONNX Runtime: {error})" if error else ""
    return (
        f"the model runs at none of the default sizes tried for its symbolic dims ({tried}){reason}; "
        f"give the sizes it expects, e.g. {' '.join(hints)}."
    )


def _label(dim: _Dim) -> str:
    name, axis = dim.places[0]
    return dim.name if dim.name is not None else f"{name}[{axis}]"
