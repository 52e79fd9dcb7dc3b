"""Default sizes for symbolic dims: chosen so the model runs, else a message naming the dim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import onnx.parser
import onnx_ir as ir
import pytest

from onnxslim import Pipeline
from onnxslim.inputs import DefaultSizeError, random_inputs, runnable_sizes
from onnxslim.passes import Cleanup
from onnxslim.passes.pruning import StructuredPrune, dependency_groups
from onnxslim.runtime import create_session

# A waveform front-end: reflect padding by 32 needs more than 32 samples (16 is today's default).
PAD_REFLECT = """
<ir_version: 8, opset_import: ["" : 17]>
front (float[1, samples] x) => (float[1, frames] y) {
    pads = Constant <value = int64[4] {0, 32, 0, 32}> ()
    padded = Pad <mode = "reflect"> (x, pads)
    y = Abs (padded)
}
"""

# The same pad behind an Unsqueeze: the graph rule cannot see it, trying larger sizes finds 256.
PAD_BEHIND_UNSQUEEZE = """
<ir_version: 8, opset_import: ["" : 17]>
front (float[batch, samples] x) => (float[batch, one, frames] y) {
    axes = Constant <value = int64[1] {1}> ()
    wide = Unsqueeze (x, axes)
    pads = Constant <value = int64[6] {0, 0, 40, 0, 0, 40}> ()
    y = Pad <mode = "reflect"> (wide, pads)
}
"""

# Runs only with exactly 100 samples: no default size fits.
FIXED_LENGTH = """
<ir_version: 8, opset_import: ["" : 17]>
fixed (float[1, samples] x) => (float[10, 10] y) {
    shape = Constant <value = int64[2] {10, 10}> ()
    y = Reshape (x, shape)
}
"""

# A recurrent state [layers, ?, hidden] whose unnamed batch dim must match x's (a broadcast Add).
UNNAMED_STATE = """
<ir_version: 8, opset_import: ["" : 17]>
state_model (float[?, ?] x, float[2, ?, 4] state) => (float[2, ?, 4] y) {
    mean = ReduceMean <keepdims = 1> (x)
    y = Add (state, mean)
}
"""


def parse(text: str) -> ir.Model:
    return ir.from_proto(onnx.parser.parse_model(text))


def runs(model: ir.Model, sizes: dict) -> bool:
    session = create_session(model)
    try:
        session.run(None, random_inputs(model, sizes))
    except Exception:
        return False
    return True


def test_reflect_pad_size_comes_from_the_graph() -> None:
    model = parse(PAD_REFLECT)
    assert not runs(model, {})  # today's default: 16 samples
    sizes = runnable_sizes(model)
    assert sizes == {"samples": 256}
    assert runs(model, sizes)


def test_larger_sizes_are_tried_until_the_model_runs() -> None:
    model = parse(PAD_BEHIND_UNSQUEEZE)
    assert runnable_sizes(model) == {"batch": 1, "samples": 256}


def test_user_sizes_are_kept_and_fixed_models_cost_nothing(conv_bn_path: Path) -> None:
    model = parse(PAD_REFLECT)
    assert runnable_sizes(model, {"samples": 48}) == {"samples": 48}
    assert runnable_sizes(model, {"x": [1, 40]}) == {"x": [1, 40]}
    assert runnable_sizes(ir.load(conv_bn_path)) == {"N": 1}  # batch only: no session


def test_unnamed_state_batch_is_tried_at_one() -> None:
    model = parse(UNNAMED_STATE)
    assert runnable_sizes(model) == {"x": [1, 16], "state": [2, 1, 4]}


def test_no_size_fits_names_the_dim_and_the_shape_flag() -> None:
    with pytest.raises(DefaultSizeError) as caught:
        runnable_sizes(parse(FIXED_LENGTH))
    message = str(caught.value)
    assert "samples=16/256/1024/16000" in message
    assert "--shape samples=N" in message
    assert "Reshape" in message  # ORT's reason, its first line


def test_pipeline_runs_a_reflect_pad_model_on_random_data() -> None:
    result = Pipeline([Cleanup()]).run(parse(PAD_REFLECT))
    assert result.report.stages[-1].stage == "cleanup"


def test_cli_exit_2_one_line_no_ort_log(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    onnx.save(onnx.parser.parse_model(FIXED_LENGTH), path)
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxslim.cli",
            "optimize",
            str(path),
            "-o",
            str(tmp_path / "o.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert "--shape samples=N" in process.stderr
    assert "[E:onnxruntime" not in process.stderr + process.stdout
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxslim.cli",
            "optimize",
            str(path),
            "-o",
            str(tmp_path / "o.onnx"),
            "--shape",
            "samples=100",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


# An audio CNN behind a reflect pad of 80 samples: pruning observes shapes at a size that runs.
AUDIO_CNN = """
<ir_version: 8, opset_import: ["" : 17]>
audio (float[1, 1, samples] x) => (float[1, 4, frames] y) {
    pads = Constant <value = int64[6] {0, 0, 80, 0, 0, 80}> ()
    padded = Pad <mode = "reflect"> (x, pads)
    w1 = Constant <value = float[8, 1, 3] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        17, 18, 19, 20, 21, 22, 23, 24}> ()
    h = Conv (padded, w1)
    r = Relu (h)
    w2 = Constant <value = float[4, 8, 1] {1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1,
        0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0}> ()
    y = Conv (r, w2)
}
"""


def test_pruning_observes_shapes_at_sizes_that_run() -> None:
    model = parse(AUDIO_CNN)
    assert runnable_sizes(model) == {"samples": 224}
    groups = dependency_groups(model)
    assert [g["prunable"] for g in groups] == [True, False]
    result = StructuredPrune(ratio=0.5, round_to=1)(model)
    assert result.summary["units_removed"] == 4
    assert runs(model, {"samples": 224})


SAMPLE_RATE = """
<ir_version: 8, opset_import: ["" : 17]>
vad (float[1, samples] x, int64 sr) => (float[1, samples] y) {
    rate = Constant <value = int64 {16000}> ()
    is16k = Equal (sr, rate)
    y = Where (is16k, x, x)
}
"""


def test_a_scalar_tested_against_a_constant_takes_that_value() -> None:
    feeds = random_inputs(parse(SAMPLE_RATE), seed=2)
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000
    # odd seeds take a value the test rejects (the other branch): half of it, 8000
    assert int(random_inputs(parse(SAMPLE_RATE), seed=3)["sr"]) == 8000
    assert feeds["x"].shape == (1, 16)
