"""An input without a batch axis (torchvision detection's ``[3, H, W]`` image): a file is one
sample, so 8 files calibrate on 8 samples (not 24, the channel axis read as a batch), and the
quantize report says 8."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.calibration import collect_statistics
from onnxslim.inputs import open_samples, samples_in


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(4, 8, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["image", "axis0"], ["batched"]),
            helper.make_node("Conv", ["batched", "w"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"]),
        ],
        "unbatched",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(8):
        np.savez(folder / f"{index}.npz", image=rng.normal(size=(3, 8, 8)).astype(np.float32))
    return folder


def test_collector_counts_one_sample_per_unbatched_file(files: Path) -> None:
    model = ir.from_proto(_model())
    reader = open_samples(files, model, batch_size=1)
    reader.validate(model)
    first = next(iter(reader))
    assert first["image"].shape == (3, 8, 8) and samples_in(first, reader) == 1
    assert samples_in(first) == 3  # without the reader, axis 0 is all there is to read
    collector = collect_statistics(model, ["r"], reader, bins=32)
    assert (collector.samples, collector.batches_seen) == (8, 8)


def test_quantize_report_says_eight_samples(files: Path, tmp_path: Path) -> None:
    source, report = tmp_path / "unbatched.onnx", tmp_path / "report.json"
    onnx.save(_model(), source)
    proc = subprocess.run(
        [sys.executable, "-m", "onnxslim", "optimize", str(source), "-o", str(tmp_path / "q.onnx"),
         "--quantize", "int8", "--calibration", str(files), "--data", str(files),
         "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"on 8 sample(s) of {files}" in proc.stdout
    assert "24 sample" not in proc.stdout
    stages = {s["stage"]: s for s in json.loads(report.read_text())["stages"]}
    assert stages["quantize"]["summary"]["calibration"]["samples"] == 8


def test_guard_holds_out_and_reuses_whole_samples_of_an_unbatched_input(files: Path) -> None:
    """The accuracy guard's sample counts go through the reader: a ``[3, 8, 8]`` file is one
    sample, not three (axis 0 read as a batch made it hold out 3 of 24)."""
    from onnxslim.passes.quantization._judging import judging_data

    model = ir.from_proto(_model())
    reader = open_samples(files, model, batch_size=1)
    held = judging_data(reader, 1, None)
    assert held.judged_on == {
        "source": "held-out calibration data",
        "samples": 1,
        "description": "the last 1 of 8 samples; the calibration used the first 7",
    }
    assert (len(held.batches), held.calibration_limit) == (1, 7)
    reused = judging_data(reader, 2, None)  # 6 left would calibrate too little: reused
    assert reused.judged_on == {"source": "calibration samples (reused)", "samples": 2}
    assert len(reused.batches) == 2
