"""Calibration data readers: re-iterable, batched, validated against the model, ORT-compatible.

Every reader yields feed dicts (input name -> array with the batch on axis 0) and also speaks
ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next()`` / ``rewind()``), so the same
object can be handed to ``onnxruntime.quantization.quantize_static``.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim._errors import InputDataError
from onnxslim._inputs import DimSizes, InputSpec, input_specs, random_inputs

__all__ = [
    "CalibrationReader",
    "NpzReader",
    "NpyFolderReader",
    "ImageFolderReader",
    "ImagePreprocessing",
    "IterableReader",
    "RandomReader",
    "open_reader",
    "validate_feeds",
    "IMAGE_SUFFIXES",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
Feeds = dict[str, np.ndarray]


def _describe(dtype: Any, shape: Sequence[Any]) -> str:
    dims = "x".join("?" if d is None else str(d) for d in shape)
    return f"{np.dtype(dtype)} [{dims}]"


def validate_feeds(
    feeds: Mapping[str, np.ndarray], specs: Sequence[InputSpec], origin: str
) -> None:
    """Raises InputDataError naming the input when names, ranks, static dims or dtypes differ."""
    expected = {spec.name: spec for spec in specs}
    unknown = sorted(set(feeds) - set(expected))
    if unknown:
        raise InputDataError(
            f"{origin}: input '{unknown[0]}' is not an input of the model (expected inputs: "
            f"{', '.join(expected)}); rename the data keys to the model's input names."
        )
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise InputDataError(
            f"{origin}: no data for input '{missing[0]}' (given: {', '.join(feeds) or 'nothing'}); "
            f"provide arrays for all of {', '.join(expected)}."
        )
    for name, spec in expected.items():
        array = np.asarray(feeds[name])
        given = _describe(array.dtype, array.shape)
        wanted = spec.describe().split(": ", 1)[1]
        if array.dtype != spec.dtype:
            raise InputDataError(
                f"{origin}: input '{name}' expected {wanted}, given {given}; convert the data to "
                f"{spec.dtype} (a wrong dtype)."
            )
        if spec.shape and (
            array.ndim != len(spec.shape)
            or any(isinstance(d, int) and d != g for d, g in zip(spec.shape, array.shape))
        ):
            raise InputDataError(
                f"{origin}: input '{name}' expected {wanted}, given {given}; reshape the data to "
                "the model's input shape (a wrong shape)."
            )


def _check_batch(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec], origin: str) -> None:
    """One batch against the model's inputs; NaN is never calibration data (Inf may be: masks)."""
    validate_feeds(batch, specs, origin)
    for name, array in batch.items():
        if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
            raise InputDataError(
                f"{origin}: input '{name}' contains NaN; remove or replace those samples."
            )


def _sample_count(chunk: Mapping[str, np.ndarray], origin: str) -> int:
    """Samples in one item (axis 0 of every array); refuses scalars and unequal counts."""
    counts = {}
    for name, array in chunk.items():
        if np.ndim(array) == 0:
            raise InputDataError(
                f"{origin}: input '{name}' is a scalar; calibration arrays need the sample axis first."
            )
        counts[name] = len(array)
    if len(set(counts.values())) > 1:
        raise InputDataError(
            f"{origin}: arrays in one item have different sample counts {counts}; "
            "axis 0 must count samples in every array."
        )
    return next(iter(counts.values()))


