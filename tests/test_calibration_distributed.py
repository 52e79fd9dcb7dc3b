"""Sharded calibration: exact merges on numpy, and 2 real gloo ranks under torchrun."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import RecipeError
from onnxslim.calibration import (
    METHODS,
    StatisticsCollector,
    compute_range,
    join_process_group,
    merge_collectors,
)
from onnxslim.data import demo_data, demo_model_path

NAMES = ["wide", "relu", "late_nan", "big"]


def batches(count: int = 12) -> list[dict[str, np.ndarray]]:
    """Ranges that grow (the width doubles mid-stream), a one-sided tensor, a tensor with no
    finite value in batch 0 (a free lattice) and one above the strided-sample cap."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        wide = rng.standard_normal(3000).astype(np.float32) * 1.7**i + i
        late = rng.standard_normal(500).astype(np.float32) * (i + 1)
        if i == 0:
            late[:] = np.nan
        big = rng.standard_normal(70_000).astype(np.float32) * (1 + i % 3)
        out.append({"wide": wide, "relu": np.maximum(wide, 0), "late_nan": late, "big": big})
    return out


def one_process(data, histograms=True) -> StatisticsCollector:
    collector = StatisticsCollector(NAMES, histograms=histograms)
    for batch in data:
        collector.update(batch)
    return collector


def shards(data, world: int, histograms=True) -> list[StatisticsCollector]:
    """Batch i on shard i % world; shard 0 (batch 0) hands its anchors to the others."""
    collectors = [StatisticsCollector(NAMES, histograms=histograms) for _ in range(world)]
    collectors[0].update(data[0], batch_index=0)
    for collector in collectors[1:]:
        collector.set_anchors(collectors[0].anchors())
    for index, batch in enumerate(data[1:], start=1):
        collectors[index % world].update(batch, batch_index=index)
    return collectors


def assert_same_statistics(
    merged: StatisticsCollector, single: StatisticsCollector, names=NAMES
) -> None:
    assert merged.samples == single.samples
    for name in names:
        a, b = merged.tensors[name], single.tensors[name]
        assert (a.minimum, a.maximum, a.batches, a.elements) == (
            b.minimum,
            b.maximum,
            b.batches,
            b.elements,
        )
        assert (a.histogram.width, a.histogram.offset) == (b.histogram.width, b.histogram.offset)
        assert np.array_equal(a.histogram.counts, b.histogram.counts)


@pytest.mark.parametrize("world", [2, 3, 5])
def test_merged_shards_equal_one_collector_bit_for_bit(world):
    data = batches()
    single = one_process(data)
    parts = shards(data, world)
    widths = {p.tensors["wide"].histogram.width for p in parts}
    assert len(widths) > 1  # the shards really grew to different grids before the merge
    merged = merge_collectors(parts)
    assert_same_statistics(merged, single)
    assert_same_statistics(merge_collectors(parts[::-1]), single)  # order-free
    assert single.tensors["late_nan"].histogram.free  # no finite value in batch 0
    assert single.tensors["wide"].histogram.width > single.tensors["wide"].histogram.base
    for name in NAMES:
        for method in METHODS:
            got = compute_range(merged.tensors[name], method)
            want = compute_range(single.tensors[name], method)
            assert [float(v).hex() for v in got] == [float(v).hex() for v in want], (name, method)


# Ranges of the code before sharding (one process, same data): the order-free grid keeps them
# bit for bit. Only a tensor with no finite value in batch 0 moves (a power-of-two grid now):
# late_nan's entropy range by 0.7 % and its mse range by 0.2 % of its min/max width.
PINNED = {
    "wide": {
        "minmax": ["-0x1.30839c0000000p+10", "0x1.17d9c40000000p+10"],
        "percentile": ["-0x1.30839c0000000p+10", "0x1.17d9c40000000p+10"],
        "entropy": ["-0x1.46d7b3c000000p+9", "0x1.46d7b3c000000p+9"],
        "mse": ["-0x1.1eabe5dc00000p+10", "0x1.17d9c40000000p+10"],
    },
    "relu": {
        "minmax": ["0x0.0p+0", "0x1.17d9c40000000p+10"],
        "percentile": ["0x0.0p+0", "0x1.17d9c40000000p+10"],
        "entropy": ["0x0.0p+0", "0x1.ef7036e480000p+9"],
        "mse": ["0x0.0p+0", "0x1.0ceb425800000p+10"],
    },
    "big": {
        "minmax": ["-0x1.ab0c9c0000000p+3", "0x1.b8125e0000000p+3"],
        "percentile": ["-0x1.8fc52cfc7ffa2p+3", "0x1.75021cea7feb7p+3"],
        "entropy": ["-0x1.99fe481e00000p+3", "0x1.99fe481e00000p+3"],
        "mse": ["-0x1.5cf6908a00000p+3", "0x1.5cf6908a00000p+3"],
    },
}


def test_one_process_ranges_are_those_before_sharding():
    single = one_process(batches())
    for name, methods in PINNED.items():
        for method, want in methods.items():
            assert [v.hex() for v in compute_range(single.tensors[name], method)] == want


