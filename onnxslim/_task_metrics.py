"""Task metrics on one output's arrays (reference vs candidate): top-1, cosine, map IoU, per-step
top-1, CTC agreement, and the metric an output calls for from its shape and range.

``onnxslim.fidelity`` re-exports them next to ``TaskMetric``, which judges with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "choose_metric",
    "edit_distance",
    "ctc_agreement",
    "ctc_characters",
    "ctc_decode",
    "ctc_texts",
    "map_iou",
    "map_threshold",
    "mean_cosine",
    "seq_top1_agreement",
    "top1_agreement",
]


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of rows (over the last axis) whose argmax is unchanged."""
    return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over samples (axis 0) of the cosine similarity of each sample's flattened values."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = np.sum(ref * cand, axis=1)
    both_zero = (norms == 0) & (np.abs(ref).sum(1) == np.abs(cand).sum(1))
    cosines = np.where(norms > 0, dots / np.maximum(norms, 1e-300), both_zero.astype(float))
    return float(np.mean(cosines))


def map_iou(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.5) -> float:
    """Mean over samples of the IoU of the regions above ``threshold`` (1 where both are empty)."""
    ref = (reference > threshold).reshape(len(reference), -1)
    cand = (candidate > threshold).reshape(len(candidate), -1)
    union = np.sum(ref | cand, axis=1)
    inter = np.sum(ref & cand, axis=1)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def seq_top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Per-step argmax agreement on [batch, steps, classes] scores (CTC decodes these argmaxes)."""
    if reference.ndim != 3:
        raise ValueError(f"seq-top1 needs [batch, steps, classes] scores, got {reference.shape}")
    return top1_agreement(reference, candidate)


def ctc_decode(scores: np.ndarray, blank: int = 0) -> list[list[int]]:
    """Greedy CTC decode of [batch, steps, classes] scores: argmax, repeats merged, blanks dropped."""
    decoded = []
    for best in np.asarray(scores).argmax(-1):
        keep = np.ones(len(best), bool)
        keep[1:] = best[1:] != best[:-1]
        decoded.append([int(c) for c in best[keep] if c != blank])
    return decoded


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance of two sequences (class ids or the characters of two strings)."""
    row = list(range(len(b) + 1))
    for i, left in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, right in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (left != right))
    return row[-1]


def ctc_characters(metadata: Mapping[str, str], classes: int) -> tuple[str, ...] | None:
    """The text of each class of a CTC output from the model's metadata, or None.

    Paddle recognizers store their table under ``character``, one per line, without the blank
    (class 0) and, when the output has one class more, the space (the last class), as PaddleOCR
    and rapidocr decode them. None when there is no table or its size does not match ``classes``.
    """
    text = metadata.get("character")
    lines = text.splitlines() if text else []
    if lines and len(lines) + 2 == classes:
        return ("", *lines, " ")
    if lines and len(lines) + 1 == classes:
        return ("", *lines)
    return None


def ctc_texts(scores: np.ndarray, characters: Sequence[str], blank: int = 0) -> list[str]:
    """The greedy CTC decodes of [batch, steps, classes] scores as text, as an OCR user reads
    it: ``characters[class]`` joined, edge whitespace stripped, inner runs of it one space."""
    return [
        " ".join("".join(characters[c] for c in ids).split()) for ids in ctc_decode(scores, blank)
    ]


def ctc_agreement(
    reference: np.ndarray,
    candidate: np.ndarray,
    blank: int = 0,
    characters: Sequence[str] | None = None,
) -> float:
    """1 - edit distance / length of the reference's greedy CTC decodes (the float model's
    characters kept), over all samples; 1.0 when both decode to nothing.

    With the model's ``characters`` (:func:`ctc_characters`) the decodes are compared as the
    text a user reads (:func:`ctc_texts`: edge whitespace stripped, inner runs collapsed);
    without, as class ids.
    """
    if reference.ndim != 3:
        raise ValueError(f"ctc needs [batch, steps, classes] scores, got {reference.shape}")
    pairs: list[tuple[Sequence, Sequence]]
    if characters is not None:
        if len(characters) != reference.shape[-1]:
            raise ValueError(f"ctc: {len(characters)} characters for {reference.shape[-1]} classes")
        texts = zip(
            ctc_texts(reference, characters, blank), ctc_texts(candidate, characters, blank)
        )
        pairs = list(texts)
    else:
        pairs = list(zip(ctc_decode(reference, blank), ctc_decode(candidate, blank)))
    length = sum(len(r) for r, _ in pairs)
    errors = sum(edit_distance(r, c) for r, c in pairs)
    return 1.0 - errors / length if length else float(errors == 0)


def _probability_rows(array: np.ndarray) -> bool:
    rows = array.reshape(-1, array.shape[-1]).astype(np.float64)
    if rows.min() >= 0 and rows.max() <= 1 + 1e-6:
        return bool(np.allclose(rows.sum(-1), 1.0, atol=1e-3))
    if rows.max() <= 1e-6:  # log-probabilities
        return bool(np.allclose(np.log(np.exp(rows).sum(-1)), 0.0, atol=1e-3))
    return False


