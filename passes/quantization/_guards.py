"""Latency and accuracy guards: interleaved timing, ORT's optimized graph, per-layer sensitivity."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim._fidelity import Fidelity
from onnxslim._runtime import create_session, session_options
from onnxslim.calibration._collector import (  # wave 2: onnxslim.model probe (probe_values)
    augment_with_outputs,
)

__all__ = [
    "AccuracyBound",
    "decisive_top1_agreement",
    "interleaved_latency",
    "run_outputs",
    "run_with_logits",
    "output_logits",
    "optimized_graph",
    "float_nodes_after_optimization",
    "layer_sensitivity",
    "INTEGER_OPS",
]

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]

# Ops of ORT's optimized graph that compute in integers.
# wave 2: onnxslim.model.INTEGER_OPS
INTEGER_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearSoftmax",
        "QAttention",
    }
)


# wave 2: onnxslim.fidelity.FidelityBounds (min_top1 renamed min_top1_agreement)
@dataclasses.dataclass(frozen=True)
class AccuracyBound:
    """What the quantized outputs must keep: output SQNR (dB) and top-1 agreement on class scores.

    ``metric`` is an optional user callable ``(reference_outputs, candidate_outputs) -> bool``
    (lists of per-batch output dicts) that must also hold. ``AccuracyBound.off()`` disables it.
    """

    min_sqnr_db: float | None = 20.0
    min_top1: float | None = 0.95
    metric: Callable[[list, list], bool] | None = None

    @property
    def min_top1_agreement(self) -> float | None:
        """The engine's name for ``min_top1`` (FidelityBounds); both work until wave 2."""
        return self.min_top1

    @classmethod
    def off(cls) -> AccuracyBound:
        return cls(min_sqnr_db=None, min_top1=None, metric=None)

    @property
    def enabled(self) -> bool:
        return self.min_sqnr_db is not None or self.min_top1 is not None or self.metric is not None

    def violations(self, fidelity: Fidelity, reference: list, candidate: list) -> list[str]:
        problems = []
        if self.min_sqnr_db is not None and fidelity.sqnr_db < self.min_sqnr_db:
            problems.append(f"output SQNR {fidelity.sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB")
        if self.min_top1 is not None and fidelity.top1_agreement is not None:
            agreement, decisive = decisive_top1_agreement(reference, candidate)
            if agreement is not None and agreement < self.min_top1:
                problems.append(
                    f"top-1 agreement {100 * agreement:.1f}% < {100 * self.min_top1:g}% "
                    f"(on {decisive} samples with a clear float top-1)"
                )
        if self.metric is not None and not self.metric(reference, candidate):
            problems.append("the user metric failed")
        return problems


def decisive_top1_agreement(
    reference: list, candidate: list, margin: float = 0.01
) -> tuple[float | None, int]:
    """Top-1 agreement over rows of class scores whose float top-1 leads the runner-up by more
    than ``margin`` of the row's range; (None, 0) when there are none.

    A near-tie (e.g. an untrained net whose scores barely depend on the input) flips under any
    noise and says nothing about int8 damage; SQNR covers those outputs.
    """
    from onnxslim._fidelity import looks_like_scores

    agree, total = 0, 0
    for ref_outputs, cand_outputs in zip(reference, candidate):
        for name, ref in ref_outputs.items():
            if not looks_like_scores(ref) or ref.shape[-1] < 2:
                continue
            rows = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
            cand = np.asarray(cand_outputs[name]).reshape(rows.shape)
            ordered = np.sort(rows, axis=-1)
            spread = ordered[:, -1] - ordered[:, 0]
            clear = (ordered[:, -1] - ordered[:, -2]) > margin * np.maximum(spread, 1e-30)
            agree += int(np.sum(rows[clear].argmax(-1) == cand[clear].argmax(-1)))
            total += int(clear.sum())
    return (agree / total if total else None), total


# wave 2: onnxslim.runtime interleaved timer (with interleaved_latency below)
def _timing_session(path: Path, providers: Sequence[str], threads: int | None):
    # Spinning off: with two sessions alive on few cores the idle one steals them.
    options = session_options(intra_op_threads=threads, allow_spinning=False)
    return create_session(path, providers, options)


# wave 2: onnxslim.runtime interleaved timer
def interleaved_latency(
    paths: Sequence[str | os.PathLike],
    feeds: Feeds,
    *,
    runs: int = 10,
    warmup: int = 2,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
    quantile: float = 0.5,
    min_block_s: float = 0.005,
) -> list[float]:
    """Median (or another ``quantile``) seconds per run of each model, timed in interleaved
    rounds (order rotated). A low quantile ranks models more stably on a busy machine:
    interference only ever adds time.

    A model that runs in well under a millisecond is timed in blocks of back-to-back runs
    lasting at least ``min_block_s`` (the same count for every model), so timer resolution and
    one-off scheduler hiccups do not decide between two sub-millisecond models."""
    sessions = [_timing_session(Path(p), providers, threads) for p in paths]
    fastest = float("inf")
    for session in sessions:
        for _ in range(max(1, warmup)):
            started = time.perf_counter()
            session.run(None, dict(feeds))
            fastest = min(fastest, time.perf_counter() - started)
    repeat = max(1, min(1000, math.ceil(min_block_s / max(fastest, 1e-6))))
    samples: list[list[float]] = [[] for _ in sessions]
    order = list(range(len(sessions)))
    for round_index in range(runs):
        rotation = order[round_index % len(order) :] + order[: round_index % len(order)]
        for index in rotation:
            run = sessions[index].run
            started = time.perf_counter()
            for _ in range(repeat):
                run(None, dict(feeds))
            samples[index].append((time.perf_counter() - started) / repeat)
    if quantile == 0.5:
        return [statistics.median(s) for s in samples]
    return [float(np.quantile(s, quantile)) for s in samples]


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
    values = {v.name for node in model.graph for v in node.outputs}
    seen_as: dict[str, str] = {}
    for output, source in logits.items():
        dequantized = f"{source}_DequantizeLinear_Output"
        if dequantized in values:
            seen_as[output] = dequantized
        elif source in values:
            seen_as[output] = source
    augmented = augment_with_outputs(model, list(seen_as.values())) if seen_as else model
    session = create_session(augmented, providers, session_options())
    outputs = [o.name or "" for o in model.graph.outputs]  # graph outputs are always named
    fetch = [seen_as.get(name, name) for name in outputs]
    return [dict(zip(outputs, session.run(fetch, dict(b)))) for b in batches]


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
    quantized_values = {v.name for node in quantized.graph for v in node.outputs}
    # What consumers see in a QDQ graph is the DequantizeLinear output, not the float tensor
    # (ORT even renames a Conv's output to its folded Relu's).
    seen_as = {}
    for name in names:
        dequantized = f"{name}_DequantizeLinear_Output"
        if dequantized in quantized_values:
            seen_as[name] = dequantized
        elif name in quantized_values:
            seen_as[name] = name
    reference_values = {v.name for node in float_model.graph for v in node.outputs}
    names = [n for n in names if n in seen_as and n in reference_values]
    reference_session = create_session(
        augment_with_outputs(float_model, names), providers, session_options()
    )
    candidate_names = [seen_as[n] for n in names]
    candidate_session = create_session(
        augment_with_outputs(quantized, candidate_names), providers, session_options()
    )
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    for batch in batches:
        reference = dict(zip(names, reference_session.run(names, dict(batch))))
        candidate = dict(zip(names, candidate_session.run(candidate_names, dict(batch))))
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
    producers = {}
    for node in float_model.graph:
        for output in node.outputs:
            producers[output.name] = node
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
