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
from onnxslim._pipeline import _human_bytes

__all__ = [
    "OrtTeacher",
    "TrainConfig",
    "TrainResult",
    "EpochRecord",
    "Batches",
    "train",
    "distributed_context",
    "TeacherTargets",
    "default_thread_count",
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

    With ``batch_size``, reader items are split into samples once, stacked in memory per input
    and re-batched to ``batch_size`` samples, shuffled per epoch with ``seed + epoch`` and
    sharded per rank; without it, items are used as given. A DataLoader is used as it batches
    (with its own DistributedSampler, or sharded by batch index).

    :meth:`epoch` yields ``(feeds, labels, key)``: ``key`` names the batch's samples (an index
    array when stacked, the item index otherwise, ``None`` for a DataLoader) so that teacher
    outputs can be looked up instead of recomputed.
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
        self.items: list[tuple[Feeds, np.ndarray | None]] | None = None
        # Stacked samples (batch_size given): input name -> [samples, ...] array, and labels.
        self.arrays: Feeds | None = None
        self.labels: np.ndarray | None = None
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
        if not self.batch_size:
            self.items = items
            return
        arrays = {}
        for name in self.input_names:
            parts = [np.asarray(feeds[name]) for feeds, _ in items]
            shapes = {p.shape[1:] for p in parts}
            if any(p.ndim == 0 for p in parts) or len(shapes) > 1:
                raise InputDataError(
                    f"distill: samples of input '{name}' differ in shape ({', '.join(sorted(map(str, shapes)))}); "
                    "give batch_size=None to train on the items as given."
                )
            arrays[name] = np.ascontiguousarray(np.concatenate(parts))
        counts = {len(array) for array in arrays.values()}
        if len(counts) > 1:
            raise InputDataError(
                f"distill: the inputs hold different sample counts {sorted(counts)}; axis 0 must count samples."
            )
        with_labels = [labels is not None for _, labels in items]
        if any(with_labels) and not all(with_labels):
            raise InputDataError(
                f"distill: {sum(with_labels)} of {len(items)} data items have labels; label all items or none."
            )
        self.arrays = arrays
        if all(with_labels):
            self.labels = np.concatenate([np.atleast_1d(labels) for _, labels in items])

    @property
    def sample_count(self) -> int:
        if self.arrays is not None:
            return len(next(iter(self.arrays.values())))
        if self.items is not None:
            return sum(len(next(iter(f.values()))) for f, _ in self.items)
        return len(self.data.dataset) if hasattr(self.data, "dataset") else 0

    @property
    def in_memory(self) -> bool:
        """The data is a fixed list held in memory (every epoch sees the same samples)."""
        return self.arrays is not None or self.items is not None

    def batches_per_epoch(self, world_size: int = 1) -> int | None:
        if self.arrays is not None:
            count = self.sample_count
            per_rank = count // world_size if world_size > 1 else count
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

    def in_order(self) -> Iterator[tuple[Feeds, Any]]:
        """Every batch once, unshuffled and unsharded, with its key (see :meth:`epoch`)."""
        for feeds, _, key in self.epoch():
            yield feeds, key

    def epoch(
        self,
        epoch: int = 0,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[Feeds, np.ndarray | None, Any]]:
        if not self.in_memory:
            for feeds, labels in self._loader_epoch(epoch, rank, world_size):
                yield feeds, labels, None
            return
        count = self.sample_count if self.arrays is not None else len(self.items)
        order = np.arange(count)
        if shuffle:
            order = np.random.default_rng(seed + epoch).permutation(count)
        if world_size > 1:
            # Same permutation on every rank; equal shares keep DDP's collective calls in step.
            order = order[: len(order) // world_size * world_size][rank::world_size]
        if self.arrays is None:
            for index in order:
                feeds, labels = self.items[index]
                yield feeds, labels, int(index)
            return
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            if not shuffle and world_size == 1:
                index = slice(int(index[0]), int(index[-1]) + 1)  # contiguous: views, no copies
            feeds = {name: array[index] for name, array in self.arrays.items()}
            labels = None if self.labels is None else self.labels[index]
            yield feeds, labels, index

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
    cache_teacher: bool | None = None
    threads: int | str | None = None
    # MACs of one forward pass over a training batch (None: unknown), for the default threads.
    step_macs: int | None = None


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


def _to_device(
    feeds: Mapping[str, np.ndarray], device: torch.device, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    tensors = {
        name: torch.from_numpy(np.ascontiguousarray(array)).to(device)
        for name, array in feeds.items()
    }
    if channels_last:
        for name, tensor in tensors.items():
            if tensor.dim() == 4 and tensor.is_floating_point():
                tensors[name] = tensor.contiguous(memory_format=torch.channels_last)
    return tensors


def _uses_channels_last(student: nn.Module, device: torch.device) -> bool:
    """oneDNN's convolutions (forward and backward) run markedly faster on NHWC tensors."""
    return device.type == "cpu" and any(p.dim() == 4 for p in student.parameters())


# Auto-caching keeps teacher outputs of in-memory data up to this size (all samples together).
TEACHER_CACHE_BYTES = 2 << 30
# Default torch threads: one per this many MACs of a batch's forward pass. Below it, per-op
# threading overhead, and OpenMP workers waiting for descheduled peers on shared machines, cost
# more than they gain (a 6 M-MAC CNN at batch 32: 36 ms/step on 1 thread, 0.1-2 s on 2 busy cores).
THREAD_GRAIN_MACS = 10**9


def default_thread_count(step_macs: int | None, available: int) -> int:
    """Torch threads for a student whose batch forward pass costs ``step_macs`` MACs."""
    if not step_macs:
        return available
    return max(1, min(available, math.ceil(step_macs / THREAD_GRAIN_MACS)))


class TeacherTargets:
    """Teacher outputs of a fixed in-memory data set, computed once and reused every epoch.

    Stacked samples are run through the teacher in order, batch by batch, and kept per sample,
    so shuffled batches look their targets up by index; items used as given are kept per item.
    Use :meth:`build`, which declines (with the reason) when outputs are not per sample or would
    exceed the memory budget.
    """

    def __init__(
        self, stacked: dict[str, torch.Tensor] | None, per_item: list[dict[str, torch.Tensor]]
    ):
        self.stacked = stacked
        self.per_item = per_item

    @classmethod
    def build(
        cls, teacher: OrtTeacher, batches: Batches, max_bytes: int | None
    ) -> tuple[TeacherTargets | None, str]:
        """(targets, description) or (None, why not) for the teacher on ``batches``."""
        if not batches.in_memory:
            return None, "off (streamed data: the teacher runs on every batch)"
        stacked = batches.arrays is not None
        expected = batches.sample_count if stacked else len(batches.items)
        chunks: list[dict[str, np.ndarray]] = []
        for feeds, _ in batches.in_order():
            outputs = teacher(feeds)
            count = len(next(iter(feeds.values())))
            if stacked and any(
                array.ndim == 0 or array.shape[0] != count for array in outputs.values()
            ):
                return (
                    None,
                    "off (teacher outputs are not per sample: the teacher runs on every batch)",
                )
            chunks.append(outputs)
            if len(chunks) == 1 and max_bytes is not None:
                estimate = (
                    sum(a.nbytes for a in outputs.values()) * expected / (count if stacked else 1)
                )
                if estimate > max_bytes:
                    return None, (
                        f"off (teacher outputs would take {_human_bytes(estimate)} > "
                        f"{_human_bytes(max_bytes)}: the teacher runs on every batch)"
                    )
        names = list(chunks[0])
        if stacked:
            merged = {
                name: torch.from_numpy(np.concatenate([chunk[name] for chunk in chunks]))
                for name in names
            }
            return cls(merged, []), f"in memory ({expected} samples, computed once)"
        items = [{name: torch.from_numpy(chunk[name]) for name in names} for chunk in chunks]
        return cls(None, items), f"in memory ({expected} items, computed once)"

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        if self.stacked is not None:
            if isinstance(key, np.ndarray):
                key = torch.from_numpy(key)
            return {name: tensor[key] for name, tensor in self.stacked.items()}
        return self.per_item[key]


def _fastest_thread_count(
    student: nn.Module, feeds: Feeds, device: torch.device, channels_last: bool
) -> int:
    """Times training steps with torch's thread count and with one thread; the faster wins.

    Small students on busy or small machines often run faster on one thread (the OpenMP
    team waits for descheduled threads at every op); large ones gain from all cores.
    """
    candidates = [torch.get_num_threads(), 1]
    saved_buffers = [buffer.detach().clone() for buffer in student.buffers()]
    inputs = _to_device(feeds, device, channels_last)

    def step() -> float:
        started = time.perf_counter()
        outputs = student(**inputs)
        loss = sum(
            tensor.float().sum()
            for tensor in outputs.values()
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad
        )
        if isinstance(loss, torch.Tensor):
            loss.backward()
        return time.perf_counter() - started

    timings: dict[int, list[float]] = {count: [] for count in candidates}
    try:
        for count in candidates:  # warm-up: oneDNN builds its kernels per thread count
            torch.set_num_threads(count)
            step()
        for _ in range(3):
            for count in candidates:
                torch.set_num_threads(count)
                timings[count].append(step())
            fastest, slowest = sorted(min(values) for values in timings.values())
            if slowest > 2 * fastest:  # a clear winner: stop timing
                break
    finally:
        student.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(student.buffers(), saved_buffers, strict=True):
                buffer.copy_(saved)
    medians = {count: float(np.median(values)) for count, values in timings.items()}
    chosen = min(medians, key=medians.get)
    logger.info(
        "distill: %d torch thread(s) (median step %s)",
        chosen,
        ", ".join(f"{1000 * t:.1f} ms with {c}" for c, t in medians.items()),
    )
    return chosen


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
            outputs = student(**_to_device(feeds, device, channels_last))
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
    teacher_validation: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> TrainResult:
    """Fine-tunes ``student`` on the teacher's outputs; on return it holds the best weights.

    Under an initialised torch.distributed group the student is wrapped in
    DistributedDataParallel, each rank trains on its shard, rank 0 validates and decides
    (best epoch, early stop) and its weights are broadcast at the end. Teacher outputs of
    in-memory data are computed once (``config.cache_teacher``); torch's thread count is set
    for the loop (``config.threads``, or timed) and restored afterwards.
    """
    rank, world_size = distributed_context()
    device = torch.device(config.device)
    student.to(device)
    student.train()
    threads_before = torch.get_num_threads()
    channels_last = _uses_channels_last(student, device)
    try:
        if channels_last:
            student.to(memory_format=torch.channels_last)
        if isinstance(config.threads, int):
            torch.set_num_threads(config.threads)
        elif device.type == "cpu" and world_size == 1 and threads_before > 1:
            if config.threads == "auto" and validation:
                chosen = _fastest_thread_count(student, validation[0], device, channels_last)
            else:
                chosen = default_thread_count(config.step_macs, threads_before)
            torch.set_num_threads(chosen)
        return _train(
            student,
            teacher,
            loss_fn,
            train_batches,
            validation,
            output_names,
            config,
            device,
            channels_last,
            teacher_validation,
        )
    finally:
        torch.set_num_threads(threads_before)
        if channels_last:
            student.to(memory_format=torch.contiguous_format)


def _train(
    student: nn.Module,
    teacher: OrtTeacher,
    loss_fn: Any,
    train_batches: Batches,
    validation: Sequence[Feeds],
    output_names: Sequence[str],
    config: TrainConfig,
    device: torch.device,
    channels_last: bool,
    teacher_validation: Sequence[Mapping[str, np.ndarray]] | None,
) -> TrainResult:
    rank, world_size = distributed_context()
    torch.manual_seed(config.seed)
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

    targets, teacher_cache = None, "off"
    if config.cache_teacher is not False:
        targets, teacher_cache = TeacherTargets.build(
            teacher, train_batches, None if config.cache_teacher else TEACHER_CACHE_BYTES
        )
    logger.info("distill: teacher outputs %s", teacher_cache)
    if rank != 0:
        teacher_validation = []
    elif teacher_validation is None:
        teacher_validation = [teacher(feeds) for feeds in validation]
    fidelity_before = (
        evaluate(student, teacher_validation, validation, output_names, device, channels_last)
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
        for feeds, labels, key in train_batches.epoch(
            epoch, shuffle=config.shuffle, seed=config.seed, rank=rank, world_size=world_size
        ):
            if config.steps and step >= config.steps:
                break
            if targets is not None:
                teacher_outputs = {name: tensor.to(device) for name, tensor in targets[key].items()}
            else:
                teacher_outputs = {
                    name: torch.from_numpy(array).to(device)
                    for name, array in teacher(feeds).items()
                }
            student_outputs = model(**_to_device(feeds, device, channels_last))
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
            fidelity = evaluate(
                student, teacher_validation, validation, output_names, device, channels_last
            )
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
    return TrainResult(
        history,
        fidelity_before,
        best_epoch,
        step,
        world_size,
        stopped_early,
        teacher_cache=teacher_cache,
        threads=torch.get_num_threads(),
    )


def _finite(value: Any) -> Any:
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    return value
