"""Sharded calibration: wall time on N torchrun ranks vs one process, per-rank throughput.

    python benchmarks/calibration_sharded.py --model det --samples 32 --cores 0,1

runs one process pinned to the cores (``--single-threads 1``: on the ranks' ORT thread count,
which ORT's arithmetic depends on; ranges are bit-identical only then), then ``torchrun --nproc_per_node=len(cores)`` pinned to
the same cores (one ORT thread per rank), checks the ranges are bit-identical and prints the
wall times (process start to exit), each rank's samples/s in its loop, and the bytes the merge
all-reduces. ``--worker`` is the per-process part (not for users).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _model_and_data(name: str, samples: int, size: int):
    import numpy as np

    import onnxslim

    if name == "digits":
        from onnxslim.data import demo_data, demo_model_path

        images = demo_data()["calibration_images"]
        images = np.concatenate([images] * (-(-samples // len(images))))[:samples]
        return onnxslim.load(demo_model_path()), [
            {"image": images[i : i + 1]} for i in range(samples)
        ]
    from onnxslim.testing import ppocr_model_path

    rng = np.random.default_rng(0)
    data = [{"x": rng.random((1, 3, size, size), dtype=np.float32)} for _ in range(samples)]
    path = ppocr_model_path("det")
    if path is None:
        sys.exit("the det model ships with rapidocr-onnxruntime: pip install it, or --model digits")
    return onnxslim.load(path), data


class _LoopTime(logging.Handler):
    """Picks collect_statistics' "... over N samples in S s" line (this rank's loop)."""

    seconds = float("nan")
    merge = 0.0
    cpu = float("nan")
    samples = 0

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"over (\d+) samples in ([\d.]+) s \(([\d.]+) s CPU", record.getMessage())
        if found:
            self.samples, self.seconds, self.cpu = int(found[1]), float(found[2]), float(found[3])
        merged = re.search(r"merged \d+ ranks in ([\d.]+) s", record.getMessage())
        if merged:
            self.merge = float(merged[1])


def worker(args: argparse.Namespace) -> None:
    from onnxslim.passes.quantization import run_calibration

    model, data = _model_and_data(args.model, args.samples, args.size)
    handler = _LoopTime()
    logger = logging.getLogger("onnxslim.calibration")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started = time.perf_counter()
    calibration = run_calibration(model, data, method="percentile", threads=args.threads)
    seconds = time.perf_counter() - started
    rank = int(os.environ.get("RANK", "0"))
    bins = calibration.collector.bins
    record = {
        "rank": rank,
        "calibration_s": round(seconds, 3),
        "loop_s": handler.seconds,
        "loop_samples": handler.samples,
        "samples_per_s": round(handler.samples / handler.seconds, 2),
        "samples_per_cpu_s": round(handler.samples / handler.cpu, 2),
        "merge_s": handler.merge,
        "tensors": len(calibration.names),
        "merge_bytes": len(calibration.names) * ((bins + 2) * 8 + 5 * 8),
        "ranges": {k: [a.hex(), b.hex()] for k, (a, b) in calibration.ranges.items()},
    }
    Path(f"{args.out}.rank{rank}.json").write_text(json.dumps(record))


def _run(command: list[str], cores: str) -> float:
    started = time.perf_counter()
    subprocess.run(["taskset", "-c", cores, *command], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["det", "digits"], default="det")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--size", type=int, default=320, help="det input side")
    parser.add_argument("--cores", default="0,1")
    parser.add_argument(
        "--single-threads", type=int, default=None, help="ORT threads of the one process"
    )
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    ranks = len(args.cores.split(","))
    with tempfile.TemporaryDirectory() as folder:
        own = [__file__, "--worker", "--model", args.model, "--samples", str(args.samples)]
        own += ["--size", str(args.size)]
        alone = ["--threads", str(args.single_threads)] if args.single_threads else []
        single = _run([sys.executable, *own, *alone, "--out", f"{folder}/single"], args.cores)
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launch += [f"--nproc_per_node={ranks}", *own, "--out", f"{folder}/sharded"]
        sharded = _run(launch, args.cores)
        one = json.loads(Path(f"{folder}/single.rank0.json").read_text())
        parts = [
            json.loads(Path(f"{folder}/sharded.rank{r}.json").read_text()) for r in range(ranks)
        ]
    identical = all(p["ranges"] == one["ranges"] for p in parts)
    print(f"{args.model}: {args.samples} samples, {one['tensors']} tensors, cores {args.cores}")
    print(
        f"  1 process : wall {single:.1f} s, calibration {one['calibration_s']:.1f} s, "
        f"loop {one['samples_per_s']} samples/s ({one['samples_per_cpu_s']} per CPU-s)"
    )
    print(
        f"  {ranks} ranks   : wall {sharded:.1f} s, calibration "
        + ", ".join(f"{p['calibration_s']:.1f}" for p in parts)
        + " s, loop samples/s per rank "
        + ", ".join(f"{p['samples_per_s']} ({p['samples_per_cpu_s']} per CPU-s)" for p in parts)
        + ", merge "
        + ", ".join(f"{p['merge_s']:.3f}" for p in parts)
        + " s"
    )
    threads = args.single_threads or "ORT default"
    print(
        f"  merge all-reduce: {one['merge_bytes']} bytes per rank; ranges identical to the "
        f"one process ({threads} threads; ranks 1 thread each): {identical}"
    )


if __name__ == "__main__":
    main()