class CalibrationReader(abc.ABC):
    """Base of all readers: batches of ``batch_size`` samples, at most ``limit`` samples.

    Subclasses implement :meth:`_samples`, yielding dicts of arrays whose axis 0 counts samples
    (one or more per dict); the base class re-batches them.
    """

    kind: str = "data"
    smoke: bool = False  # random data: valid for smoke runs only, never for real calibration
    rebatches: bool = True  # False: batches come shaped like the model's inputs already

    def __init__(self, *, batch_size: int = 1, limit: int | None = None):
        if batch_size < 1:
            raise InputDataError(f"batch_size must be >= 1, got {batch_size}.")
        if limit is not None and limit < 1:
            raise InputDataError(f"limit must be >= 1 sample, got {limit}.")
        self.batch_size = batch_size
        self.limit = limit
        self._iterator: Iterator[Feeds] | None = None

    @abc.abstractmethod
    def _samples(self) -> Iterator[Feeds]:
        """Dicts of arrays with samples on axis 0, in a deterministic order."""

    def describe(self) -> str:
        return self.kind

    def fingerprint(self) -> str:
        """A digest of the data (and preprocessing) for the statistics cache key."""
        digest = hashlib.sha256(self.kind.encode())
        for batch in self:
            for name in sorted(batch):
                array = np.ascontiguousarray(batch[name])
                digest.update(name.encode())
                digest.update(str(array.dtype).encode() + str(array.shape).encode())
                digest.update(array.tobytes())
        return digest.hexdigest()

    def __iter__(self) -> Iterator[Feeds]:
        # After validate(), every batch is checked, not just the first one.
        specs = getattr(self, "_validated_specs", None)
        for index, batch in enumerate(self._batches()):
            if specs is not None:
                _check_batch(batch, specs, f"{self.describe()} (batch {index})")
            yield batch

    def _batches(self) -> Iterator[Feeds]:
        pending: list[Feeds] = []
        pending_count = 0
        emitted = 0
        for chunk in self._samples():
            if not chunk:
                continue
            count = _sample_count(chunk, self.describe())
            if count == 0:  # an empty item: skip it, not end the data
                continue
            if self.limit is not None:
                count = min(count, self.limit - emitted - pending_count)
                chunk = {name: array[:count] for name, array in chunk.items()}
            if count <= 0:
                break
            pending.append(chunk)
            pending_count += count
            while pending_count >= self.batch_size:
                batch, pending, pending_count = self._take(pending, pending_count)
                emitted += len(next(iter(batch.values())))
                yield batch
            if self.limit is not None and emitted + pending_count >= self.limit:
                break
        if pending_count:
            batch, _, _ = self._take(pending, pending_count, size=pending_count)
            yield batch

    def _take(self, pending: list[Feeds], count: int, size: int | None = None):
        """The first ``size`` pending samples as one batch, and the pending rest. Chunks are
        sliced, not re-concatenated: a batch inside one chunk is a view of it (a 64-sample
        ``.npz`` at batch 1 used to be copied 64 times)."""
        size = size or self.batch_size
        parts: list[Feeds] = []
        rest: list[Feeds] = []
        need = size
        for chunk in pending:
            if need == 0:
                rest.append(chunk)
                continue
            available = _sample_count(chunk, self.describe())
            if available <= need:
                parts.append(chunk)
                need -= available
            else:
                parts.append({name: array[:need] for name, array in chunk.items()})
                rest.append({name: array[need:] for name, array in chunk.items()})
                need = 0
        batch = {
            name: np.ascontiguousarray(parts[0][name])
            if len(parts) == 1
            else np.concatenate([part[name] for part in parts], axis=0)
            for name in parts[0]
        }
        return batch, rest, count - size

    # ONNX Runtime's CalibrationDataReader protocol.
    def get_next(self) -> Feeds | None:
        if self._iterator is None:
            self._iterator = iter(self)
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = None

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def sample_count(self) -> int:
        return sum(len(next(iter(batch.values()))) for batch in self)

    def validate(self, model: ir.Model) -> list[InputSpec]:
        """Checks the first batch against the model's inputs; raises InputDataError naming the input."""
        specs = input_specs(model)
        first = next(iter(self), None)
        if first is None:
            raise InputDataError(
                f"{self.describe()}: no samples; give at least one calibration sample."
            )
        fixed_batch = [
            s for s in specs if self.rebatches and s.shape and isinstance(s.shape[0], int)
        ]
        for spec in fixed_batch:
            if self.batch_size != spec.shape[0] and spec.shape[0] != 1:
                raise InputDataError(
                    f"{self.describe()}: input '{spec.name}' has a fixed batch of {spec.shape[0]}, "
                    f"batch_size is {self.batch_size}; set batch_size={spec.shape[0]}."
                )
        validate_feeds(first, specs, self.describe())
        self._validated_specs = specs
        return specs


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


