"""Image folders with declared preprocessing (resize, crop, scale, normalize, layout)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxslim._errors import InputDataError
from onnxslim.inputs._base import BatchedReader, Feeds
from onnxslim.inputs._specs import InputSpec

__all__ = ["IMAGE_SUFFIXES", "ImagePreprocessing", "ImageFolderReader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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
            np.asarray(Image.fromarray(image[:, :, c]).resize((width, height), Image.BILINEAR))  # type: ignore[attr-defined]
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


class ImageFolderReader(BatchedReader):
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
        constants: Mapping[str, Any] | None = None,
        specs: Sequence[InputSpec] | None = None,
    ):
        super().__init__(batch_size=batch_size, limit=limit, constants=constants, specs=specs)
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
            (
                "\n".join([repr(self.preprocessing), str(self.limit), *parts]) + self._layout_key()
            ).encode()
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
            yield self._stack_one({self.input_name: sample})
