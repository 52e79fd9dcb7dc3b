"""The stages of ``Distill.apply``, each on one ``DistillRun`` (imports torch; loaded lazily)."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir
import torch

import onnxslim
from onnxslim import PassContext, SlimError, VerificationError
from onnxslim.fidelity import Fidelity, compare_outputs
from onnxslim.inputs import Feeds, input_specs
from onnxslim.model import model_stats
from onnxslim.passes.distillation import _teacher
from onnxslim.passes.distillation._batches import Batches, to_device
from onnxslim.passes.distillation._export import DictOutputs, export_module, replace_model
from onnxslim.passes.distillation._loop import distributed_context, train
from onnxslim.passes.distillation._losses import DistillationLoss, infer_output_losses
from onnxslim.passes.distillation._state import TrainResult, TrainState
from onnxslim.passes.pruning import read_hints
from onnxslim.runtime import create_session
from onnxslim.torch_bridge import OnnxModule
from onnxslim.torch_bridge import write_back as write_back_weights

if TYPE_CHECKING:
    from onnxslim.passes.distillation._distill import Distill

__all__ = ["DistillRun", "STUDENT_ATOL", "STUDENT_MIN_SQNR_DB"]

logger = logging.getLogger(__name__)

# ORT(written model) must reproduce the torch student within this absolute error, or (deep
# nets whose trained activations grow: float32 accumulation order differs between kernels)
# with at least this SQNR; a kernel that computes the wrong thing lands far below it.
STUDENT_ATOL = 1e-4
STUDENT_MIN_SQNR_DB = 50.0


@dataclasses.dataclass
class DistillRun:
    """The working state of one ``Distill.apply``, filled stage by stage."""

    options: Distill
    model: ir.Model
    context: PassContext
    teacher_path: Path
    data: Any
    hints: dict[str, str]
    input_names: list[str]
    output_names: list[str]
    workdir: Path
    rank: int = 0
    world_size: int = 1
    student: torch.nn.Module | None = None
    teacher: _teacher.OrtTeacher | None = None
    batches: Batches | None = None
    validation: list[Feeds] = dataclasses.field(default_factory=list)
    teacher_validation: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    losses: dict[str, str] = dataclasses.field(default_factory=dict)
    loss_fn: DistillationLoss | None = None
    result: TrainResult | None = None
    changed: list[str] = dataclasses.field(default_factory=list)
    ort_outputs: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    parity: Fidelity | None = None  # torch student vs the written model in ORT (float outputs)
    fidelity_after: Fidelity | None = None
    # automatic feature hints (from a pruning record): kept teacher channels and their axes
    feature_maps: dict[str, list[int]] | None = None
    feature_axes: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def open(cls, options: Distill, model: ir.Model, context: PassContext) -> DistillRun:
        """Resolves the teacher file and the data source (or says what is missing)."""
        teacher_path = Path(options.teacher) if options.teacher else context.reference_path
        if teacher_path is None:
            raise SlimError(
                "distill: no teacher; run it in a Pipeline (the input model is the teacher) or pass teacher='model.onnx'."
            )
        if not teacher_path.is_file():
            raise SlimError(
                f"distill: teacher model {teacher_path} not found; give an existing ONNX file."
            )
        data = options.data if options.data is not None else context.data
        if data is None:
            raise SlimError(
                "distill: no training data; pass data=... (reader, .npz, iterable of input dicts, DataLoader) or give the pipeline data."
            )
        rank, world_size = distributed_context()
        hints = _hint_pairs(options.hints)
        feature_maps: dict[str, list[int]] | None = None
        feature_axes: dict[str, int] = {}
        if not hints and options.student is None and options.feature_weight > 0:
            hints, feature_maps, feature_axes = _feature_hints(model)
        return cls(
            options=options,
            model=model,
            context=context,
            teacher_path=teacher_path,
            data=data,
            hints=hints,
            input_names=[v.name or "" for v in model.graph.inputs if not v.is_initializer()],
            output_names=[v.name or "" for v in model.graph.outputs],
            workdir=context.workdir or Path(tempfile.mkdtemp(prefix="onnxslim-distill-")),
            rank=rank,
            world_size=world_size,
            feature_maps=feature_maps,
            feature_axes=feature_axes,
        )


def _hint_pairs(hints: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    if not hints:
        return {}
    if isinstance(hints, Mapping):
        return dict(hints)
    return {name: name for name in hints}


def _feature_hints(model: ir.Model) -> tuple[dict[str, str], dict[str, list[int]], dict[str, int]]:
    """The hint points a pruning pass recorded in ``model`` (none: no record), the teacher
    channels each kept, and their channel axes."""
    record = read_hints(model)
    if not record:
        return {}, {}, {}
    named = {v.name for node in model.graph for v in node.outputs if v.name}
    points = [name for name in record["points"] if name in named]
    kept = {n: record["kept"][n] for n in points if n in record["kept"]}
    return (
        {name: name for name in points},
        {n: entry["kept"] for n, entry in kept.items()},
        {n: int(entry["axis"]) for n, entry in kept.items()},
    )


def build_student(run: DistillRun) -> None:
    """The graph itself in torch, or the user's module returning named outputs."""
    user = run.options.student
    if user is None:
        run.student = OnnxModule(
            run.model, train_bn_stats=run.options.train_bn_stats, outputs=list(run.hints)
        )
    elif isinstance(user, torch.nn.Module):
        run.student = DictOutputs(user, run.output_names, list(run.hints))
    else:
        raise SlimError(f"distill: student must be a torch.nn.Module, got {type(user).__name__}.")