def _as_batch(value: Any, key_if_array: str, origin: str) -> Feeds:
    """A sample or a batch given as a dict/array/tuple -> dict of arrays with samples on axis 0."""
    if isinstance(value, Mapping):
        return {str(k): _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)) and value and not isinstance(value[0], (int, float)):
        # A DataLoader yields (inputs, labels): the first element holds the inputs.
        return _as_batch(value[0], key_if_array, origin)
    return {key_if_array: _to_numpy(value)}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class NpzReader(CalibrationReader):
    """One ``.npz`` file: arrays keyed by input name, axis 0 = samples (loaded lazily, per key)."""

    kind = "npz file"

    def __init__(self, path: str | os.PathLike, *, batch_size: int = 1, limit: int | None = None):
        super().__init__(batch_size=batch_size, limit=limit)
        self.path = Path(path)
        if not self.path.is_file():
            raise InputDataError(f"{self.path}: calibration file not found; check the path.")

    def describe(self) -> str:
        return str(self.path)

    def fingerprint(self) -> str:
        stat = self.path.stat()
        return hashlib.sha256(
            f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.limit}".encode()
        ).hexdigest()

    def _samples(self) -> Iterator[Feeds]:
        with np.load(self.path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        lengths = {name: len(a) for name, a in arrays.items() if a.ndim}
        if len(set(lengths.values())) > 1:
            raise InputDataError(
                f"{self.path}: arrays have different sample counts {lengths}; axis 0 must count samples in every array."
            )
        yield arrays


class NpyFolderReader(CalibrationReader):
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
    ):
        super().__init__(batch_size=batch_size, limit=limit)
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
        return hashlib.sha256("\n".join([str(self.limit), *parts]).encode()).hexdigest()

    def _samples(self) -> Iterator[Feeds]:
        for path in self.files:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    feeds = {name: archive[name] for name in archive.files}
            else:
                feeds = {self.input_name: np.load(path, allow_pickle=False)}
            if not self.stacked:
                feeds = {name: array[None] for name, array in feeds.items()}
            yield feeds


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """Declared preprocessing of an image folder: what the model was trained with.

    Order: resize (shorter side to ``resize`` or exactly ``(h, w)``), center crop, scale
    (pixel / 255 * scale), ``(x - mean) / std`` per channel, layout, dtype.
    """

    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    dtype: str = "float32"
    channels: str = "RGB"  # "RGB", "BGR" or "L"

    def __post_init__(self):
        if self.layout not in ("NCHW", "NHWC"):
            raise InputDataError(f"image layout must be NCHW or NHWC, got '{self.layout}'.")
        if self.channels not in ("RGB", "BGR", "L"):
            raise InputDataError(f"image channels must be RGB, BGR or L, got '{self.channels}'.")

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """HWC (or HW) uint8/float pixels -> one preprocessed sample (no batch axis)."""
        image = np.asarray(pixels, dtype=np.float32)
        if image.ndim == 2:
            image = image[:, :, None]
        if self.channels == "L" and image.shape[2] != 1:
            image = image[:, :, :3] @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        elif self.channels != "L":
            if image.shape[2] == 1:
                image = np.repeat(image, 3, axis=2)
            image = image[:, :, :3]
            if self.channels == "BGR":
                image = image[:, :, ::-1]
        if self.resize is not None:
            image = _resize(image, self.resize)
        if self.crop is not None:
            image = _center_crop(image, self.crop)
        image = image * self.scale
        channels = image.shape[2]
        mean = np.asarray(self.mean[:channels], np.float32)
        std = np.asarray(self.std[:channels], np.float32)
        image = (image - mean) / std
        if self.layout == "NCHW":
            image = image.transpose(2, 0, 1)
        return np.ascontiguousarray(image.astype(self.dtype))


def _target_size(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        if height <= width:
            return size, max(1, round(width * size / height))
        return max(1, round(height * size / width)), size
    return int(size[0]), int(size[1])


def _resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    height, width = _target_size(image.shape[0], image.shape[1], size)
    if importlib.util.find_spec("PIL") is not None:
        from PIL import Image

        planes = [
            np.asarray(Image.fromarray(image[:, :, c]).resize((width, height), Image.BILINEAR))
            for c in range(image.shape[2])
        ]
        return np.stack(planes, axis=2)
    # Without Pillow: nearest-neighbour sampling (declared in ImageFolderReader's docstring).
    rows = np.minimum(
        (np.arange(height) + 0.5) * image.shape[0] / height, image.shape[0] - 1
    ).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * image.shape[1] / width, image.shape[1] - 1).astype(
        int
    )
    return image[rows][:, cols]


