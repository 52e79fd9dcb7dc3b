"""Distill's declared options (a light, torch-free module: ``onnxslim optimize --help`` reads it).

The training, loss and batching options take their defaults and help from ``TrainConfig``,
``LossConfig`` and ``DataConfig`` (the one source); only the pass's own options are written here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from typing import Any, Literal

from onnxslim import SlimError
from onnxslim.inputs import augmentation
from onnxslim.options import option
from onnxslim.passes.distillation._config import (
    DataConfig,
    LossConfig,
    Optimizer,
    Schedule,
    TrainConfig,
)

__all__ = ["DistillOptions", "FEATURE_WEIGHT", "NOT_OPTIONS"]

# Default weight of the automatic feature losses, chosen on the digits benchmark.
FEATURE_WEIGHT = 1.0

# TrainConfig/DataConfig fields that are not Distill options (fixed, or measured by the pass).
NOT_OPTIONS = frozenset({"momentum", "shuffle", "step_macs", "validation_batches"})


def _from(config: type, name: str, *, flag: str | None = None, metavar: str | None = None) -> Any:
    """An option whose default and help are those of ``config``'s field ``name``."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    return option(field.default, help=field.metadata["help"], flag=flag, metavar=metavar)


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    """Options of the ``distill`` pass (refused up front when they would fail deep in torch)."""

    data: Any = option(
        None,
        flag="--distill",
        metavar="DATA",
        enables=True,
        help="Training inputs: a sample reader, a path (.npz/folder), an iterable of input dicts "
        "(a label key adds cross-entropy) or a torch DataLoader; default: the pipeline's data.",
    )
    teacher: str | None = option(
        None,
        flag="--teacher",
        metavar="FILE",
        help="Teacher ONNX file; default: the model as it entered the pipeline.",
    )
    student: Any = option(
        None, help="A torch nn.Module to train instead of the graph (exported afterwards)."
    )
    epochs: int = _from(TrainConfig, "epochs", flag="--distill-epochs", metavar="N")
    steps: int | None = _from(TrainConfig, "steps")
    batch_size: int | None = _from(DataConfig, "batch_size")
    optimizer: Optimizer = _from(TrainConfig, "optimizer")
    lr: float = _from(TrainConfig, "lr", flag="--distill-lr", metavar="LR")
    weight_decay: float = _from(TrainConfig, "weight_decay")
    schedule: Schedule = _from(TrainConfig, "schedule")
    warmup_steps: int = _from(TrainConfig, "warmup_steps")
    grad_clip: float | None = _from(TrainConfig, "grad_clip")
    temperature: float = _from(LossConfig, "temperature")
    kd_weight: float = _from(LossConfig, "kd_weight")
    ce_weight: float = _from(LossConfig, "ce_weight")
    label_key: str = _from(DataConfig, "label_key")
    output_losses: dict[str, str] | None = option(
        None,
        help="Output name -> kl, kl_probs, binary_kl, mse, smooth_l1 or none (default: KL for "
        "class scores, binary KL for Sigmoid maps, MSE otherwise).",
    )
    hints: dict[str, str] | list[str] | None = option(
        None,
        help="Student value -> teacher value names (or names shared by both) for hint losses.",
    )
    hint_weight: float = _from(LossConfig, "hint_weight")
    channel_maps: dict[str, list[int]] | None = option(
        None, help="Student value -> kept teacher channel indices (pruned students)."
    )
    feature_weight: float = option(
        FEATURE_WEIGHT,
        help="Weight of the feature (hint) losses at the block outputs a pruning pass recorded, "
        "each an MSE to the teacher's activation on the kept channels, normalized by its mean "
        "square (used when hints is not given; 0 turns it off).",
    )
    validation_data: Any = option(
        None, help="Inputs for per-epoch fidelity (default: up to 16 training batches)."
    )
    patience: int | None = _from(TrainConfig, "patience")
    train_bn_stats: bool = _from(DataConfig, "train_bn_stats")
    cache_teacher: bool | None = _from(TrainConfig, "cache_teacher")
    augment: Any = _from(TrainConfig, "augment")
    threads: int | Literal["auto"] | None = _from(TrainConfig, "threads")
    seed: int = _from(TrainConfig, "seed")
    checkpoint: str | None = _from(TrainConfig, "checkpoint")
    resume: bool = _from(TrainConfig, "resume")
    device: str = _from(TrainConfig, "device")
    progress: bool | None = _from(TrainConfig, "progress")

    def __post_init__(self) -> None:
        if self.epochs < 1 and not self.steps:
            raise SlimError(f"distill: epochs must be >= 1, got {self.epochs}.")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise SlimError(f"distill: lr must be a number >= 0, got {self.lr}.")
        if self.batch_size is not None and self.batch_size < 0:
            raise SlimError(f"distill: batch_size must be >= 1, got {self.batch_size}.")
        for name in ("kd_weight", "ce_weight", "hint_weight", "feature_weight"):
            weight = getattr(self, name)
            if not (math.isfinite(weight) and weight >= 0):
                raise SlimError(f"distill: {name} must be >= 0, got {weight}.")
        _check_device(self.device)
        augmentation(self.augment)  # an unknown name is refused before training
        threads = self.threads
        if (
            threads is not None
            and threads != "auto"
            and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)
        ):
            raise SlimError(f"distill: threads must be a count >= 1 or 'auto', got {threads!r}.")

    def train_config(self) -> TrainConfig:
        """The training-loop options among these (the MACs per batch are measured in apply)."""
        names = {f.name for f in dataclasses.fields(self)} - NOT_OPTIONS
        return TrainConfig(
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(TrainConfig)
                if f.name in names
            }
        )


def _check_device(device: str) -> None:
    """A torch device string that exists here; else a SlimError naming it."""
    if importlib.util.find_spec("torch") is None:
        return  # apply() reports the missing torch extra
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise SlimError(
            f"distill: device '{device}' is not a torch device ({str(error).splitlines()[0]})."
        ) from None
    if parsed.type == "cuda" and (
        not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()
    ):
        raise SlimError(
            f"distill: device '{device}' is not available here "
            f"({torch.cuda.device_count()} CUDA device(s)); use device='cpu'."
        )
