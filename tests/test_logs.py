"""No foreign log on the terminal: ORT's C++ log and third-party logging stay ours to tell."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest

from onnxslim._terminal import terminal

RESHAPE_TO_IMPOSSIBLE = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6] x) => (float[N, 5] y) {
  s = Constant<value = int64[2] {-1, 5}>()
  y = Reshape(x, s)
}"""

PAD_REFLECT_TOO_WIDE = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3] x) => (float[1, 13] y) {
  p = Constant<value = int64[4] {0, 5, 0, 5}>()
  y = Pad<mode = "reflect">(x, p)
}"""


def _optimize(model: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxslim.cli", *flags, "optimize", str(model),
         "-o", str(tmp_path / "out.onnx"), "--shape", "N=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("text", [RESHAPE_TO_IMPOSSIBLE, PAD_REFLECT_TOO_WIDE])
def test_ort_failure_is_our_one_line(text: str, tmp_path: Path) -> None:
    model = tmp_path / "bad.onnx"
    onnx.save(onnx.parser.parse_model(text), model)
    process = _optimize(model, tmp_path)
    assert process.returncode == 3, process.stderr
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("onnxslim: error: ONNX Runtime failed to run the input model: ")
    assert "onnxruntime_src" not in lines[0] and "[ONNXRuntimeError]" not in lines[0]
    for foreign in ("[E:onnxruntime", "[W:onnxruntime", "Traceback", "\x1b["):
        assert foreign not in process.stderr and foreign not in process.stdout
    assert not (tmp_path / "out.onnx").exists()


def test_debug_shows_ort_log_through_python(tmp_path: Path) -> None:
    model = tmp_path / "bad.onnx"
    onnx.save(onnx.parser.parse_model(RESHAPE_TO_IMPOSSIBLE), model)
    process = _optimize(model, tmp_path, "--debug")
    assert process.returncode == 3
    assert "WARNING onnxslim.ort: Non-zero status code returned while running Reshape" in (
        process.stderr
    )
    assert "[E:onnxruntime" not in process.stderr and "DEBUG onnxslim" in process.stderr


def test_third_party_logging_stays_off_the_terminal(capsys) -> None:
    with terminal(debug=False, quiet=False):
        for name in ("torch", "onnxscript", "onnx_ir", "onnxruntime", "root", "some.library"):
            logging.getLogger(name).warning("foreign %s", name)
        warnings.warn("a library's UserWarning", UserWarning, stacklevel=1)
        logging.getLogger("onnxslim.passes.x").warning("ours")
        logging.getLogger("some.library").error("a foreign error still shows")
    assert capsys.readouterr().err == (
        "WARNING onnxslim.passes.x: ours\nERROR some.library: a foreign error still shows\n"
    )
    with terminal(debug=True, quiet=False):
        logging.getLogger("torch").info("shown with --debug")
    assert capsys.readouterr().err == "INFO torch: shown with --debug\n"
    logging.getLogger("torch").warning("after the command: not our handler's")
    assert capsys.readouterr().err == ""
