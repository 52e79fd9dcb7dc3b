"""Importance of each unit of a group: magnitude, BN |gamma|, activation statistics, Taylor
(``_taylor``: |activation x gradient| of a distillation loss, torch), random.

A custom criterion is any callable ``(group, view) -> array of num_units scores`` (higher is kept).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from onnxslim.model import ValueProbe
from onnxslim.passes.pruning._apply import release_mapped
from onnxslim.passes.pruning._family import (
    ACTIVATION,
    CONSUMER,
    PARAM,
    PRODUCER,
)
from onnxslim.passes.pruning._groups import Group
from onnxslim.passes.pruning._ir import constant_array
from onnxslim.passes.pruning._view import GraphView

logger = logging.getLogger(__name__)

Criterion = Callable[[Group, GraphView], np.ndarray]


def _per_element(array: np.ndarray, axis: int, power: int) -> np.ndarray:
    # float64 rows a chunk at a time (~128 MiB): the same row sums as one float64 copy
    moved = np.moveaxis(array, axis, 0)
    step = max(1, (1 << 24) // max(1, moved[0].size))
    sums = []
    for start in range(0, moved.shape[0], step):
        rows = np.asarray(moved[start : start + step], dtype=np.float64).reshape(
            len(moved[start : start + step]), -1
        )
        sums.append(np.abs(rows).sum(axis=1) if power == 1 else np.square(rows).sum(axis=1))
    return np.concatenate(sums) if sums else np.zeros(0)


def magnitude(group: Group, power: int) -> np.ndarray:
    """Group L1/L2: the weights of producers, consumers and per-channel params, summed per unit."""
    scores = np.zeros(group.num_units)
    for slot, units in zip(group.slots, group.unit_of):
        if slot.role not in (PRODUCER, CONSUMER, PARAM):
            continue
        array = constant_array(slot.value)
        if array is None or not np.issubdtype(array.dtype, np.floating):
            continue
        np.add.at(scores, units, _per_element(array, slot.axis, power))
        del array
        release_mapped(slot.value)  # its pages leave memory once scored (remapped on use)
    return np.sqrt(scores) if power == 2 else scores


def bn_gamma(group: Group) -> np.ndarray | None:
    scores = np.zeros(group.num_units)
    found = False
    for slot, units in zip(group.slots, group.unit_of):
        if any(
            node.op_type == "BatchNormalization" and index == 1 for node, index in slot.value.uses()
        ):
            np.add.at(scores, units, np.abs(constant_array(slot.value).astype(np.float64)))
            found = True
    return scores if found else None


def _consumer_inputs(group: Group) -> list[int]:
    """Slots of activations read by a consumer weight of the group (what the next layer sees)."""
    slots_of_value: dict[int, list[int]] = {}
    for index, slot in enumerate(group.slots):
        if slot.role == ACTIVATION:
            slots_of_value.setdefault(id(slot.value), []).append(index)
    chosen = set()
    for slot in group.slots:
        if slot.role == CONSUMER:
            for node, _ in slot.value.uses():
                chosen.update(slots_of_value.get(id(node.inputs[0]), []))
    return sorted(chosen) or [0]


def probe_points(groups: Sequence[Group]) -> dict[str, tuple[Group, int]]:
    """Value name -> (group, slot index) of the activations that data-driven criteria read."""
    wanted: dict[str, tuple[Group, int]] = {}
    for group in groups:
        for slot_index in _consumer_inputs(group):
            name = group.slots[slot_index].value.name
            if name is not None:
                wanted.setdefault(name, (group, slot_index))
    return wanted


def activation_statistics(
    view: GraphView, groups: Sequence[Group], batches: Iterable[Mapping[str, np.ndarray]]
) -> dict[int, np.ndarray]:
    """Mean |activation| per unit over the calibration batches, one probe run per batch."""
    wanted = probe_points(groups)
    sums = {group.index: np.zeros(group.num_units) for group in groups}
    probe = ValueProbe(view.model, list(wanted))
    for batch in batches:
        for name, array in probe.run(batch).items():
            group, slot_index = wanted[name]
            slot = group.slots[slot_index]
            per_element = (
                np.moveaxis(np.abs(np.asarray(array, dtype=np.float64)), slot.axis, 0)
                .reshape(slot.size, -1)
                .mean(axis=1)
            )
            np.add.at(sums[group.index], group.unit_of[slot_index], per_element)
    return sums


def score_groups(
    view: GraphView,
    groups: Sequence[Group],
    criterion: str | Criterion,
    seed: int = 0,
    batches: Iterable[Mapping[str, np.ndarray]] | None = None,
    teacher: str | os.PathLike | None = None,
) -> dict[int, np.ndarray]:
    """Scores per unit for every prunable group (higher = more important); ``teacher``: the
    reference ONNX file of the taylor criterion (None: the model itself)."""
    prunable = [g for g in groups if g.prunable]
    if callable(criterion):
        return {g.index: np.asarray(criterion(g, view), dtype=np.float64) for g in prunable}
    if criterion in ("activation", "taylor"):
        if batches is None:
            raise ValueError(f"criterion '{criterion}' needs calibration data")
        if criterion == "activation":
            return activation_statistics(view, prunable, batches)
        from onnxslim.passes.pruning._taylor import taylor_importance  # torch: loaded on use

        return taylor_importance(
            view, prunable, probe_points(prunable), batches, teacher, seed=seed
        )
    scores = {}
    rng = np.random.default_rng(seed)
    for group in prunable:
        if criterion == "random":
            scores[group.index] = rng.random(group.num_units)
        elif criterion == "bn":
            gamma = bn_gamma(group)
            scores[group.index] = gamma if gamma is not None else magnitude(group, 2)
        else:
            scores[group.index] = magnitude(group, 1 if criterion == "l1" else 2)
    return scores
