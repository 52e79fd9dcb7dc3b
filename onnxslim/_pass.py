"""The pass contract: an ``onnx_ir`` in-place pass with a CLI name, typed options and a summary."""

from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

from onnxslim._errors import SlimError, VerificationError
from onnxslim.inputs import SampleReader
from onnxslim.options import OptionSpec, check_value, option_specs, option_values

__all__ = ["PassContext", "SlimPass", "SlimPassResult", "run_pass"]


@dataclasses.dataclass
class SlimPassResult(ir.passes.PassResult):
    """``PassResult`` plus a pass-specific summary for the report (JSON-serialisable)."""

    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PassContext:
    """What the pipeline knows that a pass may need besides the model itself.

    Attributes:
        reference_path: The model as it entered the pipeline, saved on disk (teacher, fidelity).
        sample_inputs: Input feeds used for verification (one dict per sample).
        data: The user's data, opened once by the pipeline (``onnxslim.inputs.open_samples``):
            iterate it for batches, or ``open_samples(context.data, model, batch_size=...)``.
        sizes: Sizes for symbolic dims (dim name or input name -> size/shape).
        providers: ORT execution providers the model is meant for.
        workdir: A scratch folder that lives as long as the pipeline run.
        refuse_no_op: A lossy pass that was asked for a change and made none raises
            :class:`~onnxslim.UnsupportedModelError` (its one sentence) instead of warning.
            ``onnxslim optimize`` sets it: a no-op reads as success on a terminal.
    """

    reference_path: Path | None = None
    sample_inputs: Sequence[Mapping[str, np.ndarray]] = ()
    data: SampleReader | None = None
    sizes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    providers: Sequence[str] = ("CPUExecutionProvider",)
    workdir: Path | None = None
    refuse_no_op: bool = False


class SlimPass(ir.passes.InPlacePass, abc.ABC):
    """Base of onnxslim's public passes.

    Subclasses set ``name`` (stable CLI/recipe name), ``description`` (one line), ``exact``
    (outputs must match the input within ``atol``) and implement :meth:`apply`. Options are
    declared once as a frozen dataclass in ``Options`` (see :mod:`onnxslim.options`); the
    instance then takes them as keywords (or one ``Options`` value) and reads them as attributes.
    A pass without ``Options`` has no options.
    """

    Options: ClassVar[type | None] = None
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4

    def __init__(self, options: Any = None, /, **values: Any) -> None:
        super().__init__()
        declared = type(self).Options
        if declared is None:
            if options is not None or values:
                raise TypeError(f"{type(self).__name__} declares no Options")
            return
        if options is not None and values:
            raise TypeError(f"{type(self).__name__}: give an Options value or keywords, not both")
        if options is not None and not isinstance(options, declared):
            raise TypeError(f"{type(self).__name__} takes {declared.__name__}, got {options!r}")
        if options is None:
            # keywords get the recipe's type checks: a clear error now, not a TypeError mid-run
            # (choices are left to the pass, whose message names the domain: "unknown mode")
            specs = option_specs(type(self))
            values = {
                key: check_value(type(self).name or type(self).__name__, specs[key], value)
                if key in specs and not _is_choice(specs[key].annotation)
                else value
                for key, value in values.items()
            }
        self.settings = options if options is not None else declared(**values)

    def __getattr__(self, name: str) -> Any:
        # declared options read as attributes: ``Cleanup(target_opset=13).target_opset``
        settings = self.__dict__.get("settings")
        if settings is not None and name in {f.name for f in dataclasses.fields(settings)}:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @abc.abstractmethod
    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        """Transforms ``model`` in place and says whether it changed and what was done."""

    def call(self, model: ir.Model) -> SlimPassResult:
        # Used as a plain onnx_ir pass (outside a Pipeline): no reference, no data.
        return self.apply(model, PassContext())

    @classmethod
    def options(cls) -> dict[str, OptionSpec]:
        """The pass's options (name -> type, default, help), from its ``Options`` declaration."""
        return option_specs(cls)

    def config(self) -> dict[str, Any]:
        """Current option values, for the report and recipes."""
        return option_values(self)


def _is_choice(annotation: Any) -> bool:
    """``Literal[...]`` or ``Literal[...] | None``."""
    if typing.get_origin(annotation) is typing.Literal:
        return True
    return any(typing.get_origin(arg) is typing.Literal for arg in typing.get_args(annotation))


def _fingerprint(model: ir.Model) -> tuple[Any, ...]:
    """Identity of the graph's structure (nodes, their wiring, initializers, I/O) without
    copying tensors: what a functional pass must leave unchanged in its input."""
    graph = model.graph
    nodes = tuple(
        (
            id(node),
            node.op_type,
            tuple(id(v) for v in node.inputs),
            tuple(id(v) for v in node.outputs),
            tuple(sorted(node.attributes)),
        )
        for node in ir.traversal.RecursiveGraphIterator(graph)
    )
    initializers = tuple((name, id(v.const_value)) for name, v in graph.initializers.items())
    return (
        nodes,
        initializers,
        tuple(id(v) for v in graph.inputs),
        tuple(id(v) for v in graph.outputs),
        tuple(sorted(model.opset_imports.items())),
    )


def run_pass(slim_pass: SlimPass, model: ir.Model, context: PassContext) -> SlimPassResult:
    """The one way the pipeline runs a pass: ``requires``, ``apply``, ``ensures``, and the pass's
    in-place promise (an in-place pass returns the same model object; a functional one leaves
    its input unchanged). A broken promise is a VerificationError naming the pass."""
    name = slim_pass.name or type(slim_pass).__name__
    try:
        slim_pass.requires(model)
    except SlimError:
        raise
    except Exception as error:
        raise VerificationError(f"pass '{name}': precondition failed: {error}") from error
    before = None if slim_pass.in_place else _fingerprint(model)
    result = slim_pass.apply(model, context)
    if not isinstance(result, ir.passes.PassResult):
        raise VerificationError(
            f"pass '{name}' returned {type(result).__name__}, not a SlimPassResult; "
            "this is a bug in the pass."
        )
    if slim_pass.in_place and result.model is not model:
        raise VerificationError(
            f"pass '{name}' is declared in place but returned a different model object; "
            "this is a bug in the pass."
        )
    if not slim_pass.in_place and (result.model is model or _fingerprint(model) != before):
        raise VerificationError(
            f"pass '{name}' is declared functional but changed its input model; "
            "this is a bug in the pass."
        )
    try:
        slim_pass.ensures(result.model)
    except SlimError:
        raise
    except Exception as error:
        raise VerificationError(f"pass '{name}': postcondition failed: {error}") from error
    if not isinstance(result, SlimPassResult):
        result = SlimPassResult(result.model, result.modified)
    return result