def test_progress_bar_shows_calibration_over_samples(capsys, monkeypatch):
    from onnxslim.calibration import collect_statistics

    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }"""
    )
    monkeypatch.setenv("ONNXSLIM_PROGRESS", "1")
    data = [{"x": np.full((2, 4), i, np.float32)} for i in range(3)]
    collector = collect_statistics(ir.from_proto(model), ["y"], data, total_samples=6)
    assert collector.samples == 6
    bar = capsys.readouterr().err
    # tqdm draws at most every 0.2 s and erases the bar at the end (leave=False): the first
    # frame shows the description, the total, the unit and the ETA.
    assert "calibration:" in bar and "0/6 sample" in bar and "ETA" in bar


def test_minmax_without_histograms_merges_exactly():
    data = batches(6)
    merged = merge_collectors(shards(data, 2, histograms=False))
    single = one_process(data, histograms=False)
    for name in NAMES:
        assert compute_range(merged.tensors[name], "minmax") == compute_range(
            single.tensors[name], "minmax"
        )
        assert merged.tensors[name].histogram.counts.sum() == 0


def test_shards_anchored_apart_refuse_to_merge():
    data = batches(4)
    first, second = StatisticsCollector(NAMES), StatisticsCollector(NAMES)
    first.update(data[0], batch_index=0)
    second.update(data[1], batch_index=1)  # anchored on its own batch: another lattice
    with pytest.raises(ValueError, match="cannot merge histograms anchored differently"):
        merge_collectors([first, second])


def test_distributed_true_without_a_launcher_says_what_to_do(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert join_process_group(None).world == 1
    assert join_process_group(False).world == 1
    with pytest.raises(
        RecipeError, match="distributed calibration needs a launcher: run under torchrun"
    ):
        join_process_group(True)


# ----------------------------------------------------------------------------- torchrun

WORKER = """
import ctypes, json, os, signal, sys, threading
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # die with the launcher
deadline = threading.Timer(float(os.environ["WORKER_DEADLINE_S"]), os._exit, (3,))
deadline.daemon = True
deadline.start()
import numpy as np, onnxslim
from onnxslim.calibration import METHODS, compute_range
from onnxslim.passes.quantization import run_calibration
images, out = np.load(sys.argv[2]), sys.argv[3]
model = onnxslim.load(sys.argv[1])
data = [{"image": images[i : i + 1]} for i in range(len(images))]
# One ORT thread on every rank and in the reference: ORT's arithmetic depends on it.
calibration = run_calibration(
    model, data, method="percentile", batch_size=3, distributed=True, threads=1
)
stats = calibration.collector.tensors
result = {m: {k: [v.hex() for v in compute_range(s, m)] for k, s in stats.items()} for m in METHODS}
result["samples"] = calibration.collector.samples
try:
    run_calibration(model, data, method="minmax", moving_average=True, distributed=True)
except onnxslim.RecipeError as error:
    result["moving_average"] = str(error)
rank = int(os.environ["RANK"])
open(f"{out}.rank{rank}.json", "w").write(json.dumps(result))
# Then the command line, as `torchrun -m onnxslim optimize ...` runs it (onnxslim/__main__.py).
from onnxslim.cli import main
sys.exit(main(["optimize", *sys.argv[4:]]))
"""
TIMEOUT_S = 120


def _own_processes(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` (a unique path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def torchrun(arguments: list[str], marker: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs ``torchrun --standalone --nproc_per_node=2 ...`` to the end (or kills what it started)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKER_DEADLINE_S": str(TIMEOUT_S + 10)}
    env.pop("CI", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    launcher = subprocess.Popen(
        [*command, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        stdout, stderr = launcher.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{stderr[-3000:]}")
    finally:
        for pid in _own_processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shard") / "images.npy"
    np.save(path, demo_data()["calibration_images"][:40])
    return path


RECIPE = """
[[passes]]
name = "cleanup"
[[passes]]
name = "quantize"
calibration = "{calibration}"
threads = 1  # ORT's arithmetic depends on its thread count: equal on both runs
latency_guard = false  # timings would pick the candidate
accuracy_guard = false
"""


def cli_flags(calibration: Path) -> list[str]:
    recipe = calibration.with_name("recipe.toml")
    recipe.write_text(RECIPE.format(calibration=calibration))
    return [str(demo_model_path()), "--recipe", str(recipe), "--no-verify"]


def test_two_gloo_ranks_give_the_one_process_ranges_and_outputs(images, tmp_path):
    """One launch: the API on both ranks, then the CLI (rank 0 writes, rank 1 exits 0)."""
    from onnxslim.cli import main
    from onnxslim.passes.quantization import run_calibration

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    out = tmp_path / "ranges"
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, image=np.load(images))
    single_model, sharded_model = tmp_path / "single.onnx", tmp_path / "sharded.onnx"
    arguments = [str(script), str(demo_model_path()), str(images), str(out)]
    arguments += [*cli_flags(calibration), "-o", str(sharded_model)]
    done = torchrun(arguments, str(script), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank returns the merged statistics
    model = onnxslim.load(demo_model_path())
    array = np.load(images)
    data = [{"image": array[i : i + 1]} for i in range(len(array))]
    single = run_calibration(
        model, data, method="percentile", batch_size=3, distributed=False, threads=1
    )
    assert ranks[0]["samples"] == single.collector.samples == len(array)
    stats = single.collector.tensors
    for method in METHODS:
        want = {k: [v.hex() for v in compute_range(s, method)] for k, s in stats.items()}
        assert ranks[0][method] == want, method
        assert len(want) == 32
    assert ranks[0]["moving_average"] == (
        "moving-average min/max depends on the order of the batches, so it cannot be sharded: "
        "use method 'minmax' without moving_average, or calibrate in one process."
    )
    # The CLI: rank 0 alone printed and wrote, the same bytes as one process writes.
    assert main(["optimize", *cli_flags(calibration), "-o", str(single_model), "--quiet"]) == 0
    assert done.stdout.count("wrote ") == 1 and f"wrote {sharded_model}" in done.stdout
    assert sharded_model.read_bytes() == single_model.read_bytes()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(
        ["calibration.npz", "ranges.rank0.json", "ranges.rank1.json", "recipe.toml"]
        + ["sharded.onnx", "single.onnx", "worker.py"]
    )


def test_python_m_onnxslim_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "onnxslim", "optimize", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: onnxslim optimize")
