"""Moved to :mod:`onnxslim.inputs`."""

# shim: removed in wave 2
from onnxslim.inputs._specs import DimSizes, InputSpec, input_specs, random_inputs, resolve_shape

__all__ = ["InputSpec", "input_specs", "resolve_shape", "random_inputs", "DimSizes"]