def build_teacher(run: DistillRun) -> None:
    """The teacher file in ORT, with the hinted values exposed as outputs."""
    teacher = _teacher.OrtTeacher(
        run.teacher_path,
        run.context.providers,
        extra_outputs=list(run.hints.values()),
        cache=bool(run.options.cache_teacher) and run.options.augment is None,
    )
    if teacher.input_names != run.input_names:
        raise SlimError(
            f"distill: teacher inputs {teacher.input_names} differ from the student's {run.input_names}; use the model the student was derived from."
        )
    run.teacher = teacher


def open_data(run: DistillRun) -> None:
    """Training batches, validation batches and the teacher's outputs on the latter."""
    assert run.teacher is not None  # build_teacher ran
    run.batches = _batches(run, run.data)
    if run.batches.in_memory:
        run.teacher.cache = None  # the loop keeps per-sample outputs; no second copy by content
    if run.options.validation_data is not None:
        validation = _batches(run, run.options.validation_data)
        run.validation = [feeds for feeds, _ in validation.in_order()]
    else:
        for feeds, _ in run.batches.in_order():
            run.validation.append(feeds)
            if len(run.validation) >= run.options.validation_batches:
                break
    run.teacher_validation = [run.teacher(feeds) for feeds in run.validation]


def _batches(run: DistillRun, data: Any) -> Batches:
    """Batches over ``onnxslim.inputs.open_samples`` (a reader in the data is used as is)."""
    return Batches(
        data,
        run.input_names,
        batch_size=run.options.batch_size,
        label_key=run.options.label_key,
        model=run.model,
    )


def build_loss(run: DistillRun) -> None:
    """Per-output loss kinds (inferred from the teacher, overridden by the user) and their sum."""
    produced = {
        v.name: producer.op_type
        for v in run.model.graph.outputs
        if (producer := v.producer()) is not None
    }
    first = run.teacher_validation[0]
    losses = infer_output_losses(
        {n: first[n] for n in run.output_names},
        softmax_outputs=[n for n, op in produced.items() if op == "Softmax"],
        sigmoid_outputs=[n for n, op in produced.items() if op == "Sigmoid"],
    )
    for name, kind in (run.options.output_losses or {}).items():
        if name not in losses:
            raise SlimError(
                f"distill: output_losses names '{name}', which is not a graph output ({', '.join(run.output_names)})."
            )
        losses[name] = kind
    run.losses = losses
    options = run.options
    features = run.feature_maps is not None
    run.loss_fn = DistillationLoss(
        losses,
        temperature=options.temperature,
        kd_weight=options.kd_weight,
        ce_weight=options.ce_weight,
        hints=run.hints,
        # automatic feature hints share feature_weight, each scale-free (nmse)
        hint_weight=options.feature_weight / max(len(run.hints), 1)
        if features
        else options.hint_weight,
        hint_loss="nmse" if features else "mse",
        channel_maps=run.feature_maps if features else options.channel_maps,
        channel_axes=run.feature_axes,
    )


def train_student(run: DistillRun) -> None:
    """The training loop on the options' TrainConfig; the student ends on the CPU."""
    assert run.student is not None and run.teacher is not None  # earlier stages ran
    assert run.batches is not None and run.loss_fn is not None
    config = dataclasses.replace(
        run.options.train_config(), step_macs=_batch_forward_macs(run.model, run.validation[0])
    )
    state = TrainState(
        student=run.student,
        teacher=run.teacher,
        loss_fn=run.loss_fn,
        batches=run.batches,
        validation=run.validation,
        output_names=run.output_names,
        teacher_validation=run.teacher_validation,
    )
    run.result = train(config, state)
    run.student.cpu()


