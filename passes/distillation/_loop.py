"""The distillation training loop: ORT teacher, batching, optimizer/schedule, validation
fidelity, best checkpoint, early stopping, resumable checkpoints, torch.distributed (DDP)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common
import torch
from torch import nn

import onnxslim
from onnxslim._errors import InputDataError, SlimError
from onnxslim._fidelity import Fidelity, compare_outputs

__all__ = [
    "OrtTeacher",
    "TrainConfig",
    "TrainResult",
    "EpochRecord",
    "Batches",
    "train",
    "distributed_context",
]

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class OrtTeacher:
    """The reference ONNX model in an ONNX Runtime session, run on the student's inputs.

    Args:
        path: The teacher model file.
        providers: ORT execution providers (any EP).
        extra_outputs: Intermediate value names to return as well (hint losses).
        cache: Keep outputs per batch (keyed by the batch's bytes) so repeated batches skip ORT.
        workdir: Where to write the teacher with extra outputs (a temporary folder if None).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        extra_outputs: Sequence[str] = (),
        cache: bool = False,
        workdir: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.extra_outputs = list(extra_outputs)
        self.cache = {} if cache else None
        options = onnxslim.session_options(allow_spinning=False)
        if self.extra_outputs:
            model = onnxslim.load(self.path)
            self._expose(model, self.extra_outputs)
            if workdir is not None:
                augmented = Path(workdir) / f"{self.path.stem}.teacher.onnx"
                onnxslim.save(model, augmented)
                self.session = onnxslim.create_session(augmented, providers, options)
            else:
                self.session = onnxslim.create_session(model, providers, options)
        else:
            self.session = onnxslim.create_session(self.path, providers, options)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _expose(model: ir.Model, names: Sequence[str]) -> None:
        values = {v.name: v for node in model.graph for v in node.outputs}
        missing = [name for name in names if name not in values]
        if missing:
            raise SlimError(
                f"distill: teacher has no value(s) {', '.join(map(repr, missing))} for hint losses; name values of the teacher graph."
            )
        if any(values[name].type is None for name in names):
            onnx_ir.passes.common.ShapeInferencePass()(model)
        existing = {v.name for v in model.graph.outputs}
        for name in names:
            if name not in existing:
                value = values[name]
                if value.type is None:
                    value.dtype = ir.DataType.FLOAT
                model.graph.outputs.append(value)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: feeds[name] for name in self.input_names}
        key = None
        if self.cache is not None:
            digest = hashlib.sha1()
            for name in self.input_names:
                digest.update(np.ascontiguousarray(feeds[name]).tobytes())
                digest.update(str(feeds[name].shape).encode())
            key = digest.hexdigest()
            if key in self.cache:
                return self.cache[key]
        outputs = dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
        if key is not None:
            self.cache[key] = outputs
        return outputs


# ----------------------------------------------------------------------------- data


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _split_item(
    item: Any, input_names: Sequence[str], label_key: str | None
) -> tuple[Feeds, np.ndarray | None]:
    """An item of the user's data -> (model feeds, labels or None)."""
    labels = None
    if isinstance(item, (tuple, list)) and len(item) == 2 and not isinstance(item[0], (int, float)):
        item, labels = item
    if isinstance(item, Mapping):
        if label_key is not None and label_key in item and label_key not in input_names:
            labels = item[label_key]
        missing = [name for name in input_names if name not in item]
        if missing:
            raise InputDataError(
                f"distill: a data item lacks model input(s) {', '.join(map(repr, missing))} "
                f"(it has {', '.join(map(repr, item))}); key items by the model's input names."
            )
        feeds = {name: _to_numpy(item[name]) for name in input_names}
    elif len(input_names) == 1:
        feeds = {input_names[0]: _to_numpy(item)}
    else:
        raise InputDataError(
            f"distill: data items must be dicts keyed by input name for a model with inputs {', '.join(input_names)}."
        )
    return feeds, (None if labels is None else _to_numpy(labels))


