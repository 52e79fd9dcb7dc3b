"""Prepare a model for ORT's quantizer: weights as initializers, opset >= 13, inferred shapes."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxslim import UnsupportedModelError, load, model_file_size, save
from onnxslim.model import onnx_opset
from onnxslim.passes.quantization._fusion import fuse_for_quantization

__all__ = ["MIN_OPSET", "Prepared", "prepare"]

logger = logging.getLogger(__name__)

MIN_OPSET = 13  # per-channel DequantizeLinear (axis attribute) needs opset 13


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The prepared copy: on disk for ORT, as the proto that file holds, and loaded back as IR."""

    path: Path
    proto: onnx.ModelProto
    model: ir.Model
    fusions: dict = dataclasses.field(default_factory=dict)  # _fusion.FusionReport.to_dict()


def prepare(
    model: ir.Model, workdir: Path, *, fuse: bool = False, samples: Sequence[Any] | None = None
) -> Prepared:
    """A copy with Constant nodes as initializers (ORT quantizes only initializer weights and
    biases), opset >= 13, and inferred shapes; saved as ``workdir/prepared.onnx``. ``model`` is
    not modified. ``samples``: feeds the fusions' exactness check runs on (the pipeline's)."""
    prepared = model.clone()  # weights shared: the edits below replace, never mutate, tensors
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(prepared)
    # Exact folding (e.g. Identity of an initializer feeding a Conv bias), so ORT sees the
    # weights and biases as initializers it can quantize. Imported here: importing the pass
    # package must not load onnxscript (16 MiB).
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(prepared)
    common_passes.RemoveUnusedNodesPass()(prepared)
    # the opset conversion and shape inference below type sequence values as tensors (ORT
    # then refuses the model): keep their types
    sequence_types = {
        value.name: value.type
        for node in prepared.graph
        for value in node.outputs
        if value.type is not None and not isinstance(value.type, ir.TensorType)
    }
    prepared = _upgrade_opset(prepared)
    # exact fusions before QDQ placement, so QDQ wraps the fused ops (_fusion.py)
    prepared, fusions = fuse_for_quantization(prepared, fuse=fuse, samples=samples)
    # onnx-ir's pass hands onnx a copy without the weights (memory: no model-sized copies);
    # shape inference is an aid, ORT's quantizer copes without it (the pass logs failures).
    common_passes.ShapeInferencePass(strict_mode=False)(prepared)
    for node in prepared.graph:
        for value in node.outputs:
            if value.name in sequence_types:
                value.type = sequence_types[value.name]
    proto = ir.to_proto(prepared)
    path = workdir / "prepared.onnx"
    # the file is exactly ``proto`` (the IR copy may carry stale value types, e.g. sequences)
    saved = ir.from_proto(proto)
    base_dir = _external_base_dir(model)
    if base_dir is not None:  # a copy from a proto lost where the external weights live
        ir.external_data.set_base_dir(saved.graph, base_dir)
    # weights > 1 GiB go beside it (no 2 GB proto limit); external ones are linked, not copied
    save(saved, path, link_external_data=True)
    if model_file_size(path) == path.stat().st_size:
        # every weight is inside the file: ``saved`` shares them with ``proto`` (no third copy)
        return Prepared(path, proto, saved, fusions.to_dict())
    # loaded back, so external weights resolve beside the file (the pass's scratch folder)
    return Prepared(path, proto, load(path, check=False), fusions.to_dict())


def _upgrade_opset(prepared: ir.Model) -> ir.Model:
    """``prepared`` at opset >= 13 (a new model when converted)."""
    opset = onnx_opset(prepared)
    if opset is None or opset >= MIN_OPSET:
        return prepared
    from onnx import version_converter

    try:
        proto = version_converter.convert_version(ir.to_proto(prepared), MIN_OPSET)
    except Exception as error:
        raise UnsupportedModelError(
            f"the model's opset {opset} could not be upgraded to {MIN_OPSET} for per-channel "
            f"quantization ({type(error).__name__}: {error}); upgrade it with the cleanup pass first."
        ) from error
    logger.info("upgraded opset %d -> %d for QDQ per-channel", opset, MIN_OPSET)
    return ir.from_proto(proto)


def _external_base_dir(model: ir.Model) -> str | os.PathLike | None:
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            return value.const_value.base_dir
    return None
