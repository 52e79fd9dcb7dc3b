"""The accuracy guard's default metric for maps: IoU at the float model's own two-level split
(Otsu), SQNR for a map in [0, 1] that has no two levels; each where it must pass and fail."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim._task_metrics import map_threshold
from onnxslim.fidelity import TaskMetric, choose_metric, map_iou


def _text_map(background: float = 0.02, text: float = 0.97) -> np.ndarray:
    """Four 1x32x64 maps, each with two 6x54 'text lines' at ``text`` on ``background`` and a
    row halfway between above each (the ramp at the edge of DB-style probability maps)."""
    maps = np.full((4, 1, 32, 64), background, np.float32)
    for index in range(4):
        for top in (4 + index, 18 + index):
            maps[index, 0, top - 1, 5:59] = (background + text) / 2
            maps[index, 0, top : top + 6, 5:59] = text
    return maps


def _batches(array: np.ndarray) -> list[dict]:
    return [{"map": array[i : i + 1]} for i in range(len(array))]


def test_a_two_level_map_is_thresholded_at_its_otsu_split():
    threshold, separation = map_threshold(_text_map())
    assert threshold == 0.26 and separation == pytest.approx(0.9446, abs=1e-4)
    assert map_threshold(_text_map(background=0.1, text=0.7)) == (
        0.25,
        pytest.approx(0.9517, abs=1e-4),
    )
    # two levels and an empty gap between them: the middle of the gap, not its edge
    assert map_threshold(np.where(_text_map() > 0.9, 0.8, 0.05)) == (0.42, pytest.approx(1.0))
    # ORT's Sigmoid overshoots 1 by an ulp: still a map in [0, 1]
    overshoot = _text_map()
    overshoot[0, 0, 4, 5] = np.float32(1.0000001)
    chosen, reason = choose_metric("maps", overshoot)
    assert chosen == "iou@0.26"
    assert "thresholded at 0.26, Otsu's split of the float model's values (94%" in reason
    assert "not in the graph" in reason


def test_the_chosen_iou_passes_noise_and_fails_text_that_loses_its_edge():
    reference = _text_map()
    metric = TaskMetric(choose_metric("map", reference)[0], outputs=("map",))
    noisy = reference + np.random.default_rng(0).uniform(-0.2, 0.2, reference.shape)
    assert metric.judge(_batches(reference), _batches(noisy.astype(np.float32))) == (1.0, None)
    # the ramp rows fall to the background: 648 of the 756 pixels above the split are left
    edgeless = np.where(reference < 0.9, 0.02, reference).astype(np.float32)
    assert map_iou(reference, edgeless, threshold=0.26) == pytest.approx(648 / 756)
    assert metric.judge(_batches(reference), _batches(edgeless)) == (
        pytest.approx(648 / 756),
        "iou@0.26 0.8571 < 0.95",
    )


def test_a_smooth_map_in_the_unit_range_is_judged_on_sqnr_not_iou():
    grid = np.linspace(0.0, 1.0, 32)
    bump = np.exp(-((grid[:, None] - 0.5) ** 2 + (grid[None] - 0.5) ** 2) / 0.1)
    smooth = np.stack([bump * (0.5 + 0.1 * i) for i in range(4)])[:, None].astype(np.float32)
    chosen, reason = choose_metric("depth", smooth)
    assert chosen == "sqnr"
    assert reason.endswith(
        "without two levels (a split explains 74% of its variance, under 90%): not a mask"
    )


def test_a_constant_map_keeps_the_mid_range_threshold():
    assert map_threshold(np.full((2, 1, 4, 4), 0.3)) == (0.5, 0.0)
    assert choose_metric("flat", np.full((2, 1, 4, 4), 0.3, np.float32))[0] == "iou@0.5"
