"""Verification of a lossy pass that narrows declared dims (a pruned KV cache): the samples cut
to the new input dims, and the outputs the pass declared narrower, which cannot be compared."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.inputs import input_specs

__all__ = ["declared_resizes", "fit_to_declared", "without"]

Feeds = dict[str, np.ndarray]


def fit_to_declared(model: ir.Model, samples: list[Feeds]) -> list[Feeds]:
    """Samples cut to a lossy pass's narrower declared input dims (pruned cache heads: the first
    entries, as a fresh cache of the new width would hold)."""
    specs = {spec.name: spec.shape for spec in input_specs(model)}
    fitted = []
    for feeds in samples:
        fitted_feeds = dict(feeds)
        for name, array in feeds.items():
            shape = specs.get(name)
            if shape is None or len(shape) != np.ndim(array):
                continue
            index = tuple(
                slice(0, dim) if isinstance(dim, int) and dim < size else slice(None)
                for dim, size in zip(shape, np.shape(array))
            )
            if any(part.stop is not None for part in index):
                fitted_feeds[name] = np.ascontiguousarray(np.asarray(array)[index])
        fitted.append(fitted_feeds)
    return fitted


def declared_resizes(model: ir.Model, reference: list[Feeds]) -> set[str]:
    """Outputs whose declared static dims now differ from the reference's arrays."""
    if not reference:
        return set()
    resized: set[str] = set()
    for value in model.graph.outputs:
        array = reference[0].get(value.name or "")
        if array is None or value.shape is None or len(value.shape) != np.ndim(array):
            continue
        if any(isinstance(d, int) and d != n for d, n in zip(value.shape, np.shape(array))):
            resized.add(value.name or "")
    return resized


def without(outputs: Feeds, names: set[str]) -> Feeds:
    return {k: v for k, v in outputs.items() if k not in names}