# A map is a mask when one split into two levels explains this share of its variance (Otsu's
# effectiveness): PP-OCR's text maps reach 0.99, a smooth map (depth, saliency) stays near 0.75.
MASK_SEPARATION = 0.9
_UNIT_SLACK = 1e-6
_MAP_BINS = 256


def map_threshold(values: np.ndarray) -> tuple[float, float]:
    """Otsu's split of values in [0, 1] (the threshold that best separates two levels, on a
    256-bin histogram, the middle of an empty gap, rounded to 0.01) and the share of the variance
    it explains; (0.5, 0.0) for a constant map."""
    values = np.clip(np.asarray(values, np.float64).ravel(), 0.0, 1.0)
    hist, edges = np.histogram(values, bins=_MAP_BINS, range=(0.0, 1.0))
    share = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    below, below_sum = np.cumsum(share)[:-1], np.cumsum(share * centres)[:-1]
    total_mean, total_var = float(np.sum(share * centres)), float(np.var(values))
    between = (total_mean * below - below_sum) ** 2 / np.maximum(below * (1 - below), 1e-12)
    if total_var <= 1e-12 or not np.any(between > 0):
        return 0.5, 0.0
    # an empty gap between the levels ties every split in it: take its middle, not its edge
    ties = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    threshold = float(edges[ties[0] + 1] + edges[ties[-1] + 1]) / 2
    return round(threshold, 2), min(1.0, float(between.max()) / total_var)


def _map_metric(where: str, values: np.ndarray) -> tuple[str, str]:
    """IoU at the reference's own two-level split; SQNR for a map without two levels."""
    threshold, separation = map_threshold(values)
    if separation == 0.0:
        return "iou@0.5", f"{where}: a map of values in [0, 1], constant, thresholded at 0.5"
    if separation < MASK_SEPARATION:
        return "sqnr", (
            f"{where}: a map of values in [0, 1] without two levels (a split explains "
            f"{100 * separation:.0f}% of its variance, under {100 * MASK_SEPARATION:.0f}%): "
            "not a mask"
        )
    return f"iou@{threshold:g}", (
        f"{where}: a map of values in [0, 1], thresholded at {threshold:g}, Otsu's split of the "
        f"float model's values ({100 * separation:.0f}% of their variance between the two "
        "levels); the binarization threshold a model family uses is not in the graph"
    )


def choose_metric(name: str, reference: np.ndarray) -> tuple[str, str]:
    """The task metric for one output from its shape and range on the reference model, and why.

    ``top1`` here means the classic proxies (decisive top-1 agreement and output SQNR).
    """
    shape = "x".join(str(d) for d in reference.shape)
    where = f"output '{name}' [{shape}]"
    if np.issubdtype(reference.dtype, np.integer) or reference.dtype == np.bool_:
        # the guard judges these on the share of values kept, at the top-1 floor
        return "agreement", f"{where}: integer values (indices, labels): judged by agreement rate"
    if not np.issubdtype(reference.dtype, np.floating) or reference.ndim < 2 or reference.size == 0:
        return "sqnr", f"{where}: not a score, embedding or map"
    finite = reference[np.isfinite(reference)]
    # ORT's float Sigmoid overshoots 1 by an ulp on saturated pixels (PP-OCR det: 1 + 1.2e-7)
    in_unit = finite.size > 0 and finite.min() >= -_UNIT_SLACK and finite.max() <= 1 + _UNIT_SLACK
    if reference.ndim >= 4 and in_unit:
        return _map_metric(where, finite)
    if reference.ndim >= 4:
        return "sqnr", f"{where}: a feature map with values outside [0, 1]"
    if reference.ndim == 3 and reference.shape[-1] > 1 and _probability_rows(reference):
        blank = float(np.mean(reference.argmax(-1) == 0))
        if blank >= 0.3:  # CTC: most steps say "no new character"
            return (
                "ctc",
                f"{where}: per-step probabilities, class 0 wins {100 * blank:.0f}% of steps (CTC)",
            )
        return "seq-top1", f"{where}: per-step class probabilities (sequence scores)"
    if reference.ndim == 3:
        return "cosine", f"{where}: per-token features, not probabilities (an embedding)"
    rows = reference.reshape(len(reference), -1).astype(np.float64)
    if reference.shape[-1] > 1 and _probability_rows(reference):
        return "top1", f"{where}: rows are class probabilities"
    if reference.shape[-1] > 1 and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3):
        return "cosine", f"{where}: rows of unit L2 norm (an embedding)"
    if reference.shape[-1] >= 128:
        return "cosine", f"{where}: {reference.shape[-1]} unnormalized features (an embedding)"
    if reference.shape[-1] > 1:
        return "top1", f"{where}: rows of {reference.shape[-1]} class scores"
    return "sqnr", f"{where}: one value per sample"
