"""Quantization-aware distillation (QAT-KD) on the ONNX graph itself.

The chosen QDQ candidate becomes a fake-quant student: each int8 weight is a float weight
followed by QuantizeLinear -> DequantizeLinear with the candidate's scales (the torch bridge's
straight-through kernels), each int32 bias a float bias. ``Distill``'s own stages train it
against the float model in ORT, without labels (its loop, losses, teacher, best epoch and the
ORT parity check). The trained weights are then quantized with the same scales into the
candidate's own QDQ graph: the result is an ordinary QDQ model the guards judge like any other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

from onnxslim.passes.quantization._candidates import Candidate
from onnxslim.passes.quantization._equalize import GraphTensors

__all__ = ["FakeQuant", "fake_quant_model", "qat_candidate", "requantize"]

# torch and ORT's unfused Q/DQ agree but for float rounding at a few rounding ties
_PARITY_DB = 50.0
_LIMITS = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


@dataclasses.dataclass(frozen=True)
class FakeQuant:
    """One weight (or bias) made trainable: its float name in the student, the codes'
    initializer in the QDQ graph, and how to quantize it again."""

    float_name: str
    codes: str
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int
    dtype: np.dtype


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _broadcast(array: np.ndarray | None, ndim: int, axis: int) -> Any:
    if array is None:
        return 0.0
    if array.ndim == 0:
        return array.astype(np.float64)
    shape = [1] * ndim
    shape[axis % ndim] = array.size
    return array.astype(np.float64).reshape(shape)


def _dequantize(codes: np.ndarray, fake: FakeQuant) -> np.ndarray:
    zero = _broadcast(fake.zero_point, codes.ndim, fake.axis)
    return (
        (codes.astype(np.float64) - zero) * _broadcast(fake.scale, codes.ndim, fake.axis)
    ).astype(np.float32)


def fake_quant_model(
    qdq: onnx.ModelProto, float_proto: onnx.ModelProto
) -> tuple[onnx.ModelProto, list[FakeQuant]]:
    """The fake-quant student of ``qdq`` (a copy): int8 weights -> float weight, QuantizeLinear,
    DequantizeLinear; int32 biases -> float biases. Float weights start from ``float_proto``'s
    (ORT names the codes ``<weight>_quantized``), else from the dequantized codes."""
    student = onnx.ModelProto()
    student.CopyFrom(qdq)
    tensors = GraphTensors(student)
    floats = GraphTensors(float_proto)
    fakes: list[FakeQuant] = []
    for node in list(student.graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in tensors.initializers:
            continue
        codes = tensors.array(node.input[0])
        scale = tensors.array(node.input[1])
        if codes is None or scale is None:
            continue
        zero = tensors.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        fake = FakeQuant(
            f"{node.input[0]}_qat",
            node.input[0],
            scale,
            zero,
            _attribute(node, "axis", 1),
            codes.dtype,
        )
        original = floats.array(node.input[0].removesuffix("_quantized"))
        start = (
            original
            if original is not None and original.shape == codes.shape
            else _dequantize(codes, fake)
        )
        tensors.add(fake.float_name, start.astype(np.float32))
        if codes.dtype in _LIMITS:
            quantized = f"{node.input[0]}_qat_codes"
            quantize = helper.make_node(
                "QuantizeLinear", [fake.float_name, *node.input[1:]], [quantized], axis=fake.axis
            )
            student.graph.node.insert(list(student.graph.node).index(node), quantize)
            node.input[0] = quantized
        else:  # int32 bias: trained in float (its step, s_x * s_w, is far below the noise)
            for user in tensors.consumers.get(node.output[0], []):
                user.input[:] = [fake.float_name if i == node.output[0] else i for i in user.input]
            student.graph.node.remove(node)
        fakes.append(fake)
    kept = {fake.codes for fake in fakes}
    remaining = [t for t in student.graph.initializer if t.name not in kept]
    del student.graph.initializer[:]
    student.graph.initializer.extend(remaining)
    return student, fakes


def requantize(qdq: onnx.ModelProto, trained: Any, fakes: list[FakeQuant]) -> onnx.ModelProto:
    """A copy of ``qdq`` whose codes are the trained float weights (``trained``: name ->
    array) quantized with their scales (round half to even, as QuantizeLinear)."""
    result = onnx.ModelProto()
    result.CopyFrom(qdq)
    tensors = GraphTensors(result)
    for fake in fakes:
        weight = np.asarray(trained[fake.float_name], dtype=np.float64)
        scale = _broadcast(fake.scale, weight.ndim, fake.axis)
        zero = _broadcast(fake.zero_point, weight.ndim, fake.axis)
        low, high = _LIMITS.get(fake.dtype, (np.iinfo(np.int32).min, np.iinfo(np.int32).max))
        codes = np.clip(np.rint(weight / scale) + zero, low, high).astype(fake.dtype)
        tensors.write(fake.codes, codes)
    return result


def _train(quantize: Any, run: Any, reader: Any, student_model: ir.Model) -> Any:
    """Distill's stages on the fake-quant student, the float model in ORT as the teacher;
    scales and zero points stay as calibrated (only weights and biases train)."""
    from onnxslim.passes.distillation import Distill, _stages

    options = quantize.settings
    distill = Distill(
        data=reader,
        teacher=str(run.input_path),
        epochs=options.qat_epochs,
        lr=options.qat_lr,
        progress=False,
        # fidelity to the float outputs is the bound: match them, not only their softmax
        output_losses={v.name: "mse" for v in student_model.graph.outputs},
    )
    drun = _stages.DistillRun.open(distill, student_model, run.context)
    _stages.build_student(drun)
    for node in student_model.graph:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for value in node.inputs[1:]:
                if value is not None and value.name in drun.student.parameter_names():
                    drun.student.onnx_tensor(value.name).requires_grad_(False)
    _stages.build_teacher(drun)
    _stages.open_data(drun)
    _stages.build_loss(drun)
    _stages.train_student(drun)
    _stages.write_back(drun)
    drun.parity = _parity(drun)
    return drun


def _parity(drun: Any) -> Any:
    """The torch student against ORT on the written fake-quant model, unoptimized: ORT's fused
    integer kernels round the requantized outputs their own way (one step off here and there),
    while its Q/DQ ops alone compute what the straight-through kernels do."""
    import torch

    from onnxslim import VerificationError, temporary_model_file
    from onnxslim.fidelity import compare_outputs
    from onnxslim.runtime import create_session, session_options

    names = drun.output_names
    with temporary_model_file(drun.model) as path:
        session = create_session(path, options=session_options(optimization_level="disable"))
        ort_outputs = [
            dict(zip(names, session.run(names, f), strict=True)) for f in drun.validation
        ]
    with torch.no_grad():
        torch_outputs = [
            {n: t.numpy() for n, t in drun.student(**f).items() if n in names}
            for f in drun.validation
        ]
    parity = compare_outputs(torch_outputs, ort_outputs)
    if not parity.sqnr_db >= _PARITY_DB:
        raise VerificationError(
            f"QAT-KD: the fake-quant student differs from ORT on its own graph (SQNR "
            f"{parity.sqnr_db:.1f} dB < {_PARITY_DB:g} dB); this is a bug in the torch Q/DQ "
            "kernels, please report it with the model."
        )
    return parity


def qat_candidate(
    quantize: Any, run: Any, reader: Any, base: Candidate, float_proto: onnx.ModelProto
) -> tuple[Candidate, dict[str, Any]]:
    """``base`` after QAT-KD, evaluated by the run's accuracy guard; and the report's facts."""
    import torch  # noqa: F401  (an ImportError here tells the caller PyTorch is missing)

    qdq = onnx.load(str(base.path))
    student, fakes = fake_quant_model(qdq, float_proto)
    # shapes for the torch kernels (a Conv weight that is a DequantizeLinear output)
    student = onnx.shape_inference.infer_shapes(student)
    drun = _train(quantize, run, reader, ir.from_proto(student))
    trained = {
        name: value.const_value.numpy()
        for name, value in drun.model.graph.initializers.items()
        if value.const_value is not None
    }
    path = Path(base.path).with_name(Path(base.path).stem + "-qat.onnx")
    onnx.save(requantize(qdq, trained, fakes), str(path))
    candidate = base.replace(
        label=f"{base.label}, QAT-KD", path=path, evaluation=run.evaluator.evaluate(path)
    )
    result = drun.result
    facts = {
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "weights_trained": len(fakes),
        "student_sqnr_db_before": _finite(result.fidelity_before.sqnr_db),
        "student_sqnr_db_after": _finite(result.history[result.best_epoch - 1].fidelity["sqnr_db"])
        if result.best_epoch
        else None,
        "student_vs_ort_sqnr_db": _finite(drun.parity.sqnr_db),
    }
    return candidate, facts


def _finite(value: float | None) -> float | None:
    """Rounded dB; inf (identical outputs) as it is: the pipeline's report encodes it once."""
    return None if value is None or np.isnan(value) else round(float(value), 2)
