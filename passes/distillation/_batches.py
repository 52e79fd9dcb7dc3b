"""The training side of user data: a ``SampleReader`` from ``onnxslim.inputs.open_samples`` (the
one door) split into feeds and labels, stacked in memory, shuffled per epoch, sharded per rank."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from onnxslim import InputDataError
from onnxslim.inputs import BatchedReader, Feeds, open_samples, to_numpy
from onnxslim.passes.distillation._config import DATA

__all__ = ["Batches", "to_device"]

# Labels of (inputs, labels) items when no label key is set.
_TUPLE_LABELS = "\0labels"
# Reader batch for files: Batches splits them into samples anyway, and one sample per read is slow.
_FILE_BATCH = 256


def _check_inputs(item: Mapping[str, Any], input_names: Sequence[str]) -> None:
    missing = [name for name in input_names if name not in item]
    if missing:
        raise InputDataError(
            f"distill: a data item lacks model input(s) {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(repr, item))}); key items by the model's input names."
        )


def _as_dict(item: Any, input_names: Sequence[str], label_key: str) -> dict[str, np.ndarray]:
    """An item of the user's data -> one dict (inputs, and labels under ``label_key``)."""
    labels = None
    if isinstance(item, (tuple, list)) and len(item) == 2 and not isinstance(item[0], (int, float)):
        item, labels = item
    if isinstance(item, Mapping):
        _check_inputs(item, input_names)
        feeds = {str(name): to_numpy(value) for name, value in item.items()}
    elif len(input_names) == 1:
        feeds = {input_names[0]: to_numpy(item)}
    else:
        raise InputDataError(
            f"distill: data items must be dicts keyed by input name for a model with inputs {', '.join(input_names)}."
        )
    if labels is not None:
        feeds[label_key] = np.atleast_1d(to_numpy(labels))
    return feeds


class _LabelledItems:
    """The user's items as dicts with labels under the label key, for ``open_samples``.

    Every item carries its samples on axis 0 (as a DataLoader's batches do): ``batch_size`` says
    so to the reader. ORT-style readers (``get_next``/``rewind``) are read to their end.
    """

    def __init__(
        self, data: Any, input_names: Sequence[str], label_key: str, batch_size: int | None
    ):
        self.data = data
        self.input_names = list(input_names)
        self.label_key = label_key
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        data = self.data
        if hasattr(data, "get_next") and not hasattr(data, "__iter__"):
            if hasattr(data, "rewind"):
                data.rewind()
            items: Any = iter(data.get_next, None)
        else:
            items = data
        for item in items:
            yield _as_dict(item, self.input_names, self.label_key)


def _is_data_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def open_training_data(
    data: Any,
    input_names: Sequence[str],
    *,
    model: ir.Model | None = None,
    batch_size: int | None = DATA.batch_size,
    label_key: str = DATA.label_key,
) -> BatchedReader:
    """A reader for the user's training data through ``open_samples``, labels kept as a key.

    A reader is used as it is (its batches are the items); a path or array opens as its file
    reader; items (iterables, DataLoaders, ORT readers) keep their own batches.
    """
    if isinstance(data, BatchedReader):
        return data
    if isinstance(data, (str, Path, np.ndarray)):
        return open_samples(data, model, batch_size=_FILE_BATCH if batch_size else 1)
    if _is_data_loader(data):
        # The loader's batches, as it makes them (the reader re-batches to the same size).
        size = data.batch_size or 1
        return open_samples(_LabelledItems(data, input_names, label_key, size), batch_size=size)
    items = _LabelledItems(data, input_names, label_key, 1)
    if not batch_size:
        return open_samples(feeds=list(items))  # items as given: one batch each
    return open_samples(items, batch_size=1)  # sample by sample: unequal shapes get our message