def _is_data_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


class Batches:
    """Training/validation batches from readers, iterables of dicts, or a torch DataLoader.

    Reader items are split into samples once (kept in memory) and re-batched to ``batch_size``
    samples, shuffled per epoch with ``seed + epoch`` and sharded per rank; a DataLoader is used
    as it batches (with its own DistributedSampler, or sharded by batch index).
    """

    def __init__(
        self,
        data: Any,
        input_names: Sequence[str],
        *,
        batch_size: int | None = 32,
        label_key: str | None = "label",
    ) -> None:
        self.data = data
        self.input_names = list(input_names)
        self.batch_size = batch_size
        self.label_key = label_key
        self.samples: list[tuple[Feeds, np.ndarray | None]] | None = None
        self.items: list[tuple[Feeds, np.ndarray | None]] | None = None
        if not _is_data_loader(data):
            self._materialize()

    def _raw_items(self) -> Iterator[Any]:
        data = self.data
        if hasattr(data, "get_next") and not hasattr(data, "__iter__"):
            if hasattr(data, "rewind"):
                data.rewind()
            while (item := data.get_next()) is not None:
                yield item
        else:
            yield from data

    def _materialize(self) -> None:
        items = [_split_item(item, self.input_names, self.label_key) for item in self._raw_items()]
        if not items:
            raise InputDataError(
                "distill: the training data is empty; give at least one batch of inputs."
            )
        self.items = items
        if self.batch_size:
            samples = []
            for feeds, labels in items:
                count = len(next(iter(feeds.values())))
                for index in range(count):
                    sample = {name: array[index : index + 1] for name, array in feeds.items()}
                    samples.append(
                        (
                            sample,
                            None if labels is None else np.atleast_1d(labels)[index : index + 1],
                        )
                    )
            self.samples = samples

    @property
    def sample_count(self) -> int:
        if self.samples is not None:
            return len(self.samples)
        if self.items is not None:
            return sum(len(next(iter(f.values()))) for f, _ in self.items)
        return len(self.data.dataset) if hasattr(self.data, "dataset") else 0

    def batches_per_epoch(self, world_size: int = 1) -> int | None:
        if self.samples is not None:
            per_rank = len(self.samples) // world_size if world_size > 1 else len(self.samples)
            return math.ceil(per_rank / self.batch_size)
        if self.items is not None:
            return len(self.items) // world_size if world_size > 1 else len(self.items)
        try:
            length = len(self.data)
        except TypeError:
            return None
        sampler = getattr(self.data, "sampler", None)
        if world_size > 1 and not isinstance(sampler, torch.utils.data.DistributedSampler):
            return length // world_size
        return length

    def epoch(
        self,
        epoch: int = 0,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[Feeds, np.ndarray | None]]:
        if self.items is None:
            yield from self._loader_epoch(epoch, rank, world_size)
            return
        units = self.samples if self.samples is not None else self.items
        order = np.arange(len(units))
        if shuffle:
            order = np.random.default_rng(seed + epoch).permutation(len(units))
        if world_size > 1:
            # Same permutation on every rank; equal shares keep DDP's collective calls in step.
            order = order[: len(order) // world_size * world_size][rank::world_size]
        if self.samples is None:
            for index in order:
                yield self.items[index]
            return
        for start in range(0, len(order), self.batch_size):
            chunk = [self.samples[i] for i in order[start : start + self.batch_size]]
            feeds = {name: np.concatenate([c[0][name] for c in chunk]) for name in self.input_names}
            labels = None if chunk[0][1] is None else np.concatenate([c[1] for c in chunk])
            yield feeds, labels

    def _loader_epoch(
        self, epoch: int, rank: int, world_size: int
    ) -> Iterator[tuple[Feeds, np.ndarray | None]]:
        sampler = getattr(self.data, "sampler", None)
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
            world_size = 1
        limit = self.batches_per_epoch(world_size) if world_size > 1 else None
        for index, item in enumerate(self.data):
            if world_size > 1:
                if index // world_size >= limit:
                    break
                if index % world_size != rank:
                    continue
            yield _split_item(item, self.input_names, self.label_key)


# ----------------------------------------------------------------------------- config/results


@dataclasses.dataclass
class TrainConfig:
    """Training options (see :class:`onnxslim.passes.Distill` for their meaning)."""

    epochs: int = 5
    steps: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    seed: int = 0
    shuffle: bool = True
    patience: int | None = None
    checkpoint: str | None = None
    resume: bool = False
    progress: bool | None = None
    device: str = "cpu"


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


def _score(fidelity: Fidelity) -> tuple[float, float]:
    top1 = fidelity.top1_agreement if fidelity.top1_agreement is not None else -math.inf
    return (top1, fidelity.sqnr_db)


def _optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
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


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int | None):
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


