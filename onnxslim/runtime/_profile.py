"""Per-node kernel time from ONNX Runtime's profiler: where a model's latency goes."""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxslim.runtime._session import create_session, session_options

__all__ = ["attribute_kernels", "node_kernel_seconds"]

_LAYOUT_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")


def node_kernel_seconds(
    model: ir.Model | str | os.PathLike,
    feeds: Mapping[str, np.ndarray],
    *,
    runs: int = 20,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
) -> dict[str, float]:
    """Median seconds per run spent in each node's kernel, from ORT's profiler, keyed by the node
    name in the model (ORT's layout transformers append ``_token_N``; an NCHWc convolution is
    named after the value it writes plus ``_nchwc``, which is stripped, leaving that value's
    name; kernels ORT creates itself, like layout Transposes and ReorderOutput, keep their own
    names)."""
    options = session_options(intra_op_threads=threads, allow_spinning=False)
    with tempfile.TemporaryDirectory(prefix="onnxslim-profile-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = create_session(model, providers, options)
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


# how far a fused kernel named after an activation's output is followed back to its Conv
_FUSED_DEPTH = 3
_FUSED_INTO = ("Conv", "ConvTranspose")


def attribute_kernels(graph: ir.Graph, seconds: Mapping[str, float]) -> dict[str, float]:
    """Kernel seconds by the ONNX node they ran: a node name as is; a value name (an NCHWc
    convolution with its activation or residual Add fused) to the nearest convolution behind
    that value's producer, at most three nodes up; else to the producer itself."""
    nodes = {node.name: node for node in graph if node.name}
    producers = {v.name: node for node in graph for v in node.outputs if v.name}
    found: dict[str, float] = {}
    for name, spent in seconds.items():
        node = nodes.get(name)
        if node is None and name in producers:
            node = _fused_source(producers[name])
        if node is not None and node.name:
            found[node.name] = found.get(node.name, 0.0) + spent
    return found


def _fused_source(node: ir.Node) -> ir.Node:
    frontier = [node]
    for _ in range(_FUSED_DEPTH):
        for candidate in frontier:
            if candidate.op_type in _FUSED_INTO:
                return candidate
        frontier = [
            producer
            for candidate in frontier
            for value in candidate.inputs
            if value is not None and (producer := value.producer()) is not None
        ]
    return node
