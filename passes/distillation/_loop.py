"""The distillation training loop: optimizer/schedule, one step, one epoch, validation fidelity,
best epoch, early stopping, checkpoints, torch.distributed (DDP)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnxslim import SlimError
from onnxslim.fidelity import Fidelity, compare_outputs
from onnxslim.inputs import Feeds, augment_feeds, augmentation, to_numpy
from onnxslim.passes.distillation._batches import to_device
from onnxslim.passes.distillation._checkpoint import resume_checkpoint, save_checkpoint
from onnxslim.passes.distillation._config import TrainConfig
from onnxslim.passes.distillation._progress import Progress
from onnxslim.passes.distillation._state import EpochRecord, TrainResult, TrainState
from onnxslim.passes.distillation._teacher import TEACHER_CACHE_BYTES, TeacherTargets
from onnxslim.passes.distillation._threads import default_thread_count, fastest_thread_count
from onnxslim.runtime import cpu_features

__all__ = ["distributed_context", "evaluate", "make_optimizer", "make_schedule", "train"]

logger = logging.getLogger(__name__)


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def make_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    name = config.optimizer.lower()
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    raise SlimError(f"distill: optimizer '{config.optimizer}' is unknown; use adamw, adam or sgd.")


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int | None
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(config.warmup_steps, 0)
    kind = config.schedule.lower()
    if kind not in ("cosine", "linear", "constant"):
        raise SlimError(
            f"distill: schedule '{config.schedule}' is unknown; use cosine, linear or constant."
        )

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or not total_steps:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(
    student: nn.Module,
    teacher_outputs: Sequence[Mapping[str, np.ndarray]],
    batches: Sequence[Feeds],
    output_names: Sequence[str],
    device: torch.device,
    channels_last: bool = False,
) -> Fidelity:
    """Fidelity of the student's graph outputs against precomputed teacher outputs."""
    was_training = student.training
    student.eval()
    candidates = []
    with torch.no_grad():
        for feeds in batches:
            outputs = student(**to_device(feeds, device, channels_last))
            candidates.append({name: outputs[name].detach().cpu().numpy() for name in output_names})
    student.train(was_training)
    reference = [{name: t[name] for name in output_names} for t in teacher_outputs]
    return compare_outputs(reference, candidates)


def _score(fidelity: Fidelity) -> tuple[float, float]:
    top1 = fidelity.top1_agreement if fidelity.top1_agreement is not None else -math.inf
    return (top1, fidelity.sqnr_db)


def _uses_channels_last(student: nn.Module, device: torch.device) -> bool:
    """oneDNN's convolutions (forward and backward) run markedly faster on NHWC tensors; only
    with AVX-512: on an AVX2-only EPYC, torch 2.13's NHWC conv backward on narrow pruned convs
    corrupts the heap (``free(): invalid next size``, tests/test_reliability.py)."""
    return (
        device.type == "cpu"
        and cpu_features().avx512
        and any(p.dim() == 4 for p in student.parameters())
    )


def train(config: TrainConfig, state: TrainState) -> TrainResult:
    """Fine-tunes ``state.student`` on the teacher's outputs; on return it holds the best weights.

    Under an initialised torch.distributed group the student is wrapped in
    DistributedDataParallel, each rank trains on its shard, rank 0 validates and decides
    (best epoch, early stop) and its weights are broadcast at the end. Teacher outputs of
    in-memory data are computed once (``config.cache_teacher``); torch's thread count is set
    for the loop (``config.threads``, or timed) and restored afterwards.
    """
    state.rank, state.world_size = distributed_context()
    state.device = torch.device(config.device)
    student = state.student
    student.to(state.device)
    student.train()
    threads_before = torch.get_num_threads()
    state.channels_last = _uses_channels_last(student, state.device)
    try:
        if state.channels_last:
            student.to(memory_format=torch.channels_last)
        _set_threads(config, state, threads_before)
        _set_up(config, state)
        _fidelity_before(config, state)
        checkpoint = Path(config.checkpoint) if config.checkpoint else None
        if checkpoint is not None and config.resume:
            resume_checkpoint(checkpoint, state)
        _run_epochs(config, state, checkpoint)
        return _finish(state)
    finally:
        torch.set_num_threads(threads_before)
        if state.channels_last:
            student.to(memory_format=torch.contiguous_format)


