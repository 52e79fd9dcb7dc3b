"""The PP-OCR cls/rec and all-MiniLM-L6-v2 inputs, labels and scorers of quant_vs_peers.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cls_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cropped text lines (one line of words filling the height, as rapidocr's detector crops
    them), half turned by 180 degrees, preprocessed like rapidocr's classifier (3x48x192 BGR,
    (x/255 - 0.5)/0.5); labels 0 (upright) / 1 (180)."""
    from _real_data import WORDS
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    batch = []
    for label in labels:
        image = Image.new("RGB", (192, 48), tuple(int(v) for v in rng.integers(190, 256, 3)))
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=int(rng.integers(28, 36)))
        text = " ".join(rng.choice(WORDS, size=3))
        colour = tuple(int(v) for v in rng.integers(0, 70, 3))
        draw.text((int(rng.integers(0, 8)), int(rng.integers(2, 8))), text, fill=colour, font=font)
        if label:
            image = image.rotate(180)
        pixels = np.asarray(image, np.float32)[:, :, ::-1] / 255.0
        batch.append(((pixels - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32), labels


def ctc_table(path: str | Path) -> tuple[str, ...]:
    """The recognizer's character per class, from its metadata (Paddle's ``character``)."""
    import onnx

    from onnxslim.fidelity import ctc_characters
    from onnxslim.runtime import create_session

    metadata = {
        p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
    }
    classes = create_session(path).get_outputs()[0].shape[-1]
    table = ctc_characters(metadata, classes)
    if table is None:
        raise SystemExit(f"{path} holds no character table for its {classes} classes")
    return table


def char_accuracy(outputs: list[np.ndarray], words: list[str], table: tuple[str, ...]) -> float:
    """1 - edit distance / label length over all words (greedy CTC text, edge spaces stripped)."""
    from onnxslim.fidelity import ctc_texts, edit_distance

    texts = [t for o in outputs for t in ctc_texts(o, table)]
    errors = sum(edit_distance(t, w) for t, w in zip(texts, words, strict=True))
    return 1.0 - errors / sum(len(w) for w in words)


def minilm(samples: int, folder: Path) -> dict:
    """all-MiniLM-L6-v2 exported as ``pipeline_real_models`` does (once per folder); half the
    sentences calibrate, the other half are held out (the same split as that script's)."""
    from _real_data import SENTENCES
    from pipeline_real_models import _minilm_files, export_minilm

    from onnxslim.testing import WordPieceTokenizer

    model_dir = _minilm_files()
    path = folder / "minilm.onnx"
    if not path.is_file():
        export_minilm(model_dir, path)
    tokenizer = WordPieceTokenizer(model_dir / "vocab.txt")
    order = np.random.default_rng(0).permutation(len(SENTENCES))
    half = len(order) // 2
    calibration = [SENTENCES[i] for i in order[:half][:samples]]
    held_out = [SENTENCES[i] for i in order[half:]]
    return {
        "path": path,
        "calibration": tokenizer(calibration),
        "held_out": tokenizer(held_out),
        "metric": ("mean cosine vs fp32", None),
        "compare": mean_cosine,
    }


def mean_cosine(reference: np.ndarray, outputs: np.ndarray) -> float:
    a, b = reference.reshape(len(reference), -1), outputs.reshape(len(outputs), -1)
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return float(cosine.mean())
