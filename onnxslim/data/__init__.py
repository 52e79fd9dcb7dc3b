"""The embedded demo model (a compact ResNet trained on scikit-learn's digits) and its data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["demo_model_path", "demo_data", "upsample_digits"]

_SCALE = 4  # 8x8 digits -> 32x32 images


def demo_model_path() -> Path:
    """Path of the shipped ONNX model: input ``image`` [N,1,32,32] float32, output ``logits`` [N,10]."""
    return Path(str(resources.files(__package__) / "digits_resnet.onnx"))


def upsample_digits(images: np.ndarray) -> np.ndarray:
    """uint8 8x8 digits (0..16) -> float32 [N,1,32,32] in [0,1], nearest-neighbour upsampling."""
    scaled = images.astype(np.float32) / 16.0
    scaled = scaled.repeat(_SCALE, axis=-2).repeat(_SCALE, axis=-1)
    return scaled[:, None, :, :]


def demo_data() -> dict[str, np.ndarray]:
    """Train/calibration/test splits as model-ready arrays (``*_images`` float32, ``*_labels`` int64)."""
    with (
        resources.as_file(resources.files(__package__) / "digits.npz") as path,
        np.load(path) as raw,
    ):
        train = upsample_digits(raw["train_images"])
        return {
            "train_images": train,
            "train_labels": raw["train_labels"],
            "calibration_images": train[raw["calibration_index"]],
            "test_images": upsample_digits(raw["test_images"]),
            "test_labels": raw["test_labels"],
        }
