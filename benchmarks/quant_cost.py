"""The cost of `QuantizeStatic` with the guards on, stage by stage, against ORT's quantize_static.

Each tool runs in a fresh subprocess (wall time, CPU time, VmHWM) on the same calibration
samples as `quant_vs_peers.py` (digits, PP-OCR cls and det). For ours, every stage of the pass is timed and
its own peak RSS measured: the peak is reset (``/proc/self/clear_refs``) when a stage starts.

    taskset -c 0 python benchmarks/quant_cost.py --models digits,cls,det
    taskset -c 0 python benchmarks/quant_cost.py --models det --tools ours --stages
    taskset -c 0 nice -n 5 python benchmarks/quant_cost.py --models cls,digits --repeat 3

``--repeat N`` runs the tools N times, interleaved (ours, ORT, ours, ORT, ...), and prints per
model and tool the medians of wall time, CPU time and peak RSS, and ours / ORT of each.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# quant_vs_ort imports only numpy at the top: ORT's worker loads none of onnxslim's stack (its
# peak RSS is ORT's own); quant_vs_peers (which imports onnxslim) is imported by the parent only.
from quant_vs_ort import _NpzReader, peak_rss_mb  # noqa: E402

TOOLS = ("ours", "ort-default", "ort-percentile")

# (module, attribute): the stages of the pass, as _quantize_static and _pruning call them
STAGES = (
    ("onnxslim.passes.quantization._quantize_static", "prepare"),
    ("onnxslim.passes.quantization._quantize_static", "collect_ranges"),
    ("onnxslim.passes.quantization._quantize_static", "Evaluator"),
    ("onnxslim.passes.quantization._pruning", "first_candidates"),
    ("onnxslim.passes.quantization._pruning", "widen_clipped_ranges"),
    ("onnxslim.passes.quantization._pruning", "with_float_islands"),
    ("onnxslim.passes.quantization._pruning", "with_sensitive_tensors"),
    ("onnxslim.passes.quantization._pruning", "beaten"),
    ("onnxslim.passes.quantization._pruning", "keep_sensitive_layers_in_float"),
    ("onnxslim.passes.quantization._quantize_static", "slow_int8_nodes"),
    ("onnxslim.passes.quantization._quantize_static", "rank_and_confirm"),
    ("onnxslim.passes.quantization._quantize_static", "tensor_sqnr"),
)
# inside the stages (methods and helpers), aggregated per name
SUBSTAGES = (
    ("onnxslim.passes.quantization._emit", "Emitter.emit"),
    ("onnxslim.passes.quantization._accuracy_guard", "Evaluator.evaluate"),
    ("onnxslim.passes.quantization._accuracy_guard", "layer_sensitivity"),
    ("onnxslim.passes.quantization._latency_guard", "node_kernel_seconds"),
    ("onnxslim.passes.quantization._latency_guard", "model_stats"),
    ("onnxslim.passes.quantization._latency_guard", "interleaved_latency"),
)


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    try:  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


_PEAKS: list[float] = []  # every peak read so far (a nested stage resets the peak)


def _timed(name: str, function, log: list, sub: bool = False):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        _PEAKS.append(peak_rss_mb())
        _reset_peak()
        first = len(_PEAKS)
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            peak = max([peak_rss_mb(), *_PEAKS[first:]])
            _PEAKS.append(peak)
            entry = {"stage": name, "s": time.perf_counter() - started, "peak_mb": peak}
            log.append({**entry, "rss_mb": _status("VmRSS"), "sub": sub})

    return wrapper


def _ours(model: Path, data: Path, output: Path, stages: bool) -> dict:
    import importlib

    import onnxslim
    from onnxslim.passes.quantization import QuantizeStatic

    log: list[dict] = []
    if stages:
        for module_name, attribute in STAGES:
            module = importlib.import_module(module_name)
            setattr(module, attribute, _timed(attribute, getattr(module, attribute), log))
        for module_name, dotted in SUBSTAGES:
            owner = importlib.import_module(module_name)
            *path, attribute = dotted.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, attribute, _timed(dotted, getattr(owner, attribute), log, sub=True))
    loaded = onnxslim.load(model)
    result = QuantizeStatic(str(data)).apply(loaded, onnxslim.PassContext())
    onnxslim.save(loaded, output)
    return {
        "chosen": result.summary.get("chosen") or "float returned",
        "fidelity": result.summary.get("fidelity"),
        "speedup": result.summary.get("speedup"),
        # the decisions, to compare before/after a cost change
        "candidates": result.summary.get("candidates"),
        "sensitivity_db": result.summary.get("sensitivity_db"),
        "stages": log,
    }


def _ort(model: Path, data: Path, output: Path, method: str) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    calibrate = CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax
    quantize_static(
        str(model),
        str(output),
        _NpzReader(data),
        quant_format=QuantFormat.QDQ,
        calibrate_method=calibrate,
    )
    return {}


def worker(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    model, data, output = Path(args.model), Path(args.data), Path(args.output)
    if args.worker == "ours":
        result = _ours(model, data, output, args.stages)
    else:
        result = _ort(model, data, output, args.worker.split("-")[1])
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = max([peak_rss_mb(), *_PEAKS])
    result["onnxslim_loaded"] = "onnxslim" in sys.modules
    # CPU seconds of the whole process (imports included): on a shared machine the wall time
    # carries the neighbours' load, the CPU time much less of it
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    Path(args.json).write_text(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="digits,cls,det")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--samples", type=int, default=64, help="calibration samples (det: 16 at most)"
    )
    parser.add_argument("--stages", action="store_true", help="time and measure each stage of ours")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs per tool (medians)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--model", "--data", "--output", "--json"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from quant_vs_peers import build, run_worker

    rows = []
    with tempfile.TemporaryDirectory(prefix="quant-cost-") as tmp:
        for name in args.models.split(","):
            model = build(name, args.samples, quick=False)
            data = Path(tmp) / f"{name}-calibration.npz"
            np.savez(data, **model["calibration"])
            for run in range(args.repeat):
                for tool in args.tools.split(","):
                    output = Path(tmp) / f"{name}-{tool}.onnx"
                    extra = ["--stages"] if args.stages and tool == "ours" else []
                    row = run_worker(
                        tool,
                        Path(model["path"]),
                        data,
                        output,
                        args.timeout,
                        __file__,
                        tuple(extra),
                    )
                    rows.append({"model": name, "tool": tool, "run": run, **row})
                    _print(rows[-1])
    if args.repeat > 1:
        _print_medians(rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1, default=str))


def _print_medians(rows: list[dict]) -> None:
    """Median wall s, CPU s and peak MiB per model and tool, and ours / ORT's default."""
    keys = ("seconds", "cpu_s", "peak_rss_mb")
    medians: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        if "error" not in row:
            entry = medians.setdefault((row["model"], row["tool"]), {k: [] for k in keys})
            for key in keys:
                entry[key].append(row[key])
    print("medians (wall s, cpu s, peak MiB) and ours / ort-default:", flush=True)
    for (model, tool), entry in medians.items():
        values = {key: statistics.median(entry[key]) for key in keys}
        line = f"{model:7} {tool:15} " + "  ".join(f"{values[k]:7.1f}" for k in keys)
        peer = medians.get((model, "ort-default"))
        if tool == "ours" and peer:
            ratios = [values[k] / statistics.median(peer[k]) for k in keys]
            line += "   ratio " + "  ".join(f"{r:5.2f}x" for r in ratios)
        print(f"{line}  (n={len(entry['cpu_s'])})", flush=True)


def _print(row: dict) -> None:
    if "error" in row:
        print(f"{row['model']:7} {row['tool']:15} ERROR {row['error']}", flush=True)
        return
    note = row.get("chosen", "")
    print(
        f"{row['model']:7} {row['tool']:15} {row['seconds']:7.1f} s {row.get('cpu_s', 0):7.1f} cpu-s "
        f"{row['peak_rss_mb']:7.0f} MiB  {note} {row.get('fidelity') or ''}",
        flush=True,
    )
    subs: dict[str, list] = {}
    for stage in row.get("stages", []):
        if stage.get("sub"):
            entry = subs.setdefault(stage["stage"], [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += stage["s"]
            entry[2] = max(entry[2], stage["peak_mb"])
            continue
        print(
            f"    {stage['stage']:32} {stage['s']:7.2f} s  peak {stage['peak_mb']:6.0f}  rss {stage['rss_mb']:6.0f}",
            flush=True,
        )
    for name, (count, seconds, peak) in subs.items():
        print(f"      {name:24} x{count:<3} {seconds:7.2f} s  peak {peak:6.0f}", flush=True)


if __name__ == "__main__":
    main()
