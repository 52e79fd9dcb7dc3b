"""Knowledge distillation: an ONNX Runtime teacher fine-tunes a torch student that is written back.

Importing this package does not import torch (the torch-side names load on first use); running
the pass without torch says how to install it. Where things live: ``_config`` (training, loss
and data options: their defaults and help), ``_options`` (the pass's declared options),
``_teacher`` (ORT teacher, cached outputs), ``_batches`` (data batching),
``_loop`` (train, evaluate, optimizer/schedule), ``_state`` (TrainState, results),
``_checkpoint``, ``_threads``, ``_progress``, ``_losses``, ``_export`` (user nn.Module student)
and ``_stages`` (the stages of ``Distill.apply``).
"""

from __future__ import annotations

import importlib
from typing import Any

from onnxslim.passes.distillation._config import DataConfig, LossConfig, TrainConfig
from onnxslim.passes.distillation._distill import Distill
from onnxslim.passes.distillation._options import DistillOptions

__all__ = [
    "Distill",
    "DistillOptions",
    "TrainConfig",
    "LossConfig",
    "DataConfig",
    "TrainState",
    "TrainResult",
    "EpochRecord",
    "train",
    "evaluate",
    "distributed_context",
    "OrtTeacher",
    "TeacherTargets",
    "Batches",
    "DistillationLoss",
    "binary_kl",
    "infer_output_losses",
    "kl_divergence",
    "default_thread_count",
    "THREAD_GRAIN_MACS",
]

# Torch-side names -> the module holding them, imported on first access.
_LAZY = {
    "TrainState": "_state",
    "TrainResult": "_state",
    "EpochRecord": "_state",
    "train": "_loop",
    "evaluate": "_loop",
    "distributed_context": "_loop",
    "OrtTeacher": "_teacher",
    "TeacherTargets": "_teacher",
    "Batches": "_batches",
    "DistillationLoss": "_losses",
    "binary_kl": "_losses",
    "infer_output_losses": "_losses",
    "kl_divergence": "_losses",
    "default_thread_count": "_threads",
    "THREAD_GRAIN_MACS": "_threads",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
