"""Latency and accuracy guards: kernel profiles, ORT's optimized graph, per-layer sensitivity."""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim.model import INTEGER_OPS, ValueProbe
from onnxslim.runtime import create_session, session_options

__all__ = [
    "node_kernel_seconds",
    "run_outputs",
    "run_with_logits",
    "output_logits",
    "optimized_graph",
    "float_nodes_after_optimization",
    "layer_sensitivity",
]

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]


_LAYOUT_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")


def node_kernel_seconds(
    path: str | os.PathLike,
    feeds: Feeds,
    *,
    runs: int = 20,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
) -> dict[str, float]:
    """Median seconds per run spent in each node's kernel, from ORT's profiler, keyed by the node
    name in the model file (ORT's layout transformers append ``_token_N``; kernels it creates
    itself, like layout Transposes and ReorderOutput, keep their own names)."""
    options = session_options(intra_op_threads=threads, allow_spinning=False)
    with tempfile.TemporaryDirectory(prefix="onnxslim-profile-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = create_session(Path(path), providers, options)
        warmup = 2
        for _ in range(warmup + runs):
            session.run(None, dict(feeds))
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    # Kernel events of the warm-up runs are dropped: they end before the first timed run starts.
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    timed_from = run_starts[warmup] if len(run_starts) > warmup else 0
    durations: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if (
            event.get("cat") != "Node"
            or not name.endswith("_kernel_time")
            or event["ts"] < timed_from
        ):
            continue
        durations.setdefault(name, []).append(event["dur"] * 1e-6)
    # Medians per kernel: a thread wake-up in one run must not make a node look slow.
    seconds: dict[str, float] = {}
    for name, values in durations.items():
        node = _LAYOUT_SUFFIX.sub("", name[: -len("_kernel_time")])
        seconds[node] = seconds.get(node, 0.0) + statistics.median(values)
    return seconds


def run_outputs(
    path: str | os.PathLike,
    batches: Sequence[Feeds],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> list[dict[str, np.ndarray]]:
    session = create_session(Path(path), providers, session_options())
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, dict(b)))) for b in batches]


def output_logits(model: ir.Model) -> dict[str, str]:
    """Graph outputs made by a final Sigmoid/Softmax -> the logits tensor feeding it.

    A near-binary probability map has a low SQNR even when int8 barely moved the decision
    boundary; the logits measure the damage int8 did.
    """
    logits: dict[str, str] = {}
    for output in model.graph.outputs:
        producer = output.producer()
        if producer is not None and producer.op_type in ("Sigmoid", "Softmax", "LogSoftmax"):
            source = producer.inputs[0]
            if source is not None and source.producer() is not None:
                logits[output.name or ""] = source.name or ""
    return logits


def run_with_logits(
    path: str | os.PathLike,
    batches: Sequence[Feeds],
    logits: Mapping[str, str],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> list[dict[str, np.ndarray]]:
    """Outputs per batch, with each Sigmoid/Softmax output replaced by its logits (the
    dequantized logits in a QDQ model)."""
    model = ir.load(str(path))
    values = _seen_as(model, logits.values())
    seen_as = {output: values[source] for output, source in logits.items() if source in values}
    # the session ORT deploys (full optimizations: QDQ fused), not the probe's default
    probe = ValueProbe(
        model, list(seen_as.values()), providers=providers, options=session_options()
    )
    outputs = [o.name or "" for o in model.graph.outputs]  # graph outputs are always named
    fetch = [seen_as.get(name, name) for name in outputs]
    found = [probe.run(b, fetch) for b in batches]
    return [{name: got[f] for name, f in zip(outputs, fetch)} for got in found]


def optimized_graph(
    path: str | os.PathLike, workdir: Path, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> onnx.GraphProto:
    """The graph ORT actually runs (after its QDQ fusions), via optimized_model_filepath."""
    target = workdir / (Path(path).stem + ".ort-optimized.onnx")
    options = session_options(optimized_model_path=target, optimization_level="extended")
    create_session(Path(path), providers, options)
    return onnx.load(str(target), load_external_data=False).graph


def float_nodes_after_optimization(
    graph: onnx.GraphProto, node_names: Sequence[str]
) -> dict[str, str]:
    """For each node name: "float" if ORT still runs it as its float op, else the op it became."""
    by_name = {node.name: node.op_type for node in graph.node}
    verdict = {}
    for name in node_names:
        op = by_name.get(name)
        if op is None:
            verdict[name] = "fused or renamed"
        elif op in INTEGER_OPS:
            verdict[name] = op
        else:
            verdict[name] = "float"
    return verdict


def layer_sensitivity(
    float_model: ir.Model,
    quantized_path: str | os.PathLike,
    node_outputs: Mapping[str, str],
    batches: Sequence[Feeds],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-node SQNR loss (dB) and per-tensor SQNR (dB), in one pass with all layers quantized.

    ``node_outputs`` maps a node name to its output tensor (which keeps its name in the QDQ
    model). A node's loss is the SQNR of its inputs' worst tensor minus its output's SQNR:
    the damage the node itself adds, not what it inherits.
    """
    names = sorted(set(node_outputs.values()))
    quantized = ir.load(str(quantized_path))
    seen_as = _seen_as(quantized, names)
    reference_values = {v.name for node in float_model.graph for v in node.outputs}
    names = [n for n in names if n in seen_as and n in reference_values]
    # the sessions ORT deploys (full optimizations: QDQ fused), not the probe's default
    reference_probe = ValueProbe(float_model, names, providers=providers, options=session_options())
    candidate_names = [seen_as[n] for n in names]
    candidate_probe = ValueProbe(
        quantized, candidate_names, providers=providers, options=session_options()
    )
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    for batch in batches:
        reference = reference_probe.run(batch, names)
        found = candidate_probe.run(batch, candidate_names)
        candidate = {name: found[seen_as[name]] for name in names}
        for name in names:
            ref = reference[name].astype(np.float64)
            diff = ref - candidate[name].astype(np.float64)
            signal[name] += float(np.sum(ref * ref))
            noise[name] += float(np.sum(diff * diff))
    tensor_sqnr = {
        name: (
            float("inf")
            if noise[name] == 0
            else 10 * np.log10(max(signal[name], 1e-30) / noise[name])
        )
        for name in names
    }
    losses = {}
    for node_name, output_name in node_outputs.items():
        if output_name not in tensor_sqnr:
            continue
        named = next((n for n in float_model.graph if n.name == node_name), None)
        inherited = [
            tensor_sqnr[v.name]
            for v in (named.inputs if named else [])
            if v is not None and v.name in tensor_sqnr
        ]
        before = min(inherited) if inherited else float("inf")
        after = tensor_sqnr[output_name]
        losses[node_name] = (min(before, 100.0) - min(after, 100.0)) if np.isfinite(after) else 0.0
    return losses, tensor_sqnr


def _seen_as(model: ir.Model, names: Iterable[str]) -> dict[str, str]:
    """Each float tensor of ``names`` -> the value its consumers see in the QDQ ``model``: the
    DequantizeLinear output where there is one, else the tensor itself (absent: dropped).

    ORT even renames a Conv's output to its folded Relu's, so some names are gone.
    """
    values = {v.name for node in model.graph for v in node.outputs}
    seen_as = {}
    for name in names:
        dequantized = f"{name}_DequantizeLinear_Output"
        if dequantized in values:
            seen_as[name] = dequantized
        elif name in values:
            seen_as[name] = name
    return seen_as
