"""Augmentation of unlabelled inputs: images, audio and token ids, deterministic under a seed.

An augmentation is a callable ``(feeds, rng) -> feeds`` that keeps every input's shape and
dtype; ``augmentation("image" | "audio" | "text" | "text:MASK_ID" | callable)`` resolves the
names, and ``augment_feeds(augment, feeds, seed, step)`` draws the step's generator from
``(seed, step)``, so a run (or a resumed run) sees the same augmented batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from onnxslim._errors import InputDataError

__all__ = [
    "AUGMENTATIONS",
    "Augment",
    "AudioAugment",
    "ImageAugment",
    "TextAugment",
    "augment_feeds",
    "augmentation",
]

Feeds = Mapping[str, np.ndarray]
Augment = Callable[[Feeds, np.random.Generator], dict[str, np.ndarray]]
AUGMENTATIONS = ("image", "audio", "text")


def _floats(feeds: Feeds, ranks: Sequence[int]) -> list[str]:
    return [
        name
        for name, array in feeds.items()
        if np.issubdtype(np.asarray(array).dtype, np.floating) and np.ndim(array) in ranks
    ]


@dataclasses.dataclass(frozen=True)
class ImageAugment:
    """Per sample of every float 4-D input: horizontal flip (probability ``flip``), a crop of up
    to ``crop`` of each side resized back (nearest), brightness and contrast factors in
    ``1 +- brightness`` / ``1 +- contrast``. Channels last when axis 3 has 1, 3 or 4 elements and
    axis 1 has not."""

    flip: float = 0.5
    crop: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2

    def __call__(self, feeds: Feeds, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = dict(feeds)
        for name in _floats(feeds, (4,)):
            array = np.asarray(feeds[name])
            last = array.shape[3] in (1, 3, 4) and array.shape[1] not in (1, 3, 4)
            nchw = np.moveaxis(array, 3, 1) if last else array
            result = np.stack([self._sample(sample, rng) for sample in nchw])
            out[name] = (np.moveaxis(result, 1, 3) if last else result).astype(array.dtype)
        return out

    def _sample(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One C x H x W image."""
        _, height, width = image.shape
        if rng.random() < self.flip:
            image = image[:, :, ::-1]
        if self.crop > 0:
            keep = 1.0 - rng.uniform(0.0, self.crop, size=2)
            rows = _crop_index(height, keep[0], rng)
            columns = _crop_index(width, keep[1], rng)
            image = image[:, rows][:, :, columns]
        image = image.astype(np.float64)
        mean = image.mean()
        contrast = rng.uniform(1 - self.contrast, 1 + self.contrast)
        brightness = rng.uniform(1 - self.brightness, 1 + self.brightness)
        return ((image - mean) * contrast + mean) * brightness


def _crop_index(size: int, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random window of ``keep`` of ``size`` stretched back to ``size`` (nearest)."""
    window = max(1, int(round(size * keep)))
    start = int(rng.integers(0, size - window + 1))
    return start + (np.arange(size) * window) // size


@dataclasses.dataclass(frozen=True)
class AudioAugment:
    """Per sample of every float 2-D (N, T) or 3-D (N, C, T) input: a gain in ``+- gain_db``,
    Gaussian noise of ``noise`` times the sample's RMS, a circular shift of up to ``shift`` of
    its length."""

    gain_db: float = 6.0
    noise: float = 0.01
    shift: float = 0.1

    def __call__(self, feeds: Feeds, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = dict(feeds)
        for name in _floats(feeds, (2, 3)):
            array = np.asarray(feeds[name])
            samples = []
            for wave in array.astype(np.float64):
                gain = 10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)
                rms = float(np.sqrt(np.mean(wave**2))) or 1.0
                wave = wave * gain + rng.normal(0.0, self.noise * rms * gain, size=wave.shape)
                limit = int(self.shift * wave.shape[-1])
                samples.append(np.roll(wave, int(rng.integers(-limit, limit + 1)), axis=-1))
            out[name] = np.stack(samples).astype(array.dtype)
        return out


@dataclasses.dataclass(frozen=True)
class TextAugment:
    """Token masking of the ids input (``ids_input``, else an integer input named ``*ids*``
    that is not a type id, else the first integer input): each token not in ``keep_ids`` and
    not padding (attention mask 0) is chosen with probability ``rate``; a chosen token becomes
    ``mask_id`` or, with ``mask_id`` None, is dropped: its attention mask set to 0 (an input
    named ``*mask*``), else its id set to ``pad_id``."""

    rate: float = 0.15
    mask_id: int | None = None
    keep_ids: tuple[int, ...] = (0, 101, 102)  # padding, [CLS], [SEP] of BERT vocabularies
    pad_id: int = 0
    ids_input: str | None = None

    def __call__(self, feeds: Feeds, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = dict(feeds)
        ids_name = self.ids_input or _ids_input(feeds)
        if ids_name is None:
            return out
        ids = np.asarray(feeds[ids_name])
        masks = [n for n in feeds if "mask" in n.lower() and np.shape(feeds[n]) == ids.shape]
        attention = np.asarray(feeds[masks[0]]) if masks else np.ones_like(ids)
        eligible = ~np.isin(ids, self.keep_ids) & (attention != 0)
        chosen = eligible & (rng.random(ids.shape) < self.rate)
        if self.mask_id is not None:
            out[ids_name] = np.where(chosen, np.asarray(self.mask_id, ids.dtype), ids)
        elif masks:
            out[masks[0]] = np.where(chosen, np.zeros((), attention.dtype), attention)
        else:
            out[ids_name] = np.where(chosen, np.asarray(self.pad_id, ids.dtype), ids)
        return out


def _ids_input(feeds: Feeds) -> str | None:
    integers = [n for n, a in feeds.items() if np.issubdtype(np.asarray(a).dtype, np.integer)]
    named = [n for n in integers if "ids" in n.lower() and "type" not in n.lower()]
    candidates = named or [n for n in integers if "mask" not in n.lower()]
    return candidates[0] if candidates else None


def augmentation(spec: str | Augment | None) -> Augment | None:
    """The augmentation named by ``spec``: "image", "audio", "text", "text:MASK_ID", a callable
    ``(feeds, rng) -> feeds``, or None (no augmentation)."""
    if spec is None or callable(spec):
        return spec
    name, _, argument = str(spec).partition(":")
    if name == "image" and not argument:
        return ImageAugment()
    if name == "audio" and not argument:
        return AudioAugment()
    if name == "text":
        if not argument:
            return TextAugment()
        if argument.isdigit():
            return TextAugment(mask_id=int(argument))
    raise InputDataError(
        f"augment '{spec}' is not an augmentation; use image, audio, text, text:MASK_ID "
        "(e.g. text:103) or a callable (feeds, rng) -> feeds."
    )


def augment_feeds(augment: Augment, feeds: Feeds, seed: int, step: int) -> dict[str, np.ndarray]:
    """``augment`` applied with the generator of ``(seed, step)``; shapes and dtypes checked."""
    result = augment(feeds, np.random.default_rng([seed, step]))
    for name, array in feeds.items():
        got = result.get(name)
        if got is None or np.shape(got) != np.shape(array) or got.dtype != np.asarray(array).dtype:
            raise InputDataError(
                f"augment changed input '{name}' ({np.shape(array)}, {np.asarray(array).dtype} -> "
                f"{None if got is None else (np.shape(got), got.dtype)}); an augmentation must "
                "keep every input's shape and dtype."
            )
    return result
