"""Emit a candidate: static QDQ with our ranges, or dynamic MatMul/Gemm quantization, by ORT."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import onnx_ir.passes.common

from onnxslim import model_file_size
from onnxslim.compat.onnxruntime import (
    ORT_QUANTIZATION_DIR,
    WeightCache,
    qdq_quantizer,
    quant_type,
    shape_inferred_proto,
    weight_digest,
)
from onnxslim.model import (
    SEGMENT_BYTES,
    SEGMENT_THRESHOLD_BYTES,
    can_segment,
    proto_graphs,
    proto_weight_bytes,
)
from onnxslim.passes.quantization._emit_segments import emit_in_segments
from onnxslim.passes.quantization._profiles import TargetProfile

__all__ = ["Emitter", "emit_dynamic", "emit_qdq", "qdq_settings", "quiet_ort_quantizer"]

Ranges = Mapping[str, tuple[float, float]]


class _DropOrtQuantizerChatter(logging.Filter):
    """Drops records below ERROR that ORT's quantizer modules log (they use the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name != "root":
            return True
        return not Path(record.pathname).resolve().is_relative_to(ORT_QUANTIZATION_DIR)


@contextlib.contextmanager
def quiet_ort_quantizer() -> Iterator[None]:
    """Silences ORT's quantizer (a warning per non-initializer bias) and nothing else.

    ORT's quantizer calls ``logging.warning(...)`` on the root logger: there is no logger of its
    own to quieten, so a filter on the root logger drops only records from its modules; the root
    logger's level, and every other record, are untouched.
    """
    root = logging.getLogger()
    quiet = _DropOrtQuantizerChatter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _has_external_data(path: Path) -> bool:
    """Whether the model's weights are in side files (> 1 GiB, or linked external weights)."""
    return model_file_size(path) > path.stat().st_size


def read_external_weights(proto: onnx.ModelProto, folder: Path) -> None:
    """Reads ``proto``'s external weights (beside ``folder``) into it, in place. By hand: onnx
    refuses hard-linked data files, and our scratch copies hard-link the user's weights."""
    for graph in proto_graphs(proto.graph):
        for tensor in graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {entry.key: entry.value for entry in tensor.external_data}
            with open(folder / info["location"], "rb") as data:
                data.seek(int(info.get("offset", 0)))
                tensor.raw_data = (
                    data.read(int(info["length"])) if "length" in info else data.read()
                )
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT


def _linked_weights(proto: onnx.ModelProto, folder: Path) -> bool:
    """Whether an external data file of ``proto`` is hard-linked (onnx then refuses to read it)."""
    locations = {
        entry.value
        for graph in proto_graphs(proto.graph)
        for tensor in graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return any((folder / location).stat().st_nlink > 1 for location in locations)


def qdq_settings(
    profile: TargetProfile,
    ranges: Mapping[str, tuple[float, float]],
    excluded: Sequence[str],
    op_types: Sequence[str],
) -> dict[str, Any]:
    """The keywords of ORT's QDQ quantizer for ``profile``, these ranges, exclusions and ops."""
    return {
        "per_channel": profile.per_channel,
        "reduce_range": profile.reduce_range,
        "weight_type": profile.weight_type,
        "activation_type": profile.activation_type,
        "ranges": ranges,
        "nodes_to_exclude": excluded,
        "op_types_to_quantize": op_types,
        "extra_options": {
            "ActivationSymmetric": profile.activation_symmetric,
            "WeightSymmetric": profile.weight_symmetric,
        },
    }


def emit_qdq(
    prepared: onnx.ModelProto,
    output: Path,
    ranges: Ranges,
    op_types: Sequence[str],
    excluded: Sequence[str],
    profile: TargetProfile,
    *,
    external_data: bool,
    weight_cache: WeightCache | None = None,
) -> Path:
    """Writes the QDQ model ORT's quantizer makes of ``prepared`` (consumed: ORT edits it);
    ``weight_cache`` reuses the weights' scales and int8 copies of earlier calls."""
    quantizer = qdq_quantizer(
        prepared,
        **qdq_settings(profile, ranges, excluded, op_types),
        weight_cache=weight_cache,
    )
    with quiet_ort_quantizer():
        quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(output), external_data)
    return output


def emit_dynamic(
    prepared_path: Path, output: Path, excluded: Sequence[str], profile: TargetProfile
) -> Path:
    """Writes ORT's dynamic quantization of the MatMul/Gemm weights of the model at the path."""
    from onnxruntime.quantization import quantize_dynamic

    model_input: Path | onnx.ModelProto = prepared_path
    skeleton = onnx.load(str(prepared_path), load_external_data=False)
    if _linked_weights(skeleton, prepared_path.parent):
        read_external_weights(skeleton, prepared_path.parent)
        model_input = skeleton
    del skeleton  # ORT loads the file itself otherwise: the inline weights are not held twice
    with quiet_ort_quantizer():
        quantize_dynamic(
            model_input,
            output,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=False,
            reduce_range=profile.reduce_range,
            weight_type=quant_type(profile.weight_type),
            nodes_to_exclude=list(excluded),
            use_external_data_format=_has_external_data(prepared_path),
            # MatMul/Gemm inside If/Loop/Scan bodies too; the guards judge the whole model
            extra_options={"EnableSubgraph": True},
        )
    _sort_after_subgraph_quantization(output)
    return output


