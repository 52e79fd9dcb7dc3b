"""Static int8 quantization: streamed calibration, ORT QDQ emission, target profiles, guards."""

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
from onnxslim.passes.quantization._guards import (
    AccuracyBound,
    interleaved_latency,
    layer_sensitivity,
)
from onnxslim.passes.quantization._profiles import (
    CpuFeatures,
    TargetProfile,
    cpu_features,
    target_profile,
)
from onnxslim.passes.quantization._quantize_static import QuantizeStatic

__all__ = [
    "AccuracyBound",
    "Calibration",
    "CalibrationSettings",
    "Candidate",
    "CpuFeatures",
    "Evaluation",
    "QuantizeStatic",
    "Rejected",
    "TargetProfile",
    "calibrate",
    "cpu_features",
    "interleaved_latency",
    "layer_sensitivity",
    "quantizable_op_types",
    "run_calibration",
    "select_nodes",
    "target_profile",
]