def _center_crop(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[0] < height or image.shape[1] < width:
        raise InputDataError(
            f"image of {image.shape[0]}x{image.shape[1]} is smaller than the crop {height}x{width}; "
            "resize it first (set resize >= crop)."
        )
    top = (image.shape[0] - height) // 2
    left = (image.shape[1] - width) // 2
    return image[top : top + height, left : left + width]


class ImageFolderReader(CalibrationReader):
    """A folder of images with declared preprocessing, for a single image input.

    Decodes PNG/JPEG/... with Pillow when it is installed; without Pillow only ``.npy`` files
    holding HWC pixel arrays are read (and resizing is nearest-neighbour).
    """

    kind = "image folder"

    def __init__(
        self,
        folder: str | os.PathLike,
        preprocessing: ImagePreprocessing | None = None,
        *,
        input_name: str = "input",
        batch_size: int = 1,
        limit: int | None = None,
    ):
        super().__init__(batch_size=batch_size, limit=limit)
        self.folder = Path(folder)
        self.preprocessing = preprocessing or ImagePreprocessing()
        self.input_name = input_name
        has_pil = importlib.util.find_spec("PIL") is not None
        suffixes = (*IMAGE_SUFFIXES, ".npy") if has_pil else (".npy",)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in suffixes)
        if not self.files:
            hint = "" if has_pil else " (Pillow is not installed: only .npy pixel arrays are read)"
            raise InputDataError(f"{self.folder}: no images in the calibration folder{hint}.")

    def describe(self) -> str:
        return str(self.folder)

    def fingerprint(self) -> str:
        parts = [f"{p.name}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in self.files]
        return hashlib.sha256(
            "\n".join([repr(self.preprocessing), str(self.limit), *parts]).encode()
        ).hexdigest()

    def _load(self, path: Path) -> np.ndarray:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        from PIL import Image

        with Image.open(path) as image:
            mode = "L" if self.preprocessing.channels == "L" else "RGB"
            return np.asarray(image.convert(mode))

    def _samples(self) -> Iterator[Feeds]:
        for path in self.files:
            sample = self.preprocessing.apply(self._load(path))
            yield {self.input_name: sample[None]}


class IterableReader(CalibrationReader):
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
    ):
        super().__init__(batch_size=batch_size, limit=limit)
        if isinstance(source, Iterator):
            # A one-shot iterator cannot be rewound: keep what it yields.
            source = list(source)
        self.source = source
        self.input_name = input_name
        # torch DataLoaders yield batches; plain lists hold samples unless told otherwise.
        self.batched = batched if batched is not None else hasattr(source, "batch_size")

    def describe(self) -> str:
        return f"{type(self.source).__name__} data"

    def _samples(self) -> Iterator[Feeds]:
        items = (
            self.source()
            if callable(self.source) and not hasattr(self.source, "__iter__")
            else self.source
        )
        for item in items:
            feeds = _as_batch(item, self.input_name, self.describe())
            if not self.batched:
                feeds = {name: array[None] for name, array in feeds.items()}
            yield feeds