def _sort_after_subgraph_quantization(path: Path) -> None:
    """ORT appends the DynamicQuantizeLinear of an outer value a body reads after the If/Loop that
    reads it (ORT runs that; the checker does not): put such a file in topological order."""
    proto = onnx.load(str(path), load_external_data=False)
    if not any(a.HasField("g") or a.graphs for n in proto.graph.node for a in n.attribute):
        return
    model = ir.from_proto(proto)
    if ir.passes.common.TopologicalSortPass()(model).modified:
        onnx.save(ir.to_proto(model), str(path))


class Emitter:
    """Emits numbered candidate files from one prepared model; ORT's shape inference runs once."""

    def __init__(
        self,
        prepared_path: Path,
        workdir: Path,
        profile: TargetProfile,
        ranges: Ranges,
        segment_bytes: int | None = None,
    ) -> None:
        """``segment_bytes``: emit node ranges of at most that many weight bytes one at a time
        (None: 256 MiB ranges for models with more than 1 GiB of weights, else whole)."""
        self.segment_bytes = segment_bytes
        self.prepared_path = prepared_path
        self.workdir = workdir
        self.profile = profile
        self.ranges = ranges
        self._numbers = itertools.count()
        self._inferred: onnx.ModelProto | None = None
        self._segment_budget: tuple[int | None, bool] | None = None
        self._external = _has_external_data(prepared_path)  # decided once: the file stays
        self._digests: dict[str, bytes] = {}  # weight name -> digest (the file's bytes, once)
        # scales and int8 copies of the weights, shared by this model's candidates (the int8
        # copies only when not segmented: a segmented model's weights are not held at once)
        self.weight_cache = WeightCache()
        self._segment_cache = WeightCache(quantized_weights=False)

    def emit(
        self,
        label: str,
        op_types: Sequence[str] | None,
        excluded: Sequence[str],
        ranges: Ranges | None = None,
    ) -> Path:
        """The candidate file: op types None means dynamic MatMul/Gemm quantization."""
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower())
        path = self.workdir / f"candidate-{next(self._numbers)}-{slug}.onnx"
        if op_types is None:
            return emit_dynamic(self.prepared_path, path, excluded, self.profile)
        ranges = ranges or self.ranges

        skeleton = self._skeleton()
        budget, segmented = self._segmenting(skeleton)
        cache = self._segment_cache if segmented else self.weight_cache

        def quantize(model: onnx.ModelProto, output: Path, external_data: bool = True) -> None:
            emit_qdq(
                model,
                output,
                ranges,
                op_types,
                excluded,
                self.profile,
                external_data=external_data,
                weight_cache=cache,
            )

        if budget is not None and segmented:
            # one node range at a time: only its float weights are ever in memory
            def load(part: onnx.ModelProto) -> None:
                read_external_weights(part, self.prepared_path.parent)

            return emit_in_segments(skeleton, path, budget, quantize, load)
        quantize(self._fresh_inferred_copy(), path, self._external)
        return path

    def release(self) -> None:
        """Drops what the emitter holds for later candidates (the weight caches, the shape-
        inferred skeleton); it can still emit, computing them again."""
        self.weight_cache = WeightCache()
        self._segment_cache = WeightCache(quantized_weights=False)
        self._inferred = None
        self._digests.clear()

    def _segmenting(self, skeleton: onnx.ModelProto) -> tuple[int | None, bool]:
        """(node-range budget in weight bytes, whether the graph is emitted in segments)."""
        if self._segment_budget is None:
            budget = self.segment_bytes
            if budget is None and proto_weight_bytes(skeleton.graph) > SEGMENT_THRESHOLD_BYTES:
                budget = SEGMENT_BYTES
            self._segment_budget = (budget, budget is not None and can_segment(skeleton.graph))
        return self._segment_budget

    def _skeleton(self) -> onnx.ModelProto:
        if self._inferred is None:
            self._inferred = shape_inferred_proto(self.prepared_path, with_weights=False)
        return self._inferred

    def _fresh_inferred_copy(self) -> onnx.ModelProto:
        # One file -> shape inference -> proto per pass instead of one per candidate, kept
        # without its external weights; ORT's quantizer edits the proto it gets, so each
        # candidate gets a copy with the weights read from disk: one float copy in memory.
        copy = onnx.ModelProto()
        copy.CopyFrom(self._skeleton())
        read_external_weights(copy, self.prepared_path.parent)
        # the same bytes each time: the weight cache's digests are computed on the first copy
        for tensor in copy.graph.initializer:
            digest = self._digests.get(tensor.name)
            if digest is None:
                digest = self._digests[tensor.name] = weight_digest(tensor)
            self.weight_cache.remember(tensor, digest)
        return copy
