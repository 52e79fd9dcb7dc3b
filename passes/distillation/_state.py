"""What one training run works on (``TrainState``) and what it returns (``TrainResult``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from onnxslim.fidelity import Fidelity
from onnxslim.inputs import Feeds
from onnxslim.passes.distillation._batches import Batches
from onnxslim.passes.distillation._teacher import OrtTeacher, TeacherTargets

__all__ = ["EpochRecord", "LossFn", "TrainResult", "TrainState"]

# (student outputs, teacher outputs, labels or None) -> (loss, {term: value})
LossFn = Callable[
    [Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], torch.Tensor | None],
    tuple[torch.Tensor, dict[str, float]],
]


@dataclasses.dataclass
class EpochRecord:
    epoch: int
    loss: float
    lr: float
    seconds: float
    fidelity: dict[str, Any] | None = None
    parts: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainResult:
    history: list[EpochRecord]
    fidelity_before: Fidelity
    best_epoch: int
    steps: int
    world_size: int
    stopped_early: bool = False
    teacher_cache: str = "off"
    threads: int = 1


@dataclasses.dataclass
class TrainState:
    """One training run: what the caller gives (first seven fields), what ``train`` builds
    (optimizer, schedule, device, ...) and where it stands (step, best epoch, history, ...).

    ``teacher_validation``: teacher outputs of ``validation``, when already computed.
    """

    student: nn.Module
    teacher: OrtTeacher
    loss_fn: LossFn
    batches: Batches
    validation: Sequence[Feeds]
    output_names: Sequence[str]
    teacher_validation: Sequence[Mapping[str, np.ndarray]] | None = None

    # Built by train().
    device: torch.device = dataclasses.field(init=False, default=torch.device("cpu"))
    channels_last: bool = dataclasses.field(init=False, default=False)
    rank: int = dataclasses.field(init=False, default=0)
    world_size: int = dataclasses.field(init=False, default=1)
    trainable: list[nn.Parameter] = dataclasses.field(init=False, default_factory=list)
    optimizer: torch.optim.Optimizer = dataclasses.field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = dataclasses.field(init=False)
    model: nn.Module = dataclasses.field(init=False)  # the student, DDP-wrapped when distributed
    targets: TeacherTargets | None = dataclasses.field(init=False, default=None)
    teacher_cache: str = dataclasses.field(init=False, default="off")
    epochs: int = dataclasses.field(init=False, default=0)
    per_epoch: int | None = dataclasses.field(init=False, default=None)

    # Where the run stands (saved in checkpoints).
    step: int = dataclasses.field(init=False, default=0)
    start_epoch: int = dataclasses.field(init=False, default=0)
    best_epoch: int = dataclasses.field(init=False, default=0)
    bad_epochs: int = dataclasses.field(init=False, default=0)
    best_score: tuple[float, float] | None = dataclasses.field(init=False, default=None)
    best_state: dict[str, Any] | None = dataclasses.field(init=False, default=None)
    fidelity_before: Fidelity | None = dataclasses.field(init=False, default=None)
    history: list[EpochRecord] = dataclasses.field(init=False, default_factory=list)
    stopped_early: bool = dataclasses.field(init=False, default=False)
