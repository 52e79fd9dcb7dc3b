"""The one value probe: expose values as graph outputs of a copy, build ONE ORT session, run feeds."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxslim.model._segments import (
    SEGMENT_BYTES,
    SEGMENT_THRESHOLD_BYTES,
    SegmentedRunner,
    can_segment,
    external_bytes,
    proto_graphs,
)

__all__ = ["ValueProbe", "probe_values", "expose_values"]

SUBGRAPH_REASON = "inside a subgraph (If/Loop/Scan body): only main-graph values can be outputs"
MISSING_REASON = "no value of that name in the graph"


def _main_values(graph: ir.Graph) -> dict[str, ir.Value]:
    values: dict[str, ir.Value] = {v.name: v for v in graph.initializers.values() if v.name}
    values.update({v.name: v for v in graph.inputs if v.name})
    for node in graph:
        for output in node.outputs:
            if output.name:
                values[output.name] = output
    return values


def _subgraph_names(graph: ir.Graph) -> set[str]:
    names: set[str] = set()
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.graph is not graph:
            names.update(v.name for v in node.outputs if v.name)
    return names


def expose_values(
    model: ir.Model,
    names: Sequence[str],
    *,
    input_suffix: str = "__probe",
    default_dtype: ir.DataType | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Adds values ``names`` of ``model`` (in place) to its graph outputs.

    Returns (requested name -> graph output name, skipped name -> reason). Graph inputs and
    initializers go through an Identity named ``<name><input_suffix>`` (ORT forbids an input
    listed as an output); untyped values stay untyped (ORT types them) unless ``default_dtype``.
    """
    graph = model.graph
    values = _main_values(graph)
    existing = {v.name for v in graph.outputs}
    exposed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    inner: set[str] | None = None
    for name in names:
        if name in exposed or name in skipped:
            continue
        if name in existing:
            exposed[name] = name
            continue
        if name not in values:
            inner = _subgraph_names(graph) if inner is None else inner
            skipped[name] = SUBGRAPH_REASON if name in inner else MISSING_REASON
            continue
        value = values[name]
        if value.is_graph_input() or value.is_initializer():
            identity = ir.node("Identity", [value], num_outputs=1)
            identity.outputs[0].name = f"{name}{input_suffix}"
            if value.dtype is not None:
                identity.outputs[0].dtype = value.dtype
            graph.append(identity)
            value = identity.outputs[0]
        if value.type is None and default_dtype is not None:
            value.dtype = default_dtype
        graph.outputs.append(value)
        exposed[name] = value.name or name
        existing.add(exposed[name])
    return exposed, skipped


def _keep_weights_mapped(model: ir.Model, options: ort.SessionOptions) -> None:
    """Memory-mapped weights stay mapped: ORT's pre-packing would copy every MatMul/Conv weight
    into its own buffers (the model's weight size again, in anonymous memory)."""
    if any(
        isinstance(value.const_value, ir.ExternalTensor)
        for graph in model.graphs()
        for value in graph.initializers.values()
    ):
        options.add_session_config_entry("session.disable_prepacking", "1")


