"""Static int8 quantization: streamed calibration, ORT QDQ emission, target profiles, guards."""

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
from onnxslim.passes.quantization._quantize_static import (
    QuantizeStatic,
    quantizable_op_types,
    select_nodes,
)

__all__ = [
    "AccuracyBound",
    "CpuFeatures",
    "QuantizeStatic",
    "TargetProfile",
    "cpu_features",
    "interleaved_latency",
    "layer_sensitivity",
    "quantizable_op_types",
    "select_nodes",
    "target_profile",
]