class RandomReader(CalibrationReader):
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
    ):
        super().__init__(batch_size=batch_size, limit=count)
        self.model = model
        self.count = count
        self.sizes = dict(sizes or {})
        self.seed = seed

    def fingerprint(self) -> str:
        shapes = [s.describe() for s in input_specs(self.model)]
        return hashlib.sha256(
            f"random|{self.seed}|{self.count}|{self.batch_size}|{self.sizes}|{shapes}".encode()
        ).hexdigest()

    def _samples(self) -> Iterator[Feeds]:
        for index in range(self.count):
            yield random_inputs(self.model, self.sizes, seed=self.seed + index, batch=1)

    def _batches(self) -> Iterator[Feeds]:
        # Feeds shaped exactly like the model's inputs (fixed batch, scalars): no re-batching,
        # which would cut a fixed first dim or fail on a scalar input.
        for index in range(-(-self.count // self.batch_size)):
            yield random_inputs(
                self.model, self.sizes, seed=self.seed + index, batch=self.batch_size
            )


def open_reader(
    data: Any,
    model: ir.Model | None = None,
    *,
    batch_size: int = 1,
    limit: int | None = None,
    input_name: str | None = None,
    preprocessing: ImagePreprocessing | Mapping[str, Any] | None = None,
    sizes: DimSizes | None = None,
) -> CalibrationReader:
    """A reader for what the user gave: a reader, a path (``.npz``, folder of ``.npy``/``.npz``
    or images), ``"random"``/``"random:N"`` (smoke data), or a Python iterable / DataLoader."""
    if isinstance(data, CalibrationReader):
        return data
    if isinstance(preprocessing, Mapping):
        preprocessing = ImagePreprocessing(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in preprocessing.items()}
        )
    if isinstance(data, str) and data.startswith("random"):
        if model is None:
            raise InputDataError(
                "random calibration data needs the model to read input shapes from."
            )
        text = data.split(":", 1)[1] if ":" in data else str(limit or 8)
        if data.split(":", 1)[0] != "random" or not text.lstrip("-").isdigit():
            raise InputDataError(
                f"calibration data '{data}' is not understood; write 'random' or 'random:N' (N samples)."
            )
        count = int(text)
        return RandomReader(model, count=count, sizes=sizes, batch_size=batch_size)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise InputDataError(
                f"{path}: calibration data not found; give an .npz file or a folder."
            )
        if path.is_file():
            if path.suffix != ".npz":
                raise InputDataError(
                    f"{path}: unsupported calibration file type '{path.suffix}'; give an .npz "
                    "file (arrays keyed by input name) or a folder of .npy/.npz files or images."
                )
            return NpzReader(path, batch_size=batch_size, limit=limit)
        entries = [p for p in path.iterdir() if p.is_file()]
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
        name = (
            _single_input_name(model, input_name, str(path))
            if (has_images or preprocessing or any(p.suffix == ".npy" for p in entries))
            else None
        )
        if has_images or preprocessing is not None:
            return ImageFolderReader(
                path, preprocessing, input_name=name or "input", batch_size=batch_size, limit=limit
            )
        stacked = None
        if model is not None and name is not None:
            first_npy = next((p for p in sorted(entries) if p.suffix == ".npy"), None)
            spec = next(s for s in input_specs(model) if s.name == name)
            if first_npy is not None and spec.shape:
                stacked = np.load(first_npy, mmap_mode="r").ndim == len(spec.shape)
        return NpyFolderReader(
            path, input_name=name, batch_size=batch_size, limit=limit, stacked=stacked
        )
    if isinstance(data, np.ndarray) or isinstance(data, Mapping):
        key = _single_input_name(model, input_name, "calibration arrays")
        batch = _as_batch(data, key, "calibration arrays")
        return IterableReader(
            [batch], input_name=key, batched=True, batch_size=batch_size, limit=limit
        )
    if isinstance(data, Iterable) or callable(data):
        # Only bare arrays need the key; dict items name their inputs themselves.
        specs = input_specs(model) if model is not None else []
        key = input_name or (specs[0].name if len(specs) == 1 else "input")
        reader = IterableReader(data, input_name=key, batch_size=batch_size, limit=limit)
        if specs and not hasattr(data, "batch_size"):
            # Items whose rank equals the model's input rank already carry the batch axis.
            first = next(
                iter(
                    reader.source()
                    if callable(reader.source) and not hasattr(reader.source, "__iter__")
                    else reader.source
                ),
                None,
            )
            if first is not None:
                feeds = _as_batch(first, key, reader.describe())
                ranks = {s.name: len(s.shape) for s in specs if s.shape}
                reader.batched = any(
                    name in ranks and np.ndim(array) == ranks[name] for name, array in feeds.items()
                )
        return reader
    raise InputDataError(
        f"calibration data of type {type(data).__name__} is not supported; give an .npz file, "
        "a folder, 'random', or an iterable of dicts/arrays."
    )
