"""``Distill``: fine-tune the graph's weights in torch against an ONNX Runtime teacher."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from typing import Any

import onnx_ir as ir

from onnxslim._errors import SlimError
from onnxslim._pass import PassContext, SlimPass, SlimPassResult
from onnxslim.passes.distillation._config import DATA, LOSS, TRAIN, TrainConfig, options_doc

__all__ = ["Distill"]

_INSTALL_HINT = "distill needs PyTorch; install it with: pip install 'onnxslim[torch]'"
# TrainConfig fields that are not Distill options (fixed, or measured by the pass).
_NOT_OPTIONS = frozenset({"momentum", "shuffle", "step_macs", "validation_batches"})


def _require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise SlimError(_INSTALL_HINT)


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


def _check_options(
    *,
    epochs: int,
    steps: int | None,
    lr: float,
    batch_size: int | None,
    weights: dict[str, float],
    device: str,
    threads: int | str | None,
) -> None:
    """Options that failed deep in torch (ValueError/IndexError) are refused up front."""
    if epochs < 1 and not steps:
        raise SlimError(f"distill: epochs must be >= 1, got {epochs}.")
    if not (math.isfinite(lr) and lr >= 0):
        raise SlimError(f"distill: lr must be a number >= 0, got {lr}.")
    if batch_size is not None and batch_size < 0:
        raise SlimError(f"distill: batch_size must be >= 1, got {batch_size}.")
    for option, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise SlimError(f"distill: {option} must be >= 0, got {weight}.")
    _check_device(device)
    if (
        threads is not None
        and threads != "auto"
        and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)
    ):
        raise SlimError(f"distill: threads must be a count >= 1 or 'auto', got {threads!r}.")


class Distill(SlimPass):
    """Knowledge distillation from an ORT teacher into the graph's own weights.

    The student is the incoming graph run in torch by :class:`onnxslim.torch_bridge.OnnxModule`
    (its trained weights are written back by initializer name, so nodes, names, opset and
    dynamic axes stay as they are), or a user ``nn.Module`` that is exported with
    ``torch.onnx.export`` and written into the given model object. The teacher is the model as
    it entered the pipeline (``context.reference_path``) or the ONNX file given as ``teacher``.
    Labels are optional.

    Args:
        data: Training inputs: a calibration reader, a path (``.npz``/folder), an iterable of
            input dicts (a ``label`` key adds cross-entropy), or a torch DataLoader.
            Defaults to the pipeline's data.
        teacher: Teacher ONNX file; default: the model as it entered the pipeline.
        student: A torch ``nn.Module`` to train instead of the graph (exported afterwards).
        output_losses: output name -> kl, kl_probs, mse, smooth_l1 or none (default: KL for
            class scores, MSE otherwise).
        hints: Student value -> teacher value names (or a list of names shared by both) for hint
            losses; channel_maps: student value -> kept teacher channel indices (pruned students).
        validation_data: Inputs for per-epoch fidelity (default: up to 16 training batches).
    """

    name = "distill"
    description = "Fine-tunes the weights against the original model as an ONNX Runtime teacher (knowledge distillation)."
    exact = False

    def __init__(
        self,
        data: Any = None,
        *,
        teacher: str | None = None,
        student: Any = None,
        epochs: int = TRAIN.epochs,
        steps: int | None = TRAIN.steps,
        batch_size: int | None = DATA.batch_size,
        optimizer: str = TRAIN.optimizer,
        lr: float = TRAIN.lr,
        weight_decay: float = TRAIN.weight_decay,
        schedule: str = TRAIN.schedule,
        warmup_steps: int = TRAIN.warmup_steps,
        grad_clip: float | None = TRAIN.grad_clip,
        temperature: float = LOSS.temperature,
        kd_weight: float = LOSS.kd_weight,
        ce_weight: float = LOSS.ce_weight,
        label_key: str = DATA.label_key,
        output_losses: dict[str, str] | None = None,
        hints: dict[str, str] | list[str] | None = None,
        hint_weight: float = LOSS.hint_weight,
        channel_maps: dict[str, list[int]] | None = None,
        validation_data: Any = None,
        patience: int | None = TRAIN.patience,
        train_bn_stats: bool = DATA.train_bn_stats,
        cache_teacher: bool | None = TRAIN.cache_teacher,
        threads: int | str | None = TRAIN.threads,
        seed: int = TRAIN.seed,
        checkpoint: str | None = TRAIN.checkpoint,
        resume: bool = TRAIN.resume,
        device: str = TRAIN.device,
        progress: bool | None = TRAIN.progress,
    ) -> None:
        super().__init__()
        _check_options(
            epochs=epochs,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            weights={"kd_weight": kd_weight, "ce_weight": ce_weight, "hint_weight": hint_weight},
            device=device,
            threads=threads,
        )
        self.data = data
        self.teacher = teacher
        self.student = student
        self.epochs = epochs
        self.steps = steps
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.grad_clip = grad_clip
        self.temperature = temperature
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight
        self.label_key = label_key
        self.output_losses = output_losses
        self.hints = hints
        self.hint_weight = hint_weight
        self.channel_maps = channel_maps
        self.validation_data = validation_data
        self.patience = patience
        self.train_bn_stats = train_bn_stats
        self.cache_teacher = cache_teacher
        self.threads = threads
        self.seed = seed
        self.checkpoint = checkpoint
        self.resume = resume
        self.device = device
        self.progress = progress

        self.validation_batches = DATA.validation_batches

    def train_config(self) -> TrainConfig:
        """This pass's training-loop options (the MACs per batch are measured in apply)."""
        return TrainConfig(
            **{
                field.name: getattr(self, field.name)
                for field in dataclasses.fields(TrainConfig)
                if hasattr(self, field.name) and field.name not in _NOT_OPTIONS
            }
        )

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        """Trains the student against the teacher and writes it into ``model`` (in place)."""
        _require_torch()
        from onnxslim.passes.distillation import _stages

        run = _stages.DistillRun.open(self, model, context)
        _stages.build_student(run)
        _stages.build_teacher(run)
        _stages.open_data(run)
        _stages.build_loss(run)
        _stages.train_student(run)
        _stages.write_back(run)
        _stages.check_write_back(run)
        return SlimPassResult(model, modified=bool(run.changed), summary=_stages.summary(run))


Distill.__doc__ = (Distill.__doc__ or "").rstrip() + (
    "\n\n    Training, loss and batching options (defaults and help from TrainConfig, LossConfig\n"
    "    and DataConfig, the one source of both):\n\n" + options_doc(skip=_NOT_OPTIONS) + "\n"
)
