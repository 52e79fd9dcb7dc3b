"""Per-layer sensitivity: the SQNR each quantized tensor keeps, and the loss each node adds."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.inputs import fixed_batch
from onnxslim.model import ValueProbe
from onnxslim.runtime import session_options

__all__ = ["PART_BYTES", "SPLIT_MIN_TENSORS", "layer_sensitivity"]

Feeds = Mapping[str, np.ndarray]


def layer_sensitivity(
    float_model: ir.Model,
    quantized_path: str | os.PathLike,
    node_outputs: Mapping[str, str],
    batches: Sequence[Feeds],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-node SQNR loss (dB) and per-tensor SQNR (dB), in one pass with all layers quantized.

    ``node_outputs`` maps a node name to its output tensor (which keeps its name in the QDQ
    model). A node's loss is the SQNR of its inputs' worst tensor minus its output's SQNR:
    the damage the node itself adds, not what it inherits.
    """
    names = sorted(set(node_outputs.values()))
    quantized = ir.load(str(quantized_path))
    seen_as = _seen_as(quantized, names)
    reference_values = {v.name for node in float_model.graph for v in node.outputs}
    names = [n for n in names if n in seen_as and n in reference_values]
    candidate_names = [seen_as[n] for n in names]
    # The sessions ORT deploys (full optimizations: QDQ fused), not the probe's default; every
    # tensor exposed at once (exposing fewer changes ORT's fusions, hence the numbers). Without
    # the memory arena each session hands its buffers back after a run instead of keeping them.
    probes = [
        ValueProbe(model, fetch, providers=providers, options=_unpooled_options())
        for model, fetch in ((float_model, names), (quantized, candidate_names))
    ]
    del quantized
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    # one sample at a time where the batch is free: every tensor of both models is held at once
    runs = batches if fixed_batch(float_model) else [s for b in batches for s in _samples(b)]
    parts = 2 if len(names) >= SPLIT_MIN_TENSORS else 1
    for batch in runs:
        held = _add_sample(probes, names, seen_as, batch, parts, (signal, noise))
        parts = max(1, math.ceil(held / PART_BYTES))
    tensor_sqnr = {
        name: (
            float("inf")
            if noise[name] == 0
            else 10 * np.log10(max(signal[name], 1e-30) / noise[name])
        )
        for name in names
    }
    losses = {}
    for node_name, output_name in node_outputs.items():
        if output_name not in tensor_sqnr:
            continue
        named = next((n for n in float_model.graph if n.name == node_name), None)
        inherited = [
            tensor_sqnr[v.name]
            for v in (named.inputs if named else [])
            if v is not None and v.name in tensor_sqnr
        ]
        before = min(inherited) if inherited else float("inf")
        after = tensor_sqnr[output_name]
        losses[node_name] = (min(before, 100.0) - min(after, 100.0)) if np.isfinite(after) else 0.0
    return losses, tensor_sqnr


# The reference's tensors are fetched in parts of about this many bytes (each part a run of
# its own) while the candidate's are held: the peak is one model's tensors plus one part, not
# both models' tensors; with one part (small models) each model runs once per sample.
PART_BYTES = 96 << 20
SPLIT_MIN_TENSORS = 32  # the first sample's split, before any size is known


def _add_sample(
    probes: Sequence[ValueProbe],
    names: Sequence[str],
    seen_as: Mapping[str, str],
    batch: Feeds,
    parts: int,
    sums: tuple[dict[str, float], dict[str, float]],
) -> int:
    """Adds one batch's signal and noise energy per tensor to ``sums``; the reference tensors'
    bytes. Same sessions whatever the fetch list, so the same numbers for any ``parts``."""
    signal, noise = sums
    if not names:  # nothing kept its name in the quantized model
        return 0
    size = math.ceil(len(names) / parts)
    groups = [names[i : i + size] for i in range(0, len(names), size)]
    reference = probes[0].run(batch, groups[0])
    found = probes[1].run(batch, [seen_as[n] for n in names])
    held = 0
    for index, group in enumerate(groups):
        if index:
            reference = probes[0].run(batch, group)
        for name in group:
            value = reference.pop(name)
            held += value.nbytes
            ref = value.astype(np.float64)  # freed as it is compared
            del value
            diff = ref - found.pop(seen_as[name]).astype(np.float64)
            signal[name] += float(np.sum(ref * ref))
            noise[name] += float(np.sum(diff * diff))
    return held


def _unpooled_options() -> Any:
    options = session_options()
    options.enable_cpu_mem_arena = False
    return options


def _samples(batch: Feeds) -> list[dict[str, np.ndarray]]:
    counts = {int(np.shape(v)[0]) if np.ndim(v) else -1 for v in batch.values()}
    if len(counts) != 1 or -1 in counts:  # no shared axis 0 (a 0-d sr, state [2, b, h]): whole
        return [dict(batch)]
    count = counts.pop()
    return [{k: v[i : i + 1] for k, v in batch.items()} for i in range(count)]


def _seen_as(model: ir.Model, names: Iterable[str]) -> dict[str, str]:
    """Each float tensor of ``names`` -> the value its consumers see in the QDQ ``model``
    (:func:`seen_as_among` its node outputs)."""
    return seen_as_among({v.name or "" for node in model.graph for v in node.outputs}, names)


def seen_candidates(name: str) -> tuple[str, str]:
    """What a float tensor may be called in a QDQ model, first found first: its
    DequantizeLinear output, then the tensor itself."""
    return f"{name}_DequantizeLinear_Output", name


def seen_as_among(values: Collection[str], names: Iterable[str]) -> dict[str, str]:
    """Each tensor of ``names`` -> the first of :func:`seen_candidates` among ``values``
    (absent: dropped; ORT even renames a Conv's output to its folded Relu's)."""
    return {
        name: seen
        for name in names
        for seen in [next((c for c in seen_candidates(name) if c in values), None)]
        if seen is not None
    }
