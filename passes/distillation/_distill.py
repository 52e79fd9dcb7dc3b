"""``Distill``: fine-tune the graph's weights in torch against an ONNX Runtime teacher."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import typing
from typing import Any, ClassVar

import onnx_ir as ir

from onnxslim import PassContext, SlimError, SlimPass, SlimPassResult
from onnxslim.passes.distillation._config import DATA, TrainConfig, options_doc
from onnxslim.passes.distillation._options import NOT_OPTIONS, DistillOptions

__all__ = ["Distill"]

_INSTALL_HINT = "distill needs PyTorch; install it with: pip install 'onnxslim[torch]'"


def _require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise SlimError(_INSTALL_HINT)


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
        output_losses: output name -> kl, kl_probs, binary_kl, mse, smooth_l1 or none
            (default: KL for class scores, binary KL for Sigmoid maps, MSE otherwise).
        hints: Student value -> teacher value names (or a list of names shared by both) for hint
            losses; channel_maps: student value -> kept teacher channel indices (pruned students).
        validation_data: Inputs for per-epoch fidelity (default: up to 16 training batches).
    """

    name = "distill"
    description = "Fine-tunes the weights against the original model as an ONNX Runtime teacher (knowledge distillation)."
    exact = False

    Options = DistillOptions
    settings: DistillOptions
    validation_batches: ClassVar[int] = DATA.validation_batches

    def __init__(self, data: Any = None, /, **values: Any) -> None:
        # ``Distill("train.npz", epochs=10)``: the data may come first, as before.
        if isinstance(data, DistillOptions):
            super().__init__(data, **values)
            return
        if data is not None:
            if "data" in values:
                raise TypeError("Distill: data given twice (positionally and as data=)")
            values["data"] = data
        super().__init__(**values)

    def train_config(self) -> TrainConfig:
        """This pass's training-loop options (the MACs per batch are measured in apply)."""
        return self.settings.train_config()

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
    "    and DataConfig, the one source of both):\n\n" + options_doc(skip=NOT_OPTIONS) + "\n"
)


def _signature() -> inspect.Signature:
    """``Distill(data=None, /, *, teacher=None, ...)``: the declared options as parameters."""
    hints = typing.get_type_hints(DistillOptions)
    parameters = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if field.name == "data"
            else inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in dataclasses.fields(DistillOptions)
    ]
    return inspect.Signature(parameters, return_annotation=None)


Distill.__signature__ = _signature()  # type: ignore[attr-defined]
