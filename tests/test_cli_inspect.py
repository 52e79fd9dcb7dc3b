"""``onnxslim inspect`` sees the model as the passes do (after cleanup); a closed stdout ends quietly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnx.parser
import pytest

from onnxslim._io import load
from onnxslim._pass import PassContext, run_pass
from onnxslim.cli import STDOUT_CLOSED_EXIT_CODE, main
from onnxslim.model import parameter_count
from onnxslim.registry import get_pass_class

W1 = ", ".join(str(float(i % 7) - 3) for i in range(4 * 3 * 3 * 3))
# conv weights held the ways exporters write them: a flat Constant reshaped, a value_floats
# Constant, a ConstantOfShape; no initializer at all
CONSTANT_WEIGHTS_TEXT = f"""
<ir_version: 8, opset_import: ["" : 17]>
agraph (float[1, 3, 8, 8] x) => (float[1, 2, 8, 8] y) {{
  flat = Constant <value = float[108] {{{W1}}}> ()
  shape1 = Constant <value = int64[4] {{4, 3, 3, 3}}> ()
  w1 = Reshape (flat, shape1)
  b1 = Constant <value_floats = [0.1, -0.2, 0.3, -0.4]> ()
  h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
  r = Relu (h)
  shape2 = Constant <value = int64[4] {{2, 4, 1, 1}}> ()
  w2 = ConstantOfShape <value = float[1] {{0.5}}> (shape2)
  y = Conv (r, w2)
}}
"""


@pytest.fixture
def constant_weights_path(tmp_path: Path) -> Path:
    model = onnx.parser.parse_model(CONSTANT_WEIGHTS_TEXT)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "constant_weights.onnx"
    onnx.save(model, path)
    return path


def test_inspect_groups_are_those_the_prune_pass_sees(
    constant_weights_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(constant_weights_path), "--groups", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["groups_after"] == "cleanup"
    assert [(g["size"], g["prunable"]) for g in info["groups"]] == [(4, True), (2, False)]
    # the same model through Cleanup then StructuredPrune, as `optimize --prune` runs it
    model = load(str(constant_weights_path))
    run_pass(get_pass_class("cleanup")(), model, PassContext())
    summary = run_pass(get_pass_class("prune")(ratio=0.5), model, PassContext()).summary
    assert (summary["groups"], summary["prunable_groups"]) == (2, 1)
    assert main(["inspect", str(constant_weights_path), "--groups"]) == 0
    text = capsys.readouterr().out
    assert "pruning groups: 2 (1 prunable; after cleanup, as the prune pass sees them)" in text
    assert "  #0    size 4     w1[0]  [prunable]" in text


def test_inspect_counts_weights_held_in_constant_nodes(
    constant_weights_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # stored: the 108 of the `value` Constant and the value_floats bias (4); the
    # ConstantOfShape weight (2*4) exists once cleanup folds it
    assert parameter_count(load(str(constant_weights_path))) == 108 + 4
    assert main(["inspect", str(constant_weights_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["parameters"], info["parameters_stored"]) == (108 + 4 + 8, 108 + 4)
    assert info["cleanup_note"] is None and info["nodes"] == 9
    assert main(["inspect", str(constant_weights_path)]) == 0
    text = capsys.readouterr().out
    assert "parameters: 120 (after cleanup folds constants; 112 stored as tensors)\n" in text


def test_inspect_parameters_of_batchnorm_model_unchanged(
    conv_bn_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # BatchNormalization's weights are parameters of the file: inspect does not fuse them away
    assert main(["inspect", str(conv_bn_path)]) == 0
    assert "parameters: 124\n" in capsys.readouterr().out


def _closed_stdout_run(*args: str, cwd: Path) -> tuple[int, str]:
    """Runs the command with a reader that closes stdout before anything is printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "onnxslim.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head` that has read all it wants
    stderr = process.stderr.read().decode()
    return process.wait(timeout=300), stderr


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "--groups", "{model}"],
        ["inspect", "--json", "{model}"],
        ["optimize", "{model}", "-o", "out.onnx"],
        ["bench", "{model}", "--runs", "3", "--warmup", "1", "--no-coverage"],
        ["demo", "--recipe"],
    ],
    ids=["inspect-groups", "inspect-json", "optimize", "bench", "demo-recipe"],
)
def test_closed_stdout_ends_quietly_with_141(
    command: list[str], constant_weights_path: Path, tmp_path: Path
) -> None:
    args = [part.replace("{model}", str(constant_weights_path)) for part in command]
    code, stderr = _closed_stdout_run(*args, cwd=tmp_path)
    assert STDOUT_CLOSED_EXIT_CODE == 141
    assert (code, stderr) == (141, "")
    if command[0] == "optimize":  # the model is written before the table is printed
        assert onnx.load(tmp_path / "out.onnx").graph.node[0].op_type == "Conv"
