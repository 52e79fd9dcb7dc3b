"""Augmentation of unlabelled inputs: seeded, shape- and dtype-keeping, at the asked rates."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim import SlimError
from onnxslim.inputs import (
    AudioAugment,
    ImageAugment,
    TextAugment,
    augment_feeds,
    augmentation,
)


def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.random((6, 3, 12, 10)).astype(np.float32)}


def audio() -> dict[str, np.ndarray]:
    t = np.arange(800) / 8000
    return {"wave": np.stack([np.sin(2 * np.pi * 440 * t)] * 4).astype(np.float32)}


def tokens() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(64, 40)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    mask[:, 30:] = 0
    ids[:, 30:-1] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.mark.parametrize(
    ("augment", "feeds"),
    [("image", images), ("audio", audio), ("text", tokens), ("text:103", tokens)],
)
def test_same_seed_same_output_other_seed_or_step_another(augment, feeds):
    chosen = augmentation(augment)
    first = augment_feeds(chosen, feeds(), seed=3, step=5)
    again = augment_feeds(chosen, feeds(), seed=3, step=5)
    other_seed = augment_feeds(chosen, feeds(), seed=4, step=5)
    other_step = augment_feeds(chosen, feeds(), seed=3, step=6)
    for name, array in feeds().items():
        assert first[name].shape == array.shape and first[name].dtype == array.dtype
        np.testing.assert_array_equal(first[name], again[name])
    changed = [n for n in first if not np.array_equal(first[n], feeds()[n])]
    assert changed  # something was augmented
    assert any(not np.array_equal(first[n], other_seed[n]) for n in changed)
    assert any(not np.array_equal(first[n], other_step[n]) for n in changed)


def test_image_flip_only_mirrors_and_crop_keeps_the_size():
    feeds = images()
    flipped = ImageAugment(flip=1.0, crop=0.0, brightness=0.0, contrast=0.0)(
        feeds, np.random.default_rng(0)
    )
    np.testing.assert_allclose(flipped["image"], feeds["image"][..., ::-1], rtol=1e-6)
    last = {"image": np.moveaxis(feeds["image"], 1, 3).copy()}  # N H W C
    flipped_last = ImageAugment(flip=1.0, crop=0.0, brightness=0.0, contrast=0.0)(
        last, np.random.default_rng(0)
    )
    np.testing.assert_allclose(flipped_last["image"], last["image"][:, :, ::-1], rtol=1e-6)
    cropped = ImageAugment(flip=0.0, crop=0.5, brightness=0.0, contrast=0.0)(
        feeds, np.random.default_rng(1)
    )
    assert cropped["image"].shape == (6, 3, 12, 10)
    # nearest resize of a window: every output pixel is an input pixel of the same sample
    for out, source in zip(cropped["image"], feeds["image"]):
        assert np.isin(out, source).all()


def test_audio_gain_noise_and_shift_stay_in_bounds():
    feeds = audio()
    shifted = AudioAugment(gain_db=0.0, noise=0.0, shift=0.1)(feeds, np.random.default_rng(0))
    for out, wave in zip(shifted["wave"], feeds["wave"]):
        shifts = [s for s in range(-80, 81) if np.allclose(np.roll(wave, s), out, atol=1e-6)]
        assert shifts
    loud = AudioAugment(gain_db=6.0, noise=0.0, shift=0.0)(feeds, np.random.default_rng(0))
    ratios = np.abs(loud["wave"]).max(axis=1) / np.abs(feeds["wave"]).max(axis=1)
    assert np.all((ratios >= 10 ** (-6 / 20) - 1e-6) & (ratios <= 10 ** (6 / 20) + 1e-6))
    noisy = AudioAugment(gain_db=0.0, noise=0.1, shift=0.0)(feeds, np.random.default_rng(0))
    rms = np.sqrt(np.mean((noisy["wave"] - feeds["wave"]) ** 2))
    assert 0.1 * np.sqrt(0.5) * 0.9 < rms < 0.1 * np.sqrt(0.5) * 1.1


def test_text_masking_rate_and_what_is_never_touched():
    feeds = tokens()
    out = TextAugment(rate=0.2, mask_id=103)(feeds, np.random.default_rng(0))
    eligible = (feeds["attention_mask"] == 1) & ~np.isin(feeds["input_ids"], (0, 101, 102))
    masked = out["input_ids"] == 103
    assert not (masked & ~eligible).any()  # no [CLS], [SEP] or padding masked
    assert abs(masked.sum() / eligible.sum() - 0.2) < 0.02
    np.testing.assert_array_equal(out["input_ids"][~masked], feeds["input_ids"][~masked])
    np.testing.assert_array_equal(out["attention_mask"], feeds["attention_mask"])
    np.testing.assert_array_equal(out["token_type_ids"], feeds["token_type_ids"])
    dropped = TextAugment(rate=0.3)(feeds, np.random.default_rng(0))
    np.testing.assert_array_equal(dropped["input_ids"], feeds["input_ids"])
    gone = (feeds["attention_mask"] == 1) & (dropped["attention_mask"] == 0)
    assert abs(gone.sum() / eligible.sum() - 0.3) < 0.02
    assert not (gone & ~eligible).any()


def test_unknown_augmentation_and_a_shape_change_are_refused():
    with pytest.raises(SlimError, match="augment 'video' is not an augmentation"):
        augmentation("video")
    with pytest.raises(SlimError, match="augment changed input 'image'"):
        augment_feeds(lambda feeds, rng: {"image": feeds["image"][:1]}, images(), 0, 0)
    assert augmentation(None) is None