class _Progress:
    """A one-line progress display on a terminal (stderr), silent otherwise."""

    def __init__(self, enabled: bool | None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K" + text + "\n")
            sys.stderr.flush()


def _to_device(feeds: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        name: torch.from_numpy(np.ascontiguousarray(array)).to(device)
        for name, array in feeds.items()
    }


def evaluate(
    student: nn.Module,
    teacher_outputs: Sequence[Mapping[str, np.ndarray]],
    batches: Sequence[Feeds],
    output_names: Sequence[str],
    device: torch.device,
) -> Fidelity:
    """Fidelity of the student's graph outputs against precomputed teacher outputs."""
    was_training = student.training
    student.eval()
    candidates = []
    with torch.no_grad():
        for feeds in batches:
            outputs = student(**_to_device(feeds, device))
            candidates.append({name: outputs[name].detach().cpu().numpy() for name in output_names})
    student.train(was_training)
    reference = [{name: t[name] for name in output_names} for t in teacher_outputs]
    return compare_outputs(reference, candidates)


def _atomic_torch_save(payload: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def train(
    student: nn.Module,
    teacher: OrtTeacher,
    loss_fn: Any,
    train_batches: Batches,
    validation: Sequence[Feeds],
    output_names: Sequence[str],
    config: TrainConfig,
) -> TrainResult:
    """Fine-tunes ``student`` on the teacher's outputs; on return it holds the best weights.

    Under an initialised torch.distributed group the student is wrapped in
    DistributedDataParallel, each rank trains on its shard, rank 0 validates and decides
    (best epoch, early stop) and its weights are broadcast at the end.
    """
    rank, world_size = distributed_context()
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    student.to(device)
    student.train()
    trainable = [p for p in student.parameters() if p.requires_grad]
    if not trainable:
        raise SlimError(
            "distill: the student has no trainable parameters (no float weights in the graph)."
        )
    optimizer = _optimizer(trainable, config)
    per_epoch = train_batches.batches_per_epoch(world_size)
    total_steps = config.steps or (per_epoch * config.epochs if per_epoch else None)
    epochs = (
        config.epochs if not config.steps or not per_epoch else math.ceil(config.steps / per_epoch)
    )
    scheduler = _schedule(optimizer, config, total_steps)
    model: nn.Module = student
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )

    teacher_validation = [teacher(feeds) for feeds in validation] if rank == 0 else []
    fidelity_before = (
        evaluate(student, teacher_validation, validation, output_names, device)
        if rank == 0
        else None
    )
    best_score = _score(fidelity_before) if fidelity_before else None
    best_state = copy.deepcopy(student.state_dict()) if rank == 0 else None
    history: list[EpochRecord] = []
    best_epoch, bad_epochs, step, start_epoch = 0, 0, 0, 0

    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    if checkpoint is not None and config.resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        student.load_state_dict(saved["student"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start_epoch, step = saved["epoch"], saved["step"]
        history = [EpochRecord(**record) for record in saved["history"]]
        best_epoch, bad_epochs = saved["best_epoch"], saved["bad_epochs"]
        best_score, best_state = tuple(saved["best_score"]), saved["best_state"]
        fidelity_before = (
            Fidelity(**saved["fidelity_before"])
            if saved.get("fidelity_before")
            else fidelity_before
        )
        logger.info("distill: resumed from %s after epoch %d", checkpoint, start_epoch)

    progress = _Progress(config.progress if rank == 0 else False)
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        model.train()
        loss_sum, batch_count = 0.0, 0
        part_sums: dict[str, float] = {}
        for feeds, labels in train_batches.epoch(
            epoch, shuffle=config.shuffle, seed=config.seed, rank=rank, world_size=world_size
        ):
            if config.steps and step >= config.steps:
                break
            teacher_outputs = {
                name: torch.from_numpy(array).to(device) for name, array in teacher(feeds).items()
            }
            student_outputs = model(**_to_device(feeds, device))
            label_tensor = torch.from_numpy(labels).to(device) if labels is not None else None
            loss, parts = loss_fn(student_outputs, teacher_outputs, label_tensor)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            batch_count += 1
            loss_sum += float(loss.detach())
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value
            progress.update(
                f"distill epoch {epoch + 1}/{epochs} batch {batch_count}/{per_epoch or '?'} loss {loss_sum / batch_count:.4g}"
            )
        totals = torch.tensor([loss_sum, float(batch_count)], dtype=torch.float64)
        if world_size > 1:
            torch.distributed.all_reduce(totals)
        mean_loss = float(totals[0] / max(totals[1], 1.0))
        record = EpochRecord(
            epoch=epoch + 1,
            loss=mean_loss,
            lr=float(optimizer.param_groups[0]["lr"]),
            seconds=time.perf_counter() - started,
            parts={name: value / max(batch_count, 1) for name, value in part_sums.items()},
        )
        decision = torch.zeros(2, dtype=torch.float64)  # [improved, stop]
        if rank == 0:
            fidelity = evaluate(student, teacher_validation, validation, output_names, device)
            record.fidelity = fidelity.to_dict()
            score = _score(fidelity)
            if best_score is None or score > best_score:
                best_score, best_epoch, bad_epochs = score, epoch + 1, 0
                best_state = copy.deepcopy(student.state_dict())
                decision[0] = 1
            else:
                bad_epochs += 1
            if config.patience is not None and bad_epochs >= config.patience:
                decision[1] = 1
            progress.done(
                f"distill epoch {epoch + 1}/{epochs} loss {mean_loss:.4g} {fidelity.describe()}"
            )
            logger.info(
                "distill: epoch %d/%d loss %.5g, %s",
                epoch + 1,
                epochs,
                mean_loss,
                fidelity.describe(),
            )
        if world_size > 1:
            torch.distributed.broadcast(decision, 0)
        history.append(record)
        if rank == 0 and checkpoint is not None:
            _atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": [dataclasses.asdict(r) for r in history],
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "best_score": list(best_score),
                    "best_state": best_state,
                    "fidelity_before": dataclasses.asdict(fidelity_before),
                },
                checkpoint,
            )
        if world_size > 1:
            torch.distributed.barrier()
        if decision[1]:
            stopped_early = True
            break
        if config.steps and step >= config.steps:
            break

    if rank == 0 and best_state is not None:
        student.load_state_dict(best_state)
    if world_size > 1:
        for tensor in list(student.parameters()) + list(student.buffers()):
            torch.distributed.broadcast(tensor.data, 0)
        summary = [best_epoch, fidelity_before.to_dict() if fidelity_before else None]
        torch.distributed.broadcast_object_list(summary, 0)
        best_epoch = summary[0]
        fidelity_before = Fidelity(**{k: _finite(v) for k, v in summary[1].items()})
    student.eval()
    return TrainResult(history, fidelity_before, best_epoch, step, world_size, stopped_early)


def _finite(value: Any) -> Any:
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return value
