"""Cleanup, prune and quantize a generated model with more than 2 GB of weights (external data).

Each pass runs in a fresh process (load -> pass -> save with external data), so the peak RSS
printed is that pass's alone; the weights stay memory-mapped where the pass allows it. The model
comes from benchmarks/large_model_io.py's generator (a MatMul+Relu chain of 8192x8192 float32
weights). Each output is checked: it loads, the checker accepts it, and ORT runs it on one sample.
"ort" is ONNX Runtime's own quantize_static on the same model (QDQ, MatMul, the same profile,
MinMax on the same 2 random samples, external data), the reference for quantize's time and memory.
Peak RSS is the kernel's VmHWM (anonymous + file-backed pages, what the acceptance counts); the
anon/file columns are sampled peaks of each part (mapped weights are file-backed, reclaimable).
Run:  python benchmarks/large_model_passes.py [--gib 2.25] [--passes cleanup,prune,quantize,ort] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from large_model_io import PeakSampler, generate, peak_rss_mib, rss_mib  # noqa: E402

import onnxslim  # noqa: E402
from onnxslim.formatting import json_safe  # noqa: E402


def build_pass(name: str):
    from onnxslim.passes import Cleanup, QuantizeStatic, StructuredPrune

    if name == "cleanup":
        return Cleanup()
    if name == "prune":
        return StructuredPrune(ratio=0.3)
    # random calibration (smoke data): this measures memory and time, not accuracy; no guards,
    # each guard would quantize and time more candidates of the same size
    return QuantizeStatic(
        calibration="random:2",
        latency_guard=False,
        accuracy_guard=False,
        op_types=["MatMul"],
        eval_samples=1,
    )


def ort_quantize_static(path: Path, output: Path) -> None:
    """ORT's quantize_static with the settings QuantizeStatic uses in this benchmark."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Random(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter(
                [{"x": rng.standard_normal((1, 8192), np.float32)} for _ in range(2)]
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(
        str(path),
        str(output),
        Random(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=True,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )


def measure(name: str, path: Path, weight_bytes: int) -> dict:
    """In a fresh process: load, run one pass, save with external data; wall times and peak RSS."""
    with PeakSampler() as sampler:
        row = _measure(name, path, weight_bytes)
    row["peak_anon_mib"], row["peak_file_mib"] = round(sampler.anon), round(sampler.file)
    return row


def _measure(name: str, path: Path, weight_bytes: int) -> dict:
    logging.basicConfig(level=logging.WARNING)
    baseline = rss_mib()
    if name == "ort":
        output = path.parent / "large.ort.onnx"
        started = time.perf_counter()
        ort_quantize_static(path, output)
        peak = peak_rss_mib()
        return {
            "pass": name,
            "seconds": {"load": 0.0, name: round(time.perf_counter() - started, 2), "save": 0.0},
            "modified": True,
            "rss_start_mib": round(baseline),
            "peak_rss_mib": round(peak),
            "peak_rss_vs_weights": round(peak / (weight_bytes / (1 << 20)), 3),
            "output": str(output),
            "output_gib": round(onnxslim.model_file_size(output) / (1 << 30), 3),
        }
    timings = {}
    started = time.perf_counter()
    model = onnxslim.load(path)
    timings["load"] = time.perf_counter() - started
    context = onnxslim.PassContext(
        reference_path=path,
        sample_inputs=[onnxslim.random_inputs(model, {"batch": 1})],
        sizes={"batch": 1},
        workdir=Path(tempfile.mkdtemp(prefix="onnxslim-large-pass-", dir=path.parent)),
    )
    started = time.perf_counter()
    result = build_pass(name).apply(model, context)
    timings[name] = time.perf_counter() - started
    rss_after_pass = rss_mib()
    started = time.perf_counter()
    output = onnxslim.save(result.model, path.parent / f"large.{name}.onnx", external_data=True)
    timings["save"] = time.perf_counter() - started
    peak = peak_rss_mib()
    shutil.rmtree(context.workdir, ignore_errors=True)
    return {
        "pass": name,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "modified": result.modified,
        "rss_start_mib": round(baseline),
        "rss_after_pass_mib": round(rss_after_pass),
        "peak_rss_mib": round(peak),
        "peak_rss_vs_weights": round(peak / (weight_bytes / (1 << 20)), 3),
        "output": str(output),
        "output_gib": round(onnxslim.model_file_size(output) / (1 << 30), 3),
    }


def check_output(path: Path, width: int = 8192) -> str:
    """The output loads (checker included) and ORT runs it; a fresh process keeps RSS separate."""
    model = onnxslim.load(path)
    ops = sorted({node.op_type for node in model.graph})
    session = onnxslim.create_session(path)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, width), np.float32)}
    (output,) = session.run(None, feeds)
    finite = bool(np.isfinite(output).all())
    return f"ORT ran it: output {list(output.shape)}, finite={finite}; ops {ops}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.25, help="weight size to generate (GiB)")
    parser.add_argument("--passes", default="cleanup,prune,quantize")
    parser.add_argument(
        "--keep", type=Path, help="folder to generate into and keep (default: temp)"
    )
    parser.add_argument(
        "--measure", nargs=3, metavar=("PASS", "MODEL", "BYTES"), help=argparse.SUPPRESS
    )
    parser.add_argument("--check", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        name, model, size = args.measure
        print(json.dumps(measure(name, Path(model), int(size))))  # to the parent process
        return
    if args.check:
        print(check_output(Path(args.check)))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="onnxslim-large-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        path, weight_bytes = generate(folder, args.gib)
        print(
            f"generated {path}: {weight_bytes / (1 << 30):.2f} GiB of weights in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
        rows = []
        for name in args.passes.split(","):
            run = subprocess.run(
                [sys.executable, __file__, "--measure", name, str(path), str(weight_bytes)],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                lines = run.stderr.strip().splitlines()
                print(f"{name}: FAILED ({lines[-1] if lines else run.returncode})", flush=True)
                rows.append({"pass": name, "failed": lines[-1] if lines else str(run.returncode)})
                continue
            row = json.loads(run.stdout.strip().splitlines()[-1])
            check = subprocess.run(
                [sys.executable, __file__, "--check", row["output"]], capture_output=True, text=True
            )
            row["check"] = (
                check.stdout.strip() if check.returncode == 0 else check.stderr.strip()[-300:]
            )
            rows.append(row)
            print(json.dumps(json_safe(row), allow_nan=False), flush=True)
            Path(row["output"]).unlink()
            Path(row["output"] + ".data").unlink(missing_ok=True)
        print(
            f"\n{'pass':9} {'pass s':>7} {'load s':>7} {'save s':>7} {'peak RSS':>9} {'vs weights':>10} "
            f"{'anon':>9} {'file':>9} {'out GiB':>8}"
        )
        for row in rows:
            if "failed" in row:
                print(f"{row['pass']:9} FAILED: {row['failed'][:120]}")
                continue
            seconds = row["seconds"]
            print(
                f"{row['pass']:9} {seconds[row['pass']]:7.1f} {seconds['load']:7.2f} {seconds['save']:7.1f} "
                f"{row['peak_rss_mib']:6d} MiB {100 * row['peak_rss_vs_weights']:9.0f}% "
                f"{row['peak_anon_mib']:5d} MiB {row['peak_file_mib']:5d} MiB {row['output_gib']:8.2f}"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
