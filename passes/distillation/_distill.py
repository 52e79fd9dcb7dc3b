"""``Distill``: fine-tune the graph's weights in torch against an ONNX Runtime teacher."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim._errors import SlimError, VerificationError
from onnxslim._pass import PassContext, SlimPass, SlimPassResult

__all__ = ["Distill"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "distill needs PyTorch; install it with: pip install 'onnxslim[torch]'"
# ORT(written model) must reproduce the torch student within this absolute error, or (deep
# nets whose trained activations grow: float32 accumulation order differs between kernels)
# with at least this SQNR; a kernel that computes the wrong thing lands far below it.
STUDENT_ATOL = 1e-4
STUDENT_MIN_SQNR_DB = 50.0


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


class Distill(SlimPass):
    """Knowledge distillation from an ORT teacher into the graph's own weights.

    The student is the incoming graph run in torch by :class:`onnxslim.torch_bridge.OnnxModule`
    (its trained weights are written back by initializer name, so nodes, names, opset and
    dynamic axes stay as they are), or a user ``nn.Module`` that is exported with
    ``torch.onnx.export``. The teacher is the model as it entered the pipeline
    (``context.reference_path``) or the ONNX file given as ``teacher``. Labels are optional.

    Args:
        data: Training inputs: a calibration reader, a path (``.npz``/folder), an iterable of
            input dicts (a ``label`` key adds cross-entropy), or a torch DataLoader.
            Defaults to the pipeline's data.
        teacher: Teacher ONNX file; default: the model as it entered the pipeline.
        student: A torch ``nn.Module`` to train instead of the graph (exported afterwards).
        epochs: Passes over the data. steps: Stop after this many optimizer steps instead.
        batch_size: Samples per batch when re-batching reader items (None: items as given).
        optimizer: ``adamw``, ``adam`` or ``sgd``. lr, weight_decay, schedule (``cosine``,
            ``linear``, ``constant``), warmup_steps, grad_clip: the usual.
        temperature: KL temperature on logits (T² scaled). kd_weight, ce_weight: term weights.
        label_key: Key of labels in data dicts. output_losses: output name -> kl, kl_probs,
            mse, smooth_l1 or none (default: KL for class scores, MSE otherwise).
        hints: Student value -> teacher value names (or a list of names shared by both) for hint
            losses; channel_maps: student value -> kept teacher channel indices (pruned students).
        validation_data: Inputs for per-epoch fidelity (default: up to 16 training batches).
        patience: Stop after this many epochs without better validation fidelity.
        train_bn_stats: Update BatchNorm running statistics while training.
        cache_teacher: Teacher outputs computed once and reused every epoch. None (default):
            for in-memory data (readers, files, lists: the common case) up to 2 GiB, not for a
            DataLoader (it may augment); True: always (a DataLoader's batches by content);
            False: the teacher runs on every batch.
        threads: torch threads while training (restored afterwards). None (default): one per
            1 G MACs of a batch's forward pass, at most torch's setting (small students run
            faster on one thread, above all on shared machines); ``"auto"``: times a few steps
            with torch's setting and with one thread and keeps the faster (results then depend
            on the choice: float sums differ by thread count). seed: Makes runs repeatable on CPU.
        checkpoint, resume: Resumable checkpoint file (written by rank 0 every epoch).
        device: torch device of the student. progress: progress line (default: on a terminal).
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
        epochs: int = 5,
        steps: int | None = None,
        batch_size: int | None = 32,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        warmup_steps: int = 0,
        grad_clip: float | None = 1.0,
        temperature: float = 4.0,
        kd_weight: float = 1.0,
        ce_weight: float = 1.0,
        label_key: str = "label",
        output_losses: dict[str, str] | None = None,
        hints: dict[str, str] | list[str] | None = None,
        hint_weight: float = 1.0,
        channel_maps: dict[str, list[int]] | None = None,
        validation_data: Any = None,
        patience: int | None = None,
        train_bn_stats: bool = False,
        cache_teacher: bool | None = None,
        threads: int | str | None = None,
        seed: int = 0,
        checkpoint: str | None = None,
        resume: bool = False,
        device: str = "cpu",
        progress: bool | None = None,
    ) -> None:
        super().__init__()
        if epochs < 1 and not steps:
            raise SlimError(f"distill: epochs must be >= 1, got {epochs}.")
        # Checked up front: each of these failed deep in torch with a ValueError/IndexError.
        if not (math.isfinite(lr) and lr >= 0):
            raise SlimError(f"distill: lr must be a number >= 0, got {lr}.")
        if batch_size is not None and batch_size < 0:
            raise SlimError(f"distill: batch_size must be >= 1, got {batch_size}.")
        for option, weight in (
            ("kd_weight", kd_weight),
            ("ce_weight", ce_weight),
            ("hint_weight", hint_weight),
        ):
            if not (math.isfinite(weight) and weight >= 0):
                raise SlimError(f"distill: {option} must be >= 0, got {weight}.")
        _check_device(device)
        if (
            threads is not None
            and threads != "auto"
            and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)
        ):
            raise SlimError(f"distill: threads must be a count >= 1 or 'auto', got {threads!r}.")
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

    # ----------------------------------------------------------------------------- helpers

    def _open_data(self, data: Any, model: ir.Model) -> Any:
        if isinstance(data, (str, Path)) or isinstance(data, np.ndarray):
            from onnxslim.calibration import open_reader

            # Large reader batches: Batches splits them into samples anyway, and reading an
            # .npz one sample at a time is slow.
            return open_reader(data, model, batch_size=256 if self.batch_size else 1)
        return data

    def _hint_pairs(self) -> dict[str, str]:
        if not self.hints:
            return {}
        if isinstance(self.hints, Mapping):
            return dict(self.hints)
        return {name: name for name in self.hints}

    # ----------------------------------------------------------------------------- apply

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        _require_torch()
        import torch

        from onnxslim.passes.distillation._loop import (
            Batches,
            OrtTeacher,
            TrainConfig,
            distributed_context,
            train,
        )
        from onnxslim.passes.distillation._losses import DistillationLoss, infer_output_losses
        from onnxslim.torch_bridge import OnnxModule, write_back

        teacher_path = Path(self.teacher) if self.teacher else context.reference_path
        if teacher_path is None:
            raise SlimError(
                "distill: no teacher; run it in a Pipeline (the input model is the teacher) or pass teacher='model.onnx'."
            )
        if not teacher_path.is_file():
            raise SlimError(
                f"distill: teacher model {teacher_path} not found; give an existing ONNX file."
            )
        data = self.data if self.data is not None else context.data
        if data is None:
            raise SlimError(
                "distill: no training data; pass data=... (reader, .npz, iterable of input dicts, DataLoader) or give the pipeline data."
            )
        rank, world_size = distributed_context()
        hints = self._hint_pairs()
        input_names = [v.name for v in model.graph.inputs if not v.is_initializer()]
        output_names = [v.name for v in model.graph.outputs]

        if self.student is None:
            student = OnnxModule(model, train_bn_stats=self.train_bn_stats, outputs=list(hints))
        elif isinstance(self.student, torch.nn.Module):
            student = _wrap_user_module(self.student, output_names, list(hints))
        else:
            raise SlimError(
                f"distill: student must be a torch.nn.Module, got {type(self.student).__name__}."
            )

        workdir = context.workdir or Path(tempfile.mkdtemp(prefix="onnxslim-distill-"))
        teacher = OrtTeacher(
            teacher_path,
            context.providers,
            extra_outputs=list(hints.values()),
            cache=bool(self.cache_teacher),
            workdir=workdir,
        )
        if teacher.input_names != input_names:
            raise SlimError(
                f"distill: teacher inputs {teacher.input_names} differ from the student's {input_names}; use the model the student was derived from."
            )
        train_batches = Batches(
            self._open_data(data, model),
            input_names,
            batch_size=self.batch_size,
            label_key=self.label_key,
        )
        if train_batches.in_memory:
            teacher.cache = None  # the loop keeps per-sample outputs; no second copy by content
        validation = self._validation(model, train_batches, input_names)

        teacher_validation = [teacher(feeds) for feeds in validation]
        first_teacher = teacher_validation[0]
        softmax_outputs = [
            v.name
            for v in model.graph.outputs
            if v.producer() is not None and v.producer().op_type == "Softmax"
        ]
        losses = infer_output_losses({n: first_teacher[n] for n in output_names}, softmax_outputs)
        for name, kind in (self.output_losses or {}).items():
            if name not in losses:
                raise SlimError(
                    f"distill: output_losses names '{name}', which is not a graph output ({', '.join(output_names)})."
                )
            losses[name] = kind
        loss_fn = DistillationLoss(
            losses,
            temperature=self.temperature,
            kd_weight=self.kd_weight,
            ce_weight=self.ce_weight,
            hints=hints,
            hint_weight=self.hint_weight,
            channel_maps=self.channel_maps,
        )
        config = TrainConfig(
            epochs=self.epochs,
            steps=self.steps,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
            seed=self.seed,
            patience=self.patience,
            checkpoint=self.checkpoint,
            resume=self.resume,
            progress=self.progress,
            device=self.device,
            cache_teacher=self.cache_teacher,
            threads=self.threads,
            step_macs=_batch_forward_macs(model, validation[0]),
        )
        result = train(
            student,
            teacher,
            loss_fn,
            train_batches,
            validation,
            output_names,
            config,
            teacher_validation=teacher_validation,
        )
        student.cpu()

        if self.student is None:
            changed = write_back(student, model)
            out_model = model
        else:
            out_model = _export_module(self.student, model, validation[0], workdir)
            changed = ["<exported nn.Module>"]

        # The written graph in ORT must reproduce the torch student, and its fidelity is the result.
        from onnxslim import create_session, temporary_model_file

        with temporary_model_file(out_model) as path:
            session = create_session(path, context.providers)
            ort_outputs = [
                dict(zip(output_names, session.run(output_names, feeds), strict=True))
                for feeds in validation
            ]
        torch_outputs = []
        with torch.no_grad():
            for feeds in validation:
                outputs = student(
                    **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
                )
                torch_outputs.append({n: outputs[n].numpy() for n in output_names})
        from onnxslim import compare_outputs

        floating = [n for n in output_names if np.issubdtype(ort_outputs[0][n].dtype, np.floating)]
        student_parity = compare_outputs(
            [{n: t[n] for n in floating} for t in torch_outputs],
            [{n: o[n] for n in floating} for o in ort_outputs],
        )
        student_error = student_parity.max_abs_error if floating else 0.0
        parity_sqnr = student_parity.sqnr_db if floating else float("inf")
        if student_error > STUDENT_ATOL and not parity_sqnr >= STUDENT_MIN_SQNR_DB:
            raise VerificationError(
                f"distill: the re-exported model differs from the torch student by {student_error:.3g} "
                f"(> {STUDENT_ATOL}, SQNR {parity_sqnr:.1f} dB < {STUDENT_MIN_SQNR_DB:g} dB); "
                "this is a bug in the torch kernels, please report it with the model."
            )
        teacher_outputs = [{n: outputs[n] for n in output_names} for outputs in teacher_validation]
        fidelity_after = compare_outputs(teacher_outputs, ort_outputs)
        summary = {
            "teacher": str(teacher_path),
            "student": "graph" if self.student is None else type(self.student).__name__,
            "epochs_run": len(result.history),
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "samples": train_batches.sample_count,
            "teacher_cache": result.teacher_cache,
            "threads": result.threads,
            "world_size": world_size,
            "rank": rank,
            "losses": losses,
            "loss_first_epoch": result.history[0].loss if result.history else None,
            "loss_last_epoch": result.history[-1].loss if result.history else None,
            "sqnr_before_db": result.fidelity_before.to_dict()["sqnr_db"],
            "sqnr_after_db": fidelity_after.to_dict()["sqnr_db"],
            "history": [dataclasses.asdict(record) for record in result.history],
            "fidelity_before": result.fidelity_before.to_dict(),
            "fidelity_after": fidelity_after.to_dict(),
            "student_vs_onnx_max_abs_error": student_error,
            "student_vs_onnx_sqnr_db": student_parity.to_dict()["sqnr_db"] if floating else None,
            "initializers_updated": len(changed),
        }
        logger.info(
            "distill: fidelity %s -> %s",
            result.fidelity_before.describe(),
            fidelity_after.describe(),
        )
        return SlimPassResult(out_model, modified=bool(changed), summary=summary)

    def _validation(
        self, model: ir.Model, train_batches: Any, input_names: Sequence[str]
    ) -> list[dict[str, np.ndarray]]:
        from onnxslim.passes.distillation._loop import Batches

        if self.validation_data is not None:
            batches = Batches(
                self._open_data(self.validation_data, model),
                input_names,
                batch_size=self.batch_size,
                label_key=self.label_key,
            )
            return [feeds for feeds, _ in batches.in_order()]
        validation = []
        for feeds, _ in train_batches.in_order():
            validation.append(feeds)
            if len(validation) >= 16:
                break
        return validation


