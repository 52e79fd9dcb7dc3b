"""Distillation options: the ONE source of their defaults and help texts (torch-free).

``Distill``'s signature, its docstring, ``DistillationLoss`` and ``Batches`` take their defaults
from these frozen dataclasses; the pass's declared options (``_options.DistillOptions``) take
their defaults and help from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from onnxslim.options import option

__all__ = [
    "TrainConfig",
    "LossConfig",
    "DataConfig",
    "TRAIN",
    "LOSS",
    "DATA",
    "Optimizer",
    "Schedule",
    "options_doc",
]

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["cosine", "linear", "constant"]


def _option(default: Any, help: str) -> Any:
    return option(default, help=help)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options of the training loop (optimizer, schedule, stopping, checkpoints, device)."""

    epochs: int = _option(5, "Passes over the data.")
    steps: int | None = _option(None, "Stop after this many optimizer steps instead.")
    optimizer: Optimizer = _option("adamw", "``adamw``, ``adam`` or ``sgd``.")
    lr: float = _option(1e-3, "Learning rate.")
    weight_decay: float = _option(0.0, "Weight decay of the optimizer.")
    momentum: float = _option(0.9, "SGD momentum (Nesterov when > 0).")
    schedule: Schedule = _option(
        "cosine", "Learning-rate schedule: ``cosine``, ``linear``, ``constant``."
    )
    warmup_steps: int = _option(0, "Linear learning-rate warm-up steps.")
    grad_clip: float | None = _option(1.0, "Clip the gradient norm to this (None: no clipping).")
    seed: int = _option(0, "Makes runs repeatable on CPU.")
    shuffle: bool = _option(True, "Shuffle in-memory samples every epoch.")
    patience: int | None = _option(
        None, "Stop after this many epochs without better validation fidelity."
    )
    checkpoint: str | None = _option(
        None, "Resumable checkpoint file (written by rank 0 every epoch)."
    )
    resume: bool = _option(False, "Resume from ``checkpoint`` when it exists.")
    progress: bool | None = _option(None, "Progress line (default: on a terminal).")
    device: str = _option("cpu", "torch device of the student.")
    cache_teacher: bool | None = _option(
        None,
        "Teacher outputs computed once and reused every epoch. None: for in-memory data "
        "(readers, files, lists: the common case) up to 2 GiB, not for a DataLoader (it may "
        "augment); True: always (a DataLoader's batches by content); False: the teacher runs "
        "on every batch.",
    )
    augment: Any = _option(
        None,
        "Augmentation of the training inputs, the same inputs for student and teacher: "
        "``image`` (flip, crop, colour), ``audio`` (gain, noise, shift), ``text`` (token "
        "dropout), ``text:MASK_ID`` (token masking) or a callable (feeds, rng) -> feeds; "
        "deterministic under ``seed``. The teacher then runs on every batch (no cache).",
    )
    threads: int | Literal["auto"] | None = _option(
        None,
        "torch threads while training (restored afterwards). None: one per 1 G MACs of a "
        "batch's forward pass, at most torch's setting (small students run faster on one "
        "thread, above all on shared machines); ``'auto'``: times a few steps with torch's "
        "setting and with one thread and keeps the faster (results then depend on the choice: "
        "float sums differ by thread count).",
    )
    step_macs: int | None = _option(
        None, "MACs of one forward pass over a training batch (None: unknown), for the threads."
    )


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights and temperature of the distillation loss terms."""

    temperature: float = _option(4.0, "KL temperature on logits (T² scaled).")
    kd_weight: float = _option(1.0, "Weight of the output (distillation) terms.")
    ce_weight: float = _option(1.0, "Weight of the cross-entropy on labels.")
    hint_weight: float = _option(1.0, "Weight of each hint term.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How training data is batched and where its labels are."""

    batch_size: int | None = _option(
        32, "Samples per batch when re-batching reader items (None: items as given)."
    )
    label_key: str = _option("label", "Key of labels in data dicts.")
    train_bn_stats: bool = _option(False, "Update BatchNorm running statistics while training.")
    validation_batches: int = _option(
        16, "Training batches used for per-epoch fidelity when no validation data is given."
    )


TRAIN = TrainConfig()
LOSS = LossConfig()
DATA = DataConfig()


def options_doc(
    configs: tuple[Any, ...] = (TRAIN, LOSS, DATA), skip: frozenset = frozenset()
) -> str:
    """``name (default): help`` lines of the configs' fields, for a docstring."""
    lines = []
    for config in configs:
        for field in dataclasses.fields(config):
            if field.name not in skip:
                lines.append(f"        {field.name} ({field.default!r}): {field.metadata['help']}")
    return "\n".join(lines)
