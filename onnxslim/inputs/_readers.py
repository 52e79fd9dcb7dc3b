"""Readers for stored and in-memory samples: ``.npz``, folders of ``.npy``/``.npz``, iterables,
random smoke data, and whole feed dicts used as given."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim._errors import InputDataError
from onnxslim.inputs._base import BatchAxes, BatchedReader, Feeds
from onnxslim.inputs._specs import DimSizes, InputSpec, input_specs, random_inputs

__all__ = [
    "NpzReader",
    "NpyFolderReader",
    "IterableReader",
    "ItemsReader",
    "RandomReader",
    "FeedsReader",
]


def as_batch(value: Any, key_if_array: str) -> Feeds:
    """A sample or a batch given as a dict/array/tuple -> dict of arrays."""
    if isinstance(value, Mapping):
        return {str(k): to_numpy(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)) and value and not isinstance(value[0], (int, float)):
        # A DataLoader yields (inputs, labels): the first element holds the inputs.
        return as_batch(value[0], key_if_array)
    return {key_if_array: to_numpy(value)}


def to_numpy(value: Any) -> np.ndarray:
    """An array from an array-like or a torch tensor (detached, on the CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class NpzReader(BatchedReader):
    """One ``.npz`` file: arrays keyed by input name, samples stacked on the batch axis (axis 0
    unless ``batch_axes`` says otherwise); an array without it is constant across samples."""

    kind = "npz file"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 1,
        limit: int | None = None,
        batch_axes: BatchAxes | None = None,
        constants: Mapping[str, Any] | None = None,
        specs: Sequence[InputSpec] | None = None,
    ):
        super().__init__(
            batch_size=batch_size,
            limit=limit,
            batch_axes=batch_axes,
            constants=constants,
            specs=specs,
        )
        self.path = Path(path)
        if not self.path.is_file():
            raise InputDataError(f"{self.path}: calibration file not found; check the path.")

    def describe(self) -> str:
        return str(self.path)

    def fingerprint(self) -> str:
        stat = self.path.stat()
        return hashlib.sha256(
            f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.limit}{self._layout_key()}".encode()
        ).hexdigest()

    def _samples(self) -> Iterator[Feeds]:
        with np.load(self.path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        stacked, _ = self._split(arrays)
        lengths = {
            name: a.shape[self._axis(name)]
            for name, a in stacked.items()
            if a.ndim > self._axis(name)
        }
        if len(set(lengths.values())) > 1:
            raise InputDataError(
                f"{self.path}: arrays have different sample counts {lengths}; "
                f"{self._axes_text()} must count samples in every array."
            )
        yield arrays


class NpyFolderReader(BatchedReader):
    """A folder of ``.npy`` (single-input models; one sample or a batch per file) or ``.npz`` files."""

    kind = "npy folder"

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        input_name: str | None = None,
        batch_size: int = 1,
        limit: int | None = None,
        stacked: bool | None = None,
        batch_axes: BatchAxes | None = None,
        constants: Mapping[str, Any] | None = None,
        specs: Sequence[InputSpec] | None = None,
    ):
        super().__init__(
            batch_size=batch_size,
            limit=limit,
            batch_axes=batch_axes,
            constants=constants,
            specs=specs,
        )
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix in (".npy", ".npz"))
        if not self.files:
            raise InputDataError(f"{self.folder}: no .npy or .npz files in the calibration folder.")
        self.input_name = input_name or "input"
        self.stacked = stacked  # None: a file holds one sample unless its rank exceeds the model's

    def describe(self) -> str:
        return str(self.folder)

    def fingerprint(self) -> str:
        parts = [f"{p.name}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in self.files]
        return hashlib.sha256(
            ("\n".join([str(self.limit), *parts]) + self._layout_key()).encode()
        ).hexdigest()

    def _samples(self) -> Iterator[Feeds]:
        for path in self.files:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    feeds = {name: archive[name] for name in archive.files}
            else:
                feeds = {self.input_name: np.load(path, allow_pickle=False)}
            yield feeds if self.stacked else self._stack_one(feeds)


class IterableReader(BatchedReader):
    """Any re-iterable Python source: a list of dicts/arrays, a torch DataLoader, or a callable
    returning a fresh iterator. Items may be single samples (``batched=False``) or batches."""

    kind = "iterable"

    def __init__(
        self,
        source: Iterable[Any] | Callable[[], Iterable[Any]],
        *,
        input_name: str = "input",
        batched: bool | None = None,
        batch_size: int = 1,
        limit: int | None = None,
        batch_axes: BatchAxes | None = None,
        constants: Mapping[str, Any] | None = None,
        specs: Sequence[InputSpec] | None = None,
    ):
        super().__init__(
            batch_size=batch_size,
            limit=limit,
            batch_axes=batch_axes,
            constants=constants,
            specs=specs,
        )
        if isinstance(source, Iterator):
            # A one-shot iterator cannot be rewound: keep what it yields.
            source = list(source)
        self.source = source
        self.input_name = input_name
        # torch DataLoaders yield batches; plain lists hold samples unless told otherwise.
        self.batched = batched if batched is not None else hasattr(source, "batch_size")

    def describe(self) -> str:
        return f"{type(self.source).__name__} data"

    def items(self) -> Iterable[Any]:
        """The source's items, from a fresh iteration."""
        if callable(self.source) and not hasattr(self.source, "__iter__"):
            return self.source()
        return self.source

    def _samples(self) -> Iterator[Feeds]:
        for item in self.items():
            feeds = as_batch(item, self.input_name)
            yield feeds if self.batched else self._stack_one(feeds)


class ItemsReader(IterableReader):
    """Each item of a Python iterable is one whole feed, used as given (no re-batching, read
    lazily): the pipeline's verification data. A pass opening it with its own batch size gets
    the source re-read at that size (see ``open_samples``), as if it had been given the source."""

    kind = "items"
    rebatches = False

    def _batches(self) -> Iterator[Feeds]:
        for index, item in enumerate(self.items()):
            if self.limit is not None and index >= self.limit:
                break
            if not isinstance(item, Mapping) and self._specs is not None and len(self._specs) != 1:
                # the model's input names are needed to key a bare array
                raise InputDataError(
                    f"data items must be dicts keyed by input name for a model with inputs "
                    f"{sorted(s.name for s in self._specs)}; got {type(item).__name__}."
                )
            feeds = as_batch(item, self.input_name)
            yield self._with_constants(feeds, {}, self.batch_samples(feeds))


class RandomReader(BatchedReader):
    """Random samples from the graph's input shapes. Smoke data: ranges from it are meaningless."""

    kind = "random (smoke data)"
    smoke = True
    rebatches = False

    def __init__(
        self,
        model: ir.Model,
        *,
        count: int = 8,
        sizes: DimSizes | None = None,
        seed: int = 0,
        batch_size: int = 1,
        constants: Mapping[str, Any] | None = None,
    ):
        super().__init__(
            batch_size=batch_size, limit=count, constants=constants, specs=input_specs(model)
        )
        self.model = model
        self.count = count
        self.sizes = dict(sizes or {})
        self.seed = seed

    def fingerprint(self) -> str:
        shapes = [s.describe() for s in input_specs(self.model)]
        return hashlib.sha256(
            f"random|{self.seed}|{self.count}|{self.batch_size}|{self.sizes}|{shapes}{self._layout_key()}".encode()
        ).hexdigest()

    def _samples(self) -> Iterator[Feeds]:
        for index in range(self.count):
            yield random_inputs(self.model, self.sizes, seed=self.seed + index, batch=1)

    def _batches(self) -> Iterator[Feeds]:
        # Feeds shaped exactly like the model's inputs (fixed batch, scalars): no re-batching,
        # which would cut a fixed first dim or fail on a scalar input.
        for index in range(-(-self.count // self.batch_size)):
            feeds = random_inputs(
                self.model, self.sizes, seed=self.seed + index, batch=self.batch_size
            )
            yield self._with_constants(feeds, {}, self.batch_samples(feeds))


class FeedsReader(BatchedReader):
    """Whole feed dicts used exactly as given: no re-batching, no splitting; ``limit`` counts
    feeds. For models whose inputs do not share one batch axis, or batches built by hand."""

    kind = "feeds"
    rebatches = False

    def __init__(
        self,
        feeds: Iterable[Mapping[str, Any]],
        *,
        limit: int | None = None,
        constants: Mapping[str, Any] | None = None,
        specs: Sequence[InputSpec] | None = None,
    ):
        super().__init__(limit=limit, constants=constants, specs=specs)
        self.feeds = [{str(name): to_numpy(v) for name, v in feed.items()} for feed in feeds]
        if self.feeds:
            self.batch_size = self.batch_samples(self.feeds[0])

    def describe(self) -> str:
        return f"{len(self.feeds)} feed dicts"

    def _samples(self) -> Iterator[Feeds]:
        yield from self.feeds

    def _batches(self) -> Iterator[Feeds]:
        for index, feed in enumerate(self.feeds):
            if self.limit is not None and index >= self.limit:
                break
            yield self._with_constants(dict(feed), {}, self.batch_samples(feed))
