"""Load, clean and save a generated model with more than 2 GB of weights; print wall time and peak RSS.

The weights live in an external-data file and are memory-mapped by onnx-ir, so peak RSS should stay
far below the weight size. Run:  python benchmarks/large_model_io.py [--gib 2.25] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

import onnxslim
from onnxslim.passes import Cleanup


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """The kernel's peak RSS of this process (VmHWM): anonymous and file-backed pages together.
    Not ru_maxrss: Linux carries that across exec (a child starts at its parent's RSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mib() -> dict[str, float]:
    """Current RSS split: anonymous (heap, ORT's buffers) and file-backed (mapped weights)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


class PeakSampler:
    """Samples RssAnon and RssFile every few ms in a thread: their separate peaks (the kernel
    keeps only the peak of their sum, VmHWM). Sampling can miss a spike shorter than a period."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = memory_mib()
            self.anon = max(self.anon, now.get("RssAnon", 0.0))
            self.file = max(self.file, now.get("RssFile", 0.0))
            self._stop.wait(self.period_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def generate(folder: Path, gib: float, width: int = 8192) -> tuple[Path, int]:
    """A chain of MatMul+Relu layers, each weight [width, width] float32, written chunk by chunk."""
    layer_bytes = width * width * 4
    layers = max(1, int(np.ceil(gib * (1 << 30) / layer_bytes)))
    data_name = "weights.bin"
    rng = np.random.default_rng(0)
    initializers, nodes = [], []
    with open(folder / data_name, "wb") as data:
        for index in range(layers):
            offset = data.tell()
            for _ in range(8):  # 1/8 of a layer at a time keeps generation memory small
                # a float32 scale: a NumPy float64 scalar would promote the chunk to float64
                chunk = rng.standard_normal(width * width // 8, dtype=np.float32) * np.float32(
                    1.0 / np.sqrt(width)
                )
                data.write(chunk.tobytes())
            tensor = TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[width, width])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", data_name),
                ("offset", str(offset)),
                ("length", str(layer_bytes)),
            ):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            initializers.append(tensor)
            source = "x" if index == 0 else f"h{index - 1}"
            nodes.append(helper.make_node("MatMul", [source, f"w{index}"], [f"m{index}"]))
            nodes.append(
                helper.make_node("Identity", [f"m{index}"], [f"i{index}"])
            )  # cleanup removes these
            nodes.append(
                helper.make_node(
                    "Relu", [f"i{index}"], [f"h{index}" if index < layers - 1 else "y"]
                )
            )
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "large.onnx"
    with open(path, "wb") as file:
        file.write(model.SerializeToString())
    return path, layers * layer_bytes


def measure(path: Path, weight_bytes: int) -> None:
    """Runs in a fresh process so that peak RSS covers only load, cleanup and save."""
    baseline = rss_mib()
    timings = {}
    started = time.perf_counter()
    model = onnxslim.load(path)
    timings["load"] = time.perf_counter() - started
    after_load = rss_mib()
    started = time.perf_counter()
    result = Cleanup()(model)
    timings["cleanup"] = time.perf_counter() - started
    started = time.perf_counter()
    out = onnxslim.save(result.model, path.parent / "large.slim.onnx")
    timings["save"] = time.perf_counter() - started
    peak = peak_rss_mib()
    nodes_before = len(onnx.load(path, load_external_data=False).graph.node)
    nodes_after = len(onnx.load(out, load_external_data=False).graph.node)
    print(f"{'step':8} {'wall s':>8}")
    for step, seconds in timings.items():
        print(f"{step:8} {seconds:8.2f}")
    print(
        f"nodes {nodes_before} -> {nodes_after}; output with external data: "
        f"{onnxslim.model_file_size(out) / (1 << 30):.2f} GiB"
    )
    print(
        f"RSS at start {baseline:.0f} MiB, after load {after_load:.0f} MiB, peak {peak:.0f} MiB "
        f"= {100 * peak / (weight_bytes / (1 << 20)):.1f}% of the {weight_bytes / (1 << 30):.2f} GiB of weights"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.25, help="weight size to generate (GiB)")
    parser.add_argument(
        "--keep", type=Path, help="folder to generate into and keep (default: temp)"
    )
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), int(args.measure[1]))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="onnxslim-large-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        path, weight_bytes = generate(folder, args.gib)
        print(
            f"generated {path} with {weight_bytes / (1 << 30):.2f} GiB of weights "
            f"in {time.perf_counter() - started:.1f}s"
        )
        subprocess.run(
            [sys.executable, __file__, "--measure", str(path), str(weight_bytes)], check=True
        )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
