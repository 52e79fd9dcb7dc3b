"""Concrete shapes of every value: shape inference, then one ORT run with all values as outputs."""

# wave 2: onnxslim.model.observed_shapes (this module is the pass's own copy until then)

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)


def observe_shapes(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes of every value, from one ORT run with all intermediates as outputs."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in _all_values(model.graph):
        if value.name is not None and value.shape is not None and value.shape.is_static():
            shapes[value.name] = tuple(int(d) for d in value.shape.numpy())
    proto = ir.serde.serialize_model(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as error:  # noqa: BLE001 - inference is best effort, ORT below is authoritative
        logger.debug("shape inference failed before observation: %s", error)
    typed = {vi.name: vi for vi in list(proto.graph.value_info)}
    existing = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for name in node.output:
            if name and name not in existing and name in typed:
                proto.graph.output.append(typed[name])
                existing.add(name)
    for info in list(proto.graph.value_info) + list(proto.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes.setdefault(info.name, tuple(d.dim_value for d in dims))
    names, results = _run_all_outputs(model, proto, feeds)
    for name, array in zip(names, results):
        if isinstance(array, np.ndarray):  # sequence/map values (lists, dicts) have no shape
            shapes[name] = array.shape
    for name, array in feeds.items():
        shapes[name] = tuple(array.shape)
    return shapes


def _run_all_outputs(
    model: ir.Model, proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]
) -> tuple[list[str], list]:
    """One CPU run of ``proto``; nothing when ORT cannot run it (custom ops it lacks)."""
    # wave 2: onnxslim.runtime.create_session / onnxslim.model.probe_values (hand-built session)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    external_dir = next(
        (
            v.const_value.base_dir
            for v in model.graph.initializers.values()
            if isinstance(v.const_value, ir.ExternalTensor)
        ),
        None,
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            model_source: str | bytes
            if external_dir is not None and proto.ByteSize() < (1 << 30):
                # external weights (> 2 GB models) are read where they are, not copied
                options.add_session_config_entry(
                    "session.model_external_initializers_file_folder_path", str(external_dir)
                )
                model_source = proto.SerializeToString()
            else:
                model_source = str(Path(folder) / "observe.onnx")
                onnx.save(proto, model_source, save_as_external_data=proto.ByteSize() > (1 << 30))
            session = ort.InferenceSession(
                model_source, options, providers=["CPUExecutionProvider"]
            )
            names = [o.name for o in session.get_outputs()]
            return names, session.run(names, dict(feeds))
    except Exception as error:  # noqa: BLE001 - custom ops ORT lacks: fall back to inferred shapes
        logger.warning(
            "could not run the model to observe shapes (%s); using inferred shapes only", error
        )
        return [], []


def _all_values(graph: ir.Graph) -> Iterator[ir.Value]:
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from (v for v in node.outputs if v is not None)