def write_back(run: DistillRun) -> None:
    """Trained weights into ``run.model`` itself: by initializer name, or the user module's
    export moved into the same object (the pass is in place)."""
    if isinstance(run.student, OnnxModule):
        run.changed = write_back_weights(run.student, run.model)
        return
    exported = export_module(run.options.student, run.model, run.validation[0], run.workdir)
    replace_model(run.model, exported)
    run.changed = ["<exported nn.Module>"]


def check_write_back(run: DistillRun) -> None:
    """The written model in ORT must reproduce the torch student; its fidelity is the result."""
    assert run.student is not None
    names = run.output_names
    with onnxslim.temporary_model_file(run.model) as path:
        session = create_session(path, run.context.providers)
        run.ort_outputs = [
            dict(zip(names, session.run(names, feeds), strict=True)) for feeds in run.validation
        ]
    torch_outputs = []
    with torch.no_grad():
        for feeds in run.validation:
            outputs = run.student(**to_device(feeds, torch.device("cpu")))
            torch_outputs.append({n: outputs[n].numpy() for n in names})
    floating = [n for n in names if np.issubdtype(run.ort_outputs[0][n].dtype, np.floating)]
    run.parity = compare_outputs(
        [{n: t[n] for n in floating} for t in torch_outputs],
        [{n: o[n] for n in floating} for o in run.ort_outputs],
    )
    error = run.parity.max_abs_error if floating else 0.0
    sqnr = run.parity.sqnr_db if floating else float("inf")
    if not floating:
        run.parity = None
    if error > STUDENT_ATOL and not sqnr >= STUDENT_MIN_SQNR_DB:
        raise VerificationError(
            f"distill: the re-exported model differs from the torch student by {error:.3g} "
            f"(> {STUDENT_ATOL}, SQNR {sqnr:.1f} dB < {STUDENT_MIN_SQNR_DB:g} dB); "
            "this is a bug in the torch kernels, please report it with the model."
        )
    teacher_outputs = [{n: outputs[n] for n in names} for outputs in run.teacher_validation]
    run.fidelity_after = compare_outputs(teacher_outputs, run.ort_outputs)


def summary(run: DistillRun) -> dict[str, Any]:
    """The pass's report entry (plain values; floats stay floats)."""
    result, after, parity = run.result, run.fidelity_after, run.parity
    assert result is not None and after is not None and run.batches is not None
    before = result.fidelity_before
    logger.info("distill: fidelity %s -> %s", before.describe(), after.describe())
    history = result.history
    # Floats as they are (inf included): the pipeline's report encodes non-finite values once.
    return {
        "teacher": str(run.teacher_path),
        "student": "graph" if run.options.student is None else type(run.options.student).__name__,
        "epochs_run": len(history),
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "samples": run.batches.sample_count,
        "teacher_cache": result.teacher_cache,
        "threads": result.threads,
        "world_size": run.world_size,
        "rank": run.rank,
        "losses": run.losses,
        "hints": list(run.hints),
        "feature_hints": run.feature_maps is not None,
        "loss_first_epoch": history[0].loss if history else None,
        "loss_last_epoch": history[-1].loss if history else None,
        "sqnr_before_db": before.sqnr_db,
        "sqnr_after_db": after.sqnr_db,
        "history": [dataclasses.asdict(record) for record in history],
        "fidelity_before": before.as_record(),
        "fidelity_after": after.as_record(),
        "student_vs_onnx_max_abs_error": parity.max_abs_error if parity else 0.0,
        "student_vs_onnx_sqnr_db": parity.sqnr_db if parity else None,
        "initializers_updated": len(run.changed),
    }


def _batch_forward_macs(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> int | None:
    """MACs of the graph's forward pass over one training batch (None when unknown), by the
    engine's one MAC rule with the batch's sizes for the symbolic input dims."""
    try:
        sizes = {
            dim: int(feeds[spec.name].shape[axis])
            for spec in input_specs(model)
            if spec.name in feeds and spec.shape
            for axis, dim in enumerate(spec.shape)
            if isinstance(dim, str) and axis < feeds[spec.name].ndim
        }
        return model_stats(model, sizes).macs or None
    except Exception as error:  # the estimate only picks a thread count
        logger.debug("distill: no MACs estimate (%s)", error)
        return None