def _batch_forward_macs(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> int | None:
    """MACs of the graph's forward pass over one training batch (None when unknown)."""
    from onnxslim import input_specs, model_stats

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


def _dict_outputs_class():
    import torch

    class DictOutputs(torch.nn.Module):
        """Wraps a user module so that it returns ``{graph output name: tensor}``."""

        def __init__(
            self, module: torch.nn.Module, output_names: Sequence[str], hint_names: Sequence[str]
        ):
            super().__init__()
            if hint_names:
                raise SlimError(
                    "distill: hint losses need the graph student (intermediate values are named in the graph), not a user nn.Module."
                )
            self.module = module
            self.output_names = list(output_names)

        def forward(self, **inputs):
            outputs = self.module(*inputs.values())
            if isinstance(outputs, Mapping):
                return dict(outputs)
            if isinstance(outputs, torch.Tensor):
                outputs = (outputs,)
            return dict(zip(self.output_names, outputs, strict=True))

    return DictOutputs


def _wrap_user_module(module: Any, output_names: Sequence[str], hint_names: Sequence[str]) -> Any:
    return _dict_outputs_class()(module, output_names, hint_names)


def _export_module(
    module: Any, model: ir.Model, example: Mapping[str, np.ndarray], workdir: Path
) -> ir.Model:
    """Exports a user student with torch.onnx.export under the graph's input/output names."""
    import torch

    from onnxslim import load

    input_names = list(example)
    output_names = [v.name for v in model.graph.outputs]
    dynamic_axes = {}
    for value in list(model.graph.inputs) + list(model.graph.outputs):
        if value.shape is not None:
            axes = {i: str(d) for i, d in enumerate(value.shape) if not isinstance(d, int)}
            if axes:
                dynamic_axes[value.name] = axes
    opset = model.opset_imports.get("", 17)
    path = workdir / "distilled_student.onnx"
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(np.ascontiguousarray(example[name])) for name in input_names),
            str(path),
            dynamo=False,
            opset_version=max(opset, 13),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes or None,
        )
    return load(path)
