"""Static int8 quantization (streamed calibration, ORT QDQ emission, target profiles, guards) and
int4 weight-only MatMuls."""

from onnxslim.passes.quantization._accuracy_guard import layer_sensitivity, run_outputs
from onnxslim.passes.quantization._calibrate import (
    Calibration,
    CalibrationSettings,
    calibrate,
    run_calibration,
)
from onnxslim.passes.quantization._candidates import (
    Candidate,
    Evaluation,
    Rejected,
    quantizable_op_types,
    select_nodes,
)
from onnxslim.passes.quantization._int4 import Int4Options, QuantizeWeightsInt4
from onnxslim.passes.quantization._latency_guard import interleaved_latency
from onnxslim.passes.quantization._options import QuantizeOptions
from onnxslim.passes.quantization._profiles import TargetProfile, target_profile
from onnxslim.passes.quantization._quantize_static import QuantizeStatic

__all__ = [
    "Calibration",
    "CalibrationSettings",
    "Candidate",
    "Evaluation",
    "Int4Options",
    "QuantizeOptions",
    "QuantizeStatic",
    "QuantizeWeightsInt4",
    "Rejected",
    "TargetProfile",
    "calibrate",
    "interleaved_latency",
    "layer_sensitivity",
    "quantizable_op_types",
    "run_calibration",
    "run_outputs",
    "select_nodes",
    "target_profile",
]