class ValueProbe:
    """ONE ORT session over a copy of ``model`` whose values ``names`` are also graph outputs.

    Args:
        model: The model (left untouched) or its path (external weights are read in place).
        names: Values to return; None means every node output of the main graph. Names that
            are already graph outputs (a model prepared with extra nodes) are taken as they are.
            Values that cannot be exposed are listed in ``skipped`` with the reason.
        providers: ORT providers (short or full names); CPU when None.
        options: Session options; default ``session_options(allow_spinning=False,
            optimization_level="disable")`` (reading values, not timing).
        provider_options: ORT options per provider.
        external_data: Write the copy's in-memory weights beside it (None: decided by size,
            as ``save``). Weights already in external files are read in place (hard links),
            never copied; ORT memory-maps them and does not pre-pack them.
        segment_bytes: Run the model in consecutive segments holding at most this many bytes
            of weights, one ORT session at a time, so that no more than that is mapped at
            once. None: segments of 256 MiB when the external weights exceed 1 GiB (a graph
            with subgraphs always runs whole). ``session`` is then built on first use.
    """

    def __init__(
        self,
        model: ir.Model | str | os.PathLike,
        names: Sequence[str] | None = None,
        *,
        providers: str | Sequence[str] | None = None,
        options: ort.SessionOptions | None = None,
        provider_options: Sequence[dict] | None = None,
        external_data: bool | None = None,
        segment_bytes: int | None = None,
    ) -> None:
        from onnxslim._io import save
        from onnxslim.runtime import create_session, session_options

        if options is None:
            options = session_options(allow_spinning=False, optimization_level="disable")
        self._build = lambda path: create_session(path, providers, options, provider_options)
        self._runner: SegmentedRunner | None = None
        if not isinstance(model, ir.Model) and self._direct(Path(model), names):
            return
        copy = ir.load(str(model)) if not isinstance(model, ir.Model) else model.clone()
        self.graph_outputs: tuple[str, ...] = tuple(v.name or "" for v in copy.graph.outputs)
        if names is None:
            names = [v.name for node in copy.graph for v in node.outputs if v.name]
        self._fetch, self.skipped = expose_values(copy, names)
        self.names: tuple[str, ...] = tuple(self._fetch)
        _keep_weights_mapped(copy, options)
        if segment_bytes is None and external_bytes(copy) > SEGMENT_THRESHOLD_BYTES:
            segment_bytes = SEGMENT_BYTES
        self._session: ort.InferenceSession | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="onnxslim-probe-")
        self._path = Path(self._folder.name) / "probe.onnx"
        if segment_bytes is not None:  # every weight external: segment files stay small
            external_data = True
        save(copy, self._path, external_data=external_data, link_external_data=True)
        del copy  # ORT holds (or maps) its own weights from here on
        if segment_bytes is not None:
            runner = SegmentedRunner(
                self._path, segment_bytes, self._build, list(self._fetch.values())
            )
            if len(runner.segments) > 1 and can_segment(runner.proto.graph):
                self._runner = runner
        if self._runner is None:
            self._session = self._build(self._path)
            self._folder.cleanup()
            self.input_names = tuple(i.name for i in self._session.get_inputs())
            model_outputs = [o.name for o in self._session.get_outputs()]
        else:
            self.input_names = tuple(self._runner.inputs)
            model_outputs = self._runner.outputs
        self._finish(model_outputs)

    def _finish(self, model_outputs: Sequence[str]) -> None:
        exposed_outputs = set(self._fetch.values())
        for name in model_outputs:
            if name not in exposed_outputs:
                self._fetch.setdefault(name, name)
        # every name run() can return: the exposed values, then the model's own outputs
        self.outputs: tuple[str, ...] = tuple(self._fetch)

    def _direct(self, path: Path, names: Sequence[str] | None) -> bool:
        """The fast door for a file whose weights are all inside it and whose values ``names``
        are main-graph node outputs (or unknown, skipped as in :func:`expose_values`): the
        outputs added in the protobuf, the session built from its bytes, without an onnx-ir
        load, copy and save (about a second per run on PP-OCR det). False: use the copy."""
        import onnx

        if names is None:
            return False
        proto = onnx.load(str(path), load_external_data=False)
        graph = proto.graph
        if any(
            tensor.data_location == onnx.TensorProto.EXTERNAL
            for sub in proto_graphs(graph)
            for tensor in sub.initializer
        ):
            return False
        outputs = [o.name for o in graph.output]
        produced = {name for node in graph.node for name in node.output if name}
        if set(names) & ({i.name for i in graph.input} | {t.name for t in graph.initializer}):
            return False  # inputs and weights need an Identity: expose_values does that
        nested = any(sub is not graph for sub in proto_graphs(graph))
        if nested and not set(names) <= produced | set(outputs):
            return False  # a name may be a subgraph's value: expose_values says which
        typed = {info.name: info for info in graph.value_info}
        self._fetch, self.skipped = {}, {}
        for name in dict.fromkeys(names):
            if name in outputs or name in produced:
                self._fetch[name] = name
                if name not in outputs:
                    graph.output.append(typed.get(name, onnx.ValueInfoProto(name=name)))
            else:
                self.skipped[name] = MISSING_REASON
        self.names = tuple(self._fetch)
        self.graph_outputs = tuple(outputs)
        # nothing added (the model's own outputs): ORT reads the file itself, nothing is copied;
        # else the edited protobuf goes to ORT as bytes, the message dropped first (a value info
        # held keeps all of it alive): one copy of the weights in flight, not two
        added = len(graph.output) > len(outputs)
        source: bytes | Path = proto.SerializeToString() if added else path
        del proto, graph, typed
        self._session = self._build(source)
        del source
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self._finish([o.name for o in self._session.get_outputs()])
        return True

    def run(
        self, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Values ``names`` (default: the exposed ones) for one batch of ``feeds``."""
        wanted = list(self.names if names is None else names)
        if not wanted:  # ORT reads an empty fetch list as "every output"
            return {}
        inputs = {k: v for k, v in feeds.items() if k in self.input_names}
        fetch = [self._fetch[n] for n in wanted]
        if self._runner is not None:
            results = self._runner.run(inputs, fetch)
        else:
            results = self.session.run(fetch, inputs)
        return dict(zip(wanted, results, strict=True))

    @property
    def segments(self) -> int:
        """How many sessions one run goes through (1: the whole model at once)."""
        return 1 if self._runner is None else len(self._runner.segments)

    @property
    def session(self) -> ort.InferenceSession:
        """The ORT session over the whole copy (built here on first use when running in segments)."""
        if self._session is None:
            self._session = self._build(self._path)
        return self._session


def probe_values(
    model: ir.Model | str | os.PathLike,
    names: Sequence[str] | None,
    feeds: Mapping[str, np.ndarray],
    **options: Any,
) -> dict[str, Any]:
    """One run of a :class:`ValueProbe`: values ``names`` (None: all) for ``feeds``."""
    return ValueProbe(model, names, **options).run(feeds)
