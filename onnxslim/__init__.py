"""onnxslim: a framework-agnostic ONNX graph optimizer (cleanup, pruning, distillation, int8)."""

# first, before anything imports onnx_ir: onnx-ir's sympy import waits for its first use
import onnxslim.compat.onnx_ir  # noqa: F401
from onnxslim._errors import (
    InputDataError,
    ModelLoadError,
    NothingChangedError,
    ProviderError,
    RecipeError,
    SlimError,
    UnsupportedModelError,
    VerificationError,
)
from onnxslim._io import load, model_file_size, save, temporary_model_file
from onnxslim._pass import PassContext, SlimPass, SlimPassResult
from onnxslim._pipeline import Bounds, Pipeline, Report, Result, StageRecord
from onnxslim._recipe import Recipe, load_recipe, parse_recipe
from onnxslim.fidelity import Fidelity, FidelityBounds, compare_outputs, sqnr_db
from onnxslim.inputs import InputSpec, input_specs, random_inputs, resolve_shape
from onnxslim.model import ModelStats, model_stats
from onnxslim.runtime import create_session, resolve_providers, session_options

__version__ = "0.1.0"

__all__ = [
    "Bounds",
    "ModelStats",
    "Pipeline",
    "Recipe",
    "Report",
    "Result",
    "StageRecord",
    "load_recipe",
    "model_stats",
    "parse_recipe",
    "Fidelity",
    "FidelityBounds",
    "InputDataError",
    "InputSpec",
    "ModelLoadError",
    "PassContext",
    "ProviderError",
    "RecipeError",
    "SlimError",
    "SlimPass",
    "SlimPassResult",
    "NothingChangedError",
    "UnsupportedModelError",
    "VerificationError",
    "compare_outputs",
    "create_session",
    "input_specs",
    "load",
    "model_file_size",
    "random_inputs",
    "resolve_providers",
    "resolve_shape",
    "save",
    "session_options",
    "sqnr_db",
    "temporary_model_file",
]
