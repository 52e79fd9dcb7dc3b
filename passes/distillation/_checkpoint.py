"""Resumable training checkpoints: written atomically after every epoch, read back on resume."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from onnxslim.fidelity import Fidelity
from onnxslim.passes.distillation._state import EpochRecord, TrainState

__all__ = ["atomic_torch_save", "resume_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file renamed over ``path``: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def save_checkpoint(path: Path, state: TrainState, epoch: int) -> None:
    """Everything needed to continue after ``epoch`` (1-based) as if never interrupted."""
    assert state.best_score is not None and state.fidelity_before is not None  # set by train()
    atomic_torch_save(
        {
            "epoch": epoch,
            "step": state.step,
            "student": state.student.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "history": [dataclasses.asdict(r) for r in state.history],
            "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs,
            "best_score": list(state.best_score),
            "best_state": state.best_state,
            "fidelity_before": state.fidelity_before.as_record(),
        },
        path,
    )


def resume_checkpoint(path: Path, state: TrainState) -> bool:
    """Restores ``state`` from ``path`` if it is a file; says whether it did."""
    if not path.is_file():
        return False
    saved = torch.load(path, map_location=state.device, weights_only=False)
    state.student.load_state_dict(saved["student"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.start_epoch, state.step = saved["epoch"], saved["step"]
    state.history = [EpochRecord(**record) for record in saved["history"]]
    state.best_epoch, state.bad_epochs = saved["best_epoch"], saved["bad_epochs"]
    state.best_score, state.best_state = tuple(saved["best_score"]), saved["best_state"]
    if saved.get("fidelity_before"):
        state.fidelity_before = Fidelity(**saved["fidelity_before"])
    logger.info("distill: resumed from %s after epoch %d", path, state.start_epoch)
    return True