class Batches:
    """Training/validation batches over the reader :func:`open_training_data` opens.

    With ``batch_size``, the reader's batches are split into samples once, stacked in memory per
    input and re-batched to ``batch_size`` samples, shuffled per epoch with ``seed + epoch`` and
    sharded per rank; without it, items are used as given. A DataLoader is streamed as it
    batches (with its own DistributedSampler, or sharded by batch index). Labels: the
    ``label_key`` entry of dict items (or of a reader's batches), or the second element of
    ``(inputs, labels)`` items.

    :meth:`epoch` yields ``(feeds, labels, key)``: ``key`` names the batch's samples (an index
    array when stacked, the item index otherwise, ``None`` for a DataLoader) so that teacher
    outputs can be looked up instead of recomputed.
    """

    def __init__(
        self,
        data: Any,
        input_names: Sequence[str],
        *,
        batch_size: int | None = DATA.batch_size,
        label_key: str | None = DATA.label_key,
        model: ir.Model | None = None,
    ) -> None:
        self.data = data
        self.input_names = list(input_names)
        self.batch_size = batch_size
        self.label_key = label_key
        self.reader = open_training_data(
            data,
            input_names,
            model=model,
            batch_size=batch_size,
            label_key=label_key or _TUPLE_LABELS,
        )
        self.items: list[tuple[Feeds, np.ndarray | None]] | None = None
        # Stacked samples (batch_size given): input name -> [samples, ...] array, and labels.
        self.arrays: Feeds | None = None
        self.labels: np.ndarray | None = None
        if not _is_data_loader(data):
            self._materialize()

    def _split(self, batch: Mapping[str, np.ndarray]) -> tuple[Feeds, np.ndarray | None]:
        """A reader batch -> (model feeds, labels or None)."""
        _check_inputs(batch, self.input_names)
        key = self.label_key
        labels = batch.get(key) if key is not None and key not in self.input_names else None
        if labels is None:
            labels = batch.get(_TUPLE_LABELS)
        return {name: batch[name] for name in self.input_names}, labels

    def _materialize(self) -> None:
        items = [self._split(batch) for batch in self.reader]
        if not items:
            raise InputDataError(
                "distill: the training data is empty; give at least one batch of inputs."
            )
        if not self.batch_size:
            self.items = items
            return
        arrays = {}
        for name in self.input_names:
            parts = [np.asarray(feeds[name]) for feeds, _ in items]
            shapes = {p.shape[1:] for p in parts}
            if any(p.ndim == 0 for p in parts) or len(shapes) > 1:
                raise InputDataError(
                    f"distill: samples of input '{name}' differ in shape ({', '.join(sorted(map(str, shapes)))}); "
                    "give batch_size=None to train on the items as given."
                )
            arrays[name] = np.ascontiguousarray(np.concatenate(parts))
        counts = {len(array) for array in arrays.values()}
        if len(counts) > 1:
            raise InputDataError(
                f"distill: the inputs hold different sample counts {sorted(counts)}; axis 0 must count samples."
            )
        with_labels = [labels is not None for _, labels in items]
        if any(with_labels) and not all(with_labels):
            raise InputDataError(
                f"distill: {sum(with_labels)} of {len(items)} data items have labels; label all items or none."
            )
        self.arrays = arrays
        if all(with_labels):
            self.labels = np.concatenate(
                [np.atleast_1d(labels) for _, labels in items if labels is not None]
            )

    @property
    def sample_count(self) -> int:
        if self.arrays is not None:
            return len(next(iter(self.arrays.values())))
        if self.items is not None:
            return sum(len(next(iter(f.values()))) for f, _ in self.items)
        return len(self.data.dataset) if hasattr(self.data, "dataset") else 0

    @property
    def in_memory(self) -> bool:
        """The data is a fixed list held in memory (every epoch sees the same samples)."""
        return self.arrays is not None or self.items is not None

    def batches_per_epoch(self, world_size: int = 1) -> int | None:
        if self.arrays is not None:
            count = self.sample_count
            per_rank = count // world_size if world_size > 1 else count
            return math.ceil(per_rank / (self.batch_size or 1))  # stacked: batch_size is set
        if self.items is not None:
            return len(self.items) // world_size if world_size > 1 else len(self.items)
        try:
            length = len(self.data)
        except TypeError:
            return None
        sampler = getattr(self.data, "sampler", None)
        if world_size > 1 and not isinstance(sampler, torch.utils.data.DistributedSampler):
            return length // world_size
        return length

    def in_order(self) -> Iterator[tuple[Feeds, Any]]:
        """Every batch once, unshuffled and unsharded, with its key (see :meth:`epoch`)."""
        for feeds, _, key in self.epoch():
            yield feeds, key

    def epoch(
        self,
        epoch: int = 0,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[Feeds, np.ndarray | None, Any]]:
        if not self.in_memory:
            for feeds, labels in self._loader_epoch(epoch, rank, world_size):
                yield feeds, labels, None
            return
        count = self.sample_count if self.arrays is not None else len(self.items or ())
        order = np.arange(count)
        if shuffle:
            order = np.random.default_rng(seed + epoch).permutation(count)
        if world_size > 1:
            # Same permutation on every rank; equal shares keep DDP's collective calls in step.
            order = order[: len(order) // world_size * world_size][rank::world_size]
        if self.arrays is None:
            items = self.items or []
            for position in order:
                feeds, labels = items[position]
                yield feeds, labels, int(position)
            return
        size = self.batch_size or 1  # stacked: batch_size is set
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            index: np.ndarray | slice = batch
            if not shuffle and world_size == 1:
                index = slice(int(batch[0]), int(batch[-1]) + 1)  # contiguous: views, no copies
            feeds = {name: array[index] for name, array in self.arrays.items()}
            labels = None if self.labels is None else self.labels[index]
            yield feeds, labels, index

    def _loader_epoch(
        self, epoch: int, rank: int, world_size: int
    ) -> Iterator[tuple[Feeds, np.ndarray | None]]:
        sampler = getattr(self.data, "sampler", None)
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
            world_size = 1
        limit = self.batches_per_epoch(world_size) if world_size > 1 else None
        for index, batch in enumerate(self.reader):
            if world_size > 1:
                # an unsized loader under DDP fails here (TypeError), as before: no unequal shards
                if index // world_size >= limit:  # type: ignore[operator]
                    break
                if index % world_size != rank:
                    continue
            yield self._split(batch)


def to_device(
    feeds: Mapping[str, np.ndarray], device: torch.device, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """Feeds as tensors on ``device`` (4-D float ones in channels-last memory when asked)."""
    tensors = {
        name: torch.from_numpy(np.ascontiguousarray(array)).to(device)
        for name, array in feeds.items()
    }
    if channels_last:
        for name, tensor in tensors.items():
            if tensor.dim() == 4 and tensor.is_floating_point():
                tensors[name] = tensor.contiguous(memory_format=torch.channels_last)
    return tensors
