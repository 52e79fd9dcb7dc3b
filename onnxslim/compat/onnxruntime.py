"""ONNX Runtime's private or unstable names, in one place: symbolic shape inference's steps, the
quantizer we hand our own ranges to, and the 4-bit weight-only MatMul quantizer.

ORT's public ``quantize_static`` calibrates itself; we give our ranges to its ``QDQQuantizer``
(not exported from ``onnxruntime.quantization``'s ``__init__``), so its constructor is called here,
with keywords, and nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime.quantization
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
from onnxruntime.quantization.quant_utils import add_infer_metadata, load_model_with_shape_infer

from onnxslim._errors import RecipeError
from onnxslim.compat.onnxruntime_qdq import IndexedQDQQuantizer, WeightCache, weight_digest

__all__ = [
    "ORT_QUANTIZATION_DIR",
    "QDQQuantizer",
    "INT4_ALGORITHMS",
    "WeightCache",
    "weight_digest",
    "load_model_with_shape_infer",
    "matmul_nbits_quantized",
    "qdq_quantizer",
    "quant_type",
    "shape_inferred_proto",
    "symbolic_shape_inference",
    "tensors_range",
]


def symbolic_shape_inference(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """ORT's symbolic shape inference, keeping partial results; None below opset 7.

    Its public ``infer_shapes`` raises on an incomplete result and first writes
    ``sym_shape_infer_temp.onnx`` into the working directory; these are the same steps without that.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    opset = get_opset(proto)
    if not opset or opset < 7:
        return None
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)
    inference._preprocess(proto)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_


# ORT's quantizer logs through the root logger from the modules in this folder (see _emit.py).
ORT_QUANTIZATION_DIR = Path(onnxruntime.quantization.__file__).resolve().parent


def quant_type(name: str) -> QuantType:
    """ "uint8"/"int8" -> ORT's QuantType."""
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if name not in types:
        raise RecipeError(f"quantization type '{name}' is not supported; use 'uint8' or 'int8'.")
    return types[name]


def tensors_range(ranges: Mapping[str, tuple[float, float]]) -> TensorsData:
    """Our calibrated (low, high) ranges in the form ORT's quantizer takes."""
    return TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.float32(low), highest=np.float32(high))
            for name, (low, high) in ranges.items()
        },
    )


def qdq_quantizer(
    model: onnx.ModelProto,
    *,
    per_channel: bool,
    reduce_range: bool,
    weight_type: str,
    activation_type: str,
    ranges: Mapping[str, tuple[float, float]],
    nodes_to_exclude: Sequence[str],
    op_types_to_quantize: Sequence[str],
    extra_options: Mapping[str, Any],
    weight_cache: WeightCache | None = None,
    indexed: bool = True,
) -> QDQQuantizer:
    """ORT's QDQQuantizer built with keyword arguments (its constructor is positional-unstable).

    ``indexed`` (default): its subclass with indexed lookups and, given ``weight_cache``, the
    weights' scales and int8 copies reused across calls (onnxruntime_qdq.py); same output.
    """
    options: dict[str, Any] = {"weight_cache": weight_cache} if indexed else {}
    return (IndexedQDQQuantizer if indexed else QDQQuantizer)(
        **options,
        model=model,
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_qType=quant_type(weight_type),
        activation_qType=quant_type(activation_type),
        tensors_range=tensors_range(ranges),
        nodes_to_quantize=[],
        nodes_to_exclude=list(nodes_to_exclude),
        op_types_to_quantize=list(op_types_to_quantize),
        extra_options=dict(extra_options),
    )


def shape_inferred_proto(path: Path, *, with_weights: bool = True) -> onnx.ModelProto:
    """ORT's own load with onnx shape inference and its "already inferred" mark; without weights,
    external weights stay on disk (the same steps, with ``load_external_data=False``)."""
    if with_weights:
        return load_model_with_shape_infer(path)
    inferred = path.with_name(f"{path.stem}-inferred{path.suffix}")
    onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
    proto = onnx.load(str(inferred), load_external_data=False)
    add_infer_metadata(proto)
    inferred.unlink()
    return proto


INT4_ALGORITHMS = ("rtn", "hqq", "gptq")


def _matmul_nbits_module() -> Any:
    """``onnxruntime.quantization.matmul_nbits_quantizer``, imported without its side effect: it
    calls ``logging.basicConfig(level=INFO)`` at import, which would print every later record."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return matmul_nbits_quantizer


def matmul_nbits_quantized(
    model: onnx.ModelProto,
    *,
    algorithm: str,
    block_size: int,
    symmetric: bool,
    accuracy_level: int | None,
    nodes_to_exclude: Sequence[str],
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    bits: int = 4,
) -> onnx.ModelProto:
    """``model`` with its constant-weight MatMuls as 4-bit (or ``bits``-bit, rtn) ``com.microsoft.MatMulNBits``.

    ``rtn`` is ORT's native blockwise round-to-nearest (C++; symmetric or not, ``accuracy_level``
    kept); ``hqq`` is half-quadratic (asymmetric only, torch); ``gptq`` needs ``calibration``
    feeds (ORT's Neural Compressor port). ``model`` is consumed: ORT edits it.
    """
    module = _matmul_nbits_module()
    if algorithm == "rtn":
        config = module.DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=symmetric, accuracy_level=accuracy_level, bits=bits
        )
    elif algorithm == "hqq":
        config = module.HQQWeightOnlyQuantConfig(block_size=block_size, bits=4)
    elif algorithm == "gptq":
        if not calibration:
            raise RecipeError("int4 'gptq' needs calibration data; give some or use 'rtn'.")
        # ORT deep-copies the reader and iterates it: a list of feeds is such a reader
        config = module.GPTQWeightOnlyQuantConfig(
            calibration_data_reader=[dict(feeds) for feeds in calibration],  # type: ignore[arg-type]
            block_size=block_size,
        )
    else:
        raise RecipeError(
            f"int4 algorithm '{algorithm}' is not supported; use one of {', '.join(INT4_ALGORITHMS)}."
        )
    quantizer = module.MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        nodes_to_exclude=list(nodes_to_exclude),
        algo_config=config,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # gptq prints a progress bar to stdout
        quantizer.process()
    result = quantizer.model.model  # ONNXModel for rtn/hqq; a ModelProto-holding wrapper for gptq
    if not any(opset.domain == "com.microsoft" for opset in result.opset_import):
        # the Neural Compressor port (gptq) writes MatMulNBits without declaring its domain
        result.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return result