def _set_threads(config: TrainConfig, state: TrainState, threads_before: int) -> None:
    """torch threads for the loop: as configured, timed (``"auto"``) or by MACs per batch."""
    if isinstance(config.threads, int):
        torch.set_num_threads(config.threads)
    elif state.device.type == "cpu" and state.world_size == 1 and threads_before > 1:
        if config.threads == "auto" and state.validation:
            chosen = fastest_thread_count(
                state.student, state.validation[0], state.device, state.channels_last
            )
        else:
            chosen = default_thread_count(config.step_macs, threads_before)
        torch.set_num_threads(chosen)


def _set_up(config: TrainConfig, state: TrainState) -> None:
    """Optimizer, schedule, epoch count, the DDP wrapper and the cached teacher outputs."""
    torch.manual_seed(config.seed)
    state.trainable = [p for p in state.student.parameters() if p.requires_grad]
    if not state.trainable:
        raise SlimError(
            "distill: the student has no trainable parameters (no float weights in the graph)."
        )
    state.optimizer = make_optimizer(state.trainable, config)
    per_epoch = state.batches.batches_per_epoch(state.world_size)
    total_steps = config.steps or (per_epoch * config.epochs if per_epoch else None)
    state.per_epoch = per_epoch
    state.epochs = (
        config.epochs if not config.steps or not per_epoch else math.ceil(config.steps / per_epoch)
    )
    state.scheduler = make_schedule(state.optimizer, config, total_steps)
    state.model = state.student
    if state.world_size > 1:
        device = state.device
        state.model = nn.parallel.DistributedDataParallel(
            state.student, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.augment is not None:
        state.teacher_cache = "off (augmented inputs: the teacher runs on every batch)"
    elif config.cache_teacher is not False:
        state.targets, state.teacher_cache = TeacherTargets.build(
            state.teacher, state.batches, None if config.cache_teacher else TEACHER_CACHE_BYTES
        )
    logger.info("distill: teacher outputs %s", state.teacher_cache)


def _fidelity_before(config: TrainConfig, state: TrainState) -> None:
    """Rank 0: teacher outputs of the validation batches and the student's fidelity before."""
    if state.rank != 0:
        state.teacher_validation = []
    elif state.teacher_validation is None:
        state.teacher_validation = [state.teacher(feeds) for feeds in state.validation]
    if state.rank == 0:
        state.fidelity_before = _evaluate(state)
        state.best_score = _score(state.fidelity_before)
        state.best_state = copy.deepcopy(state.student.state_dict())


def _evaluate(state: TrainState) -> Fidelity:
    assert state.teacher_validation is not None  # set by _fidelity_before
    return evaluate(
        state.student,
        state.teacher_validation,
        state.validation,
        state.output_names,
        state.device,
        state.channels_last,
    )


def _run_epochs(config: TrainConfig, state: TrainState, checkpoint: Path | None) -> None:
    """Epochs from ``state.start_epoch`` until done, early-stopped or out of steps."""
    progress = Progress(config.progress if state.rank == 0 else False)
    for epoch in range(state.start_epoch, state.epochs):
        record = _train_epoch(config, state, epoch, progress)
        decision = torch.zeros(2, dtype=torch.float64)  # [improved, stop]
        if state.rank == 0:
            decision[:] = torch.tensor(_validate(config, state, record, progress))
        if state.world_size > 1:
            torch.distributed.broadcast(decision, 0)
        state.history.append(record)
        if state.rank == 0 and checkpoint is not None:
            save_checkpoint(checkpoint, state, epoch + 1)
        if state.world_size > 1:
            torch.distributed.barrier()
        if decision[1]:
            state.stopped_early = True
            break
        if config.steps and state.step >= config.steps:
            break


def _train_epoch(
    config: TrainConfig, state: TrainState, epoch: int, progress: Progress
) -> EpochRecord:
    """One pass over this rank's batches; the record holds the loss averaged over all ranks."""
    started = time.perf_counter()
    state.model.train()
    loss_sum, batch_count = 0.0, 0
    part_sums: dict[str, float] = {}
    for feeds, labels, key in state.batches.epoch(
        epoch,
        shuffle=config.shuffle,
        seed=config.seed,
        rank=state.rank,
        world_size=state.world_size,
    ):
        if config.steps and state.step >= config.steps:
            break
        loss, parts = _train_step(config, state, feeds, labels, key)
        state.step += 1
        batch_count += 1
        loss_sum += loss
        for name, value in parts.items():
            part_sums[name] = part_sums.get(name, 0.0) + value
        progress.update(
            f"distill epoch {epoch + 1}/{state.epochs} batch {batch_count}/{state.per_epoch or '?'} loss {loss_sum / batch_count:.4g}"
        )
    totals = torch.tensor([loss_sum, float(batch_count)], dtype=torch.float64)
    if state.world_size > 1:
        torch.distributed.all_reduce(totals)
    return EpochRecord(
        epoch=epoch + 1,
        loss=float(totals[0]) / max(float(totals[1]), 1.0),
        lr=float(state.optimizer.param_groups[0]["lr"]),
        seconds=time.perf_counter() - started,
        parts={name: value / max(batch_count, 1) for name, value in part_sums.items()},
    )


def _train_step(
    config: TrainConfig,
    state: TrainState,
    feeds: Feeds,
    labels: np.ndarray | None,
    key: object,
) -> tuple[float, dict[str, float]]:
    """One optimizer step on one batch: (loss, loss terms)."""
    device = state.device
    augment = augmentation(config.augment)
    if augment is not None:  # student and teacher see the same augmented batch
        feeds = augment_feeds(
            augment, {k: to_numpy(v) for k, v in feeds.items()}, config.seed, state.step
        )
    if state.targets is not None:
        teacher_outputs = {name: tensor.to(device) for name, tensor in state.targets[key].items()}
    else:
        teacher_outputs = {
            name: torch.from_numpy(array).to(device) for name, array in state.teacher(feeds).items()
        }
    student_outputs = state.model(**to_device(feeds, device, state.channels_last))
    label_tensor = torch.from_numpy(labels).to(device) if labels is not None else None
    loss, parts = state.loss_fn(student_outputs, teacher_outputs, label_tensor)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        nn.utils.clip_grad_norm_(state.trainable, config.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return float(loss.detach()), parts


def _validate(
    config: TrainConfig, state: TrainState, record: EpochRecord, progress: Progress
) -> tuple[float, float]:
    """Rank 0 after an epoch: fidelity into the record, best epoch kept; (improved, stop)."""
    fidelity = _evaluate(state)
    record.fidelity = fidelity.as_record()  # floats; the report encodes them once
    score = _score(fidelity)
    improved = state.best_score is None or score > state.best_score
    if improved:
        state.best_score, state.best_epoch, state.bad_epochs = score, record.epoch, 0
        state.best_state = copy.deepcopy(state.student.state_dict())
    else:
        state.bad_epochs += 1
    stop = config.patience is not None and state.bad_epochs >= config.patience
    progress.done(
        f"distill epoch {record.epoch}/{state.epochs} loss {record.loss:.4g} {fidelity.describe()}"
    )
    logger.info(
        "distill: epoch %d/%d loss %.5g, %s",
        record.epoch,
        state.epochs,
        record.loss,
        fidelity.describe(),
    )
    return float(improved), float(stop)


def _finish(state: TrainState) -> TrainResult:
    """Best weights into the student (broadcast from rank 0 under DDP) and the result."""
    student = state.student
    if state.rank == 0 and state.best_state is not None:
        student.load_state_dict(state.best_state)
    if state.world_size > 1:
        for tensor in list(student.parameters()) + list(student.buffers()):
            torch.distributed.broadcast(tensor.data, 0)
        before = state.fidelity_before
        summary = [state.best_epoch, dataclasses.asdict(before) if before else None]
        torch.distributed.broadcast_object_list(summary, 0)
        state.best_epoch = summary[0]
        state.fidelity_before = Fidelity(**summary[1])
    student.eval()
    assert state.fidelity_before is not None  # rank 0 measured it; other ranks got it above
    return TrainResult(
        state.history,
        state.fidelity_before,
        state.best_epoch,
        state.step,
        state.world_size,
        state.stopped_early,
        teacher_cache=state.teacher_cache,
        threads=torch.get_num_threads(),
    )
