"""The pass contract: an ``onnx_ir`` in-place pass with a CLI name, typed options and a summary."""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

__all__ = ["PassContext", "SlimPass", "SlimPassResult"]


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
        data: The user's data reader for verification/calibration, if any.
        sizes: Sizes for symbolic dims (dim name or input name -> size/shape).
        providers: ORT execution providers the model is meant for.
        workdir: A scratch folder that lives as long as the pipeline run.
    """

    reference_path: Path | None = None
    sample_inputs: Sequence[Mapping[str, np.ndarray]] = ()
    data: Any = None
    sizes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    providers: Sequence[str] = ("CPUExecutionProvider",)
    workdir: Path | None = None


class SlimPass(ir.passes.InPlacePass, abc.ABC):
    """Base of onnxslim's public passes.

    Subclasses set ``name`` (stable CLI/recipe name), ``description`` (one line), ``exact``
    (outputs must match the input within ``atol``) and implement :meth:`apply`. Options are the
    keyword arguments of ``__init__``, with type hints; the registry validates recipes against them.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4

    @abc.abstractmethod
    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        """Transforms ``model`` in place and says whether it changed and what was done."""

    def call(self, model: ir.Model) -> SlimPassResult:
        # Used as a plain onnx_ir pass (outside a Pipeline): no reference, no data.
        return self.apply(model, PassContext())

    @classmethod
    def options(cls) -> dict[str, inspect.Parameter]:
        """The pass's keyword options (name -> parameter with annotation and default)."""
        signature = inspect.signature(cls.__init__)
        return {
            name: parameter
            for name, parameter in signature.parameters.items()
            if name != "self"
            and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        }

    def config(self) -> dict[str, Any]:
        """Current option values (attributes named like the options), for the report."""
        values = {}
        for option in self.options():
            if hasattr(self, option):
                value = getattr(self, option)
                if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)):
                    values[option] = value
                else:
                    values[option] = type(value).__name__
        return values
