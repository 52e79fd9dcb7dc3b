"""The one door for user data: ``open_samples`` turns what the user gave into a reader;
``samples`` and ``benchmark_feeds`` take feeds from it for verification and ``bench``."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim._errors import InputDataError
from onnxslim.inputs._base import BatchAxes, BatchedReader, Feeds
from onnxslim.inputs._images import IMAGE_SUFFIXES, ImageFolderReader, ImagePreprocessing
from onnxslim.inputs._readers import (
    FeedsReader,
    ItemsReader,
    IterableReader,
    NpyFolderReader,
    NpzReader,
    RandomReader,
    as_batch,
)
from onnxslim.inputs._specs import DimSizes, InputSpec, input_specs

__all__ = ["open_samples", "open_reader", "samples", "benchmark_feeds"]


def _single_input_name(model: ir.Model | None, input_name: str | None, origin: str) -> str:
    if input_name:
        return input_name
    if model is None:
        return "input"
    specs = input_specs(model)
    if len(specs) != 1:
        raise InputDataError(
            f"{origin}: the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
            "arrays not keyed by input name fit only single-input models: key them by input name."
        )
    return specs[0].name


def _whole_input(spec: InputSpec, shape: tuple[int, ...]) -> bool:
    """An array shaped exactly like a fully static input whose first dim is not a batch of one
    (``[3, 320, 320]``): one sample of an input without a batch axis, not 3 stacked samples."""
    return spec.is_static and bool(spec.shape) and spec.shape[0] != 1 and tuple(spec.shape) == shape


def _random(data: str, model: ir.Model | None, limit: int | None, **options: Any) -> RandomReader:
    if model is None:
        raise InputDataError("random calibration data needs the model to read input shapes from.")
    text = data.split(":", 1)[1] if ":" in data else str(limit or 8)
    if data.split(":", 1)[0] != "random" or not text.lstrip("-").isdigit():
        raise InputDataError(
            f"calibration data '{data}' is not understood; write 'random' or 'random:N' (N samples)."
        )
    return RandomReader(model, count=int(text), **options)


def _from_path(
    path: Path,
    model: ir.Model | None,
    specs: list[InputSpec] | None,
    input_name: str | None,
    preprocessing: ImagePreprocessing | None,
    **options: Any,
) -> BatchedReader:
    if not path.exists():
        raise InputDataError(f"{path}: calibration data not found; give an .npz file or a folder.")
    if path.is_file():
        if path.suffix != ".npz":
            raise InputDataError(
                f"{path}: unsupported calibration file type '{path.suffix}'; give an .npz "
                "file (arrays keyed by input name) or a folder of .npy/.npz files or images."
            )
        return NpzReader(path, specs=specs, **options)
    entries = [p for p in path.iterdir() if p.is_file()]
    has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
    name = (
        _single_input_name(model, input_name, str(path))
        if (has_images or preprocessing or any(p.suffix == ".npy" for p in entries))
        else None
    )
    if has_images or preprocessing is not None:
        options.pop("batch_axes", None)  # one image input, batched on axis 0
        return ImageFolderReader(
            path, preprocessing, input_name=name or "input", specs=specs, **options
        )
    stacked = None
    if specs is not None and name is not None:
        first_npy = next((p for p in sorted(entries) if p.suffix == ".npy"), None)
        spec = next(s for s in specs if s.name == name)
        if first_npy is not None and spec.shape:
            shape = np.load(first_npy, mmap_mode="r").shape
            stacked = len(shape) == len(spec.shape) and not _whole_input(spec, shape)
    return NpyFolderReader(path, input_name=name, stacked=stacked, specs=specs, **options)


def _from_iterable(
    data: Any, specs: list[InputSpec] | None, input_name: str | None, **options: Any
) -> IterableReader:
    # Only bare arrays need the key; dict items name their inputs themselves.
    key = input_name or (specs[0].name if specs is not None and len(specs) == 1 else "input")
    if options["batch_size"] is None:
        options.pop("batch_axes", None)
        return ItemsReader(data, input_name=key, specs=specs, **{**options, "batch_size": 1})
    reader = IterableReader(data, input_name=key, specs=specs, **options)
    if specs and not hasattr(data, "batch_size"):
        # Items whose rank equals the model's input rank already carry the batch axis.
        first = next(iter(reader.items()), None)
        if first is not None:
            feeds = as_batch(first, key)
            by_name = {s.name: s for s in specs if s.shape}
            reader.batched = any(
                name in by_name
                and np.ndim(array) == len(by_name[name].shape)
                and not _whole_input(by_name[name], np.shape(array))
                and not reader._is_constant_sample(name, array)
                for name, array in feeds.items()
            )
    return reader


def open_samples(
    source: Any = None,
    model: ir.Model | None = None,
    *,
    batch_size: int | None = 1,
    limit: int | None = None,
    batch_axes: BatchAxes | None = None,
    constants: Mapping[str, Any] | None = None,
    input_name: str | None = None,
    preprocessing: ImagePreprocessing | Mapping[str, Any] | None = None,
    sizes: DimSizes | None = None,
    feeds: Iterable[Mapping[str, Any]] | None = None,
) -> BatchedReader:
    """A reader for what the user gave.

    ``source``: a reader (returned as is); a path to an ``.npz`` (arrays keyed by input name,
    samples stacked on the batch axis), a folder of ``.npy``/``.npz`` files or of images (with
    ``preprocessing``); ``"random"``/``"random:N"`` (smoke data); an array or dict of arrays (one
    stack); a Python iterable of dicts/arrays or a torch DataLoader (its batches re-batched to
    ``batch_size``). ``feeds=[{...}, ...]`` instead: whole feed dicts, used exactly as given.

    A reader given is used as is, rewound (its ``get_next`` starts over). ``batch_size=None``:
    each item of an iterable (or the one array/dict given) is one feed, used as given, read
    lazily (an :class:`ItemsReader`: the pipeline's data); other sources are read at batch 1.
    Such a reader opened again with a batch size re-reads its source at that size.

    ``batch_axes``: input name -> the axis its samples are stacked on (``{"state": 1}`` for
    ``[layers, batch, hidden]``), or None for an input without one. ``constants``: input name ->
    a value fed with every batch (``{"sr": np.array(16000)}``); an array lacking the model's batch
    axis is repeated along it. A 0-d array for a 0-d model input is such a constant too, and so is
    an array one dim short of the model's input next to stacked samples.
    """
    if feeds is not None:
        if source is not None:
            raise InputDataError("give either a data source or feeds=[...], not both.")
        specs = input_specs(model) if model is not None else None
        return FeedsReader(feeds, limit=limit, constants=constants, specs=specs)
    if isinstance(source, ItemsReader) and batch_size is not None:
        source = source.source  # the pipeline's items, opened at this caller's batch size
    elif isinstance(source, BatchedReader):
        source.rewind()
        return source
    if isinstance(preprocessing, Mapping):
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in preprocessing.items()
        }
        preprocessing = ImagePreprocessing(**fields)
    as_given = batch_size is None
    options: dict[str, Any] = {"batch_size": batch_size or 1, "constants": constants}
    if isinstance(source, str) and source.startswith("random"):
        return _random(source, model, limit, sizes=sizes, **options)
    options.update(limit=limit, batch_axes=batch_axes)
    specs = input_specs(model) if model is not None else None
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source), model, specs, input_name, preprocessing, **options)
    if isinstance(source, np.ndarray) or isinstance(source, Mapping):
        key = _single_input_name(model, input_name, "calibration arrays")
        batch = as_batch(source, key)
        if as_given:
            return _from_iterable([batch], specs, key, **{**options, "batch_size": None})
        return IterableReader([batch], input_name=key, batched=True, specs=specs, **options)
    if as_given:
        options["batch_size"] = None
    if callable(getattr(source, "get_next", None)) and not isinstance(source, Iterable):
        # ONNX Runtime's CalibrationDataReader protocol: each reading starts from the top
        source = functools.partial(_iterate, source)
    if isinstance(source, Iterable) or callable(source):
        return _from_iterable(source, specs, input_name, **options)
    raise InputDataError(
        f"calibration data of type {type(source).__name__} is not supported; give an .npz file, "
        "a folder, 'random', or an iterable of dicts/arrays."
    )


def open_reader(
    data: Any,
    model: ir.Model | None = None,
    *,
    batch_size: int | None = 1,
    limit: int | None = None,
    input_name: str | None = None,
    preprocessing: ImagePreprocessing | Mapping[str, Any] | None = None,
    sizes: DimSizes | None = None,
) -> BatchedReader:
    """The calibration name of :func:`open_samples` (same arguments, same readers; a reader
    given, e.g. the pipeline's ``PassContext.data``, comes back rewound and usable)."""
    return open_samples(
        data,
        model,
        batch_size=batch_size,
        limit=limit,
        input_name=input_name,
        preprocessing=preprocessing,
        sizes=sizes,
    )


def _iterate(data: Any) -> Iterator[Any]:
    if isinstance(data, BatchedReader):
        yield from data  # a fresh iteration: the reader's get_next state is left as it was
    elif hasattr(data, "get_next") and callable(data.get_next):
        if hasattr(data, "rewind"):
            data.rewind()
        try:
            while (item := data.get_next()) is not None:
                yield item
        finally:  # also when the caller stops early: the next user starts from the top
            if hasattr(data, "rewind"):
                data.rewind()
    else:
        yield from data


def _checked_feed(item: Any, specs: Mapping[str, InputSpec]) -> Feeds:
    if not isinstance(item, Mapping):
        if len(specs) != 1:
            raise InputDataError(
                f"data items must be dicts keyed by input name for a model with inputs "
                f"{sorted(specs)}; got {type(item).__name__}."
            )
        item = {next(iter(specs)): item}
    feeds = {}
    for name, array in item.items():
        if name not in specs:
            raise InputDataError(
                f"data has input '{name}' which the model does not have; model inputs: {sorted(specs)}."
            )
        array = np.asarray(array)
        if array.dtype != specs[name].dtype:
            raise InputDataError(
                f"input '{name}': model expects {specs[name].dtype}, data has {array.dtype}; convert the data."
            )
        expected = specs[name].shape
        if len(expected) != array.ndim or any(
            isinstance(d, int) and d != s for d, s in zip(expected, array.shape)
        ):
            raise InputDataError(
                f"input '{name}': model expects shape {list(expected)}, data has {list(array.shape)}."
            )
        feeds[name] = array
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise InputDataError(f"data lacks model input(s) {missing}; provide every input.")
    return feeds


def samples(reader: Any, model: ir.Model, limit: int) -> list[Feeds]:
    """Up to ``limit`` whole feeds from a reader (its batches) or an iterable (its items, as
    given); names, dtypes and shapes checked against the model. The pipeline's verification."""
    specs = {spec.name: spec for spec in input_specs(model)}
    taken: list[Feeds] = []
    for item in _iterate(reader):
        taken.append(_checked_feed(item, specs))
        if len(taken) >= limit:
            break
    if not taken:
        raise InputDataError("the data reader yielded no samples; check the data source.")
    return taken


def benchmark_feeds(
    source: Any,
    model: ir.Model,
    *,
    batch_size: int,
    count: int,
    batch_axes: BatchAxes | None = None,
    constants: Mapping[str, Any] | None = None,
) -> list[Feeds]:
    """Up to ``count`` feeds of exactly ``batch_size`` samples each, validated before any work.

    ``source`` is anything :func:`open_samples` takes (an ``.npz`` is the same stack of samples
    as in ``optimize``). A reader is re-batched to ``batch_size`` (a copy; the reader is left as
    it is); whole feeds (``FeedsReader``) keep their own batch. A last partial batch is dropped,
    so every timed run sees the same batch size.
    """
    if count < 1:
        raise InputDataError(f"count must be >= 1 feed, got {count}.")
    if isinstance(source, BatchedReader):
        reader = copy.copy(source)
        reader.rewind()
        if reader.rebatches:
            reader.batch_size = batch_size
    else:
        reader = open_samples(
            source, model, batch_size=batch_size, batch_axes=batch_axes, constants=constants
        )
    reader.validate(model)
    feeds: list[Feeds] = []
    total = 0
    for batch in reader:
        size = reader.batch_samples(batch)
        total += size
        if reader.rebatches and size != batch_size:
            continue  # the last, partial batch
        feeds.append(batch)
        if len(feeds) >= count:
            break
    if not feeds:
        raise InputDataError(
            f"{reader.describe()}: holds {total} samples, fewer than the batch size {batch_size}; "
            "give more samples or a smaller batch size."
        )
    return feeds
