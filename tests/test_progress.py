"""Progress bars: drawn with an ETA on a terminal, never when piped or quiet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onnxslim import progress
from onnxslim.data import demo_data, demo_model_path
from onnxslim.passes.distillation._progress import Progress
from onnxslim.runtime import interleaved_timing

BAR = re.compile(r"\d+%\|")  # tqdm's "40%|████" with a known total
ETA = re.compile(r"ETA \d\d:\d\d")


@pytest.fixture(scope="module")
def command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """optimize with distillation (2 epochs on 32 samples) and quantization (8 samples)."""
    folder = tmp_path_factory.mktemp("progress")
    data = demo_data()
    np.savez(folder / "train.npz", image=data["train_images"][:32])
    np.savez(folder / "cal.npz", image=data["calibration_images"][:8])
    return [
        sys.executable, "-m", "onnxslim.cli", "optimize", str(demo_model_path()),
        "-o", str(folder / "out.onnx"), "--distill", str(folder / "train.npz"),
        "--distill-epochs", "2", "--quantize", "int8", "--calibration", str(folder / "cal.npz"),
        "--no-latency-guard",  # keeps the three runs short; its timing is not what is tested
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ONNXSLIM_PROGRESS")}
    return env


def _on_terminal(args: list[str]) -> tuple[int, str, str]:
    """Runs ``args`` with stderr on a pseudo-terminal; (exit code, stdout, stderr as drawn)."""
    main, child = os.openpty()
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child, env=_environment()
    )
    os.close(child)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    out = process.stdout.read().decode() if process.stdout else ""
    # the terminal turns each "\n" into "\r\n"; a bare "\r" is what a bar draws
    err = drawn.decode(errors="replace").replace("\r\n", "\n")
    return process.wait(timeout=300), out, err


def test_terminal_shows_bars_with_eta(command: list[str]) -> None:
    code, out, err = _on_terminal(command)
    assert code == 0, err
    assert BAR.search(err) and ETA.search(err), err[-2000:]
    # the distillation bar: steps with epoch, loss and the last validated SQNR
    assert re.search(r"distill: +\d+%\|.*\d/\d step .*ETA \d\d:\d\d, epoch=\d/2, loss=", err)
    assert "SQNR=" in err and "optimize:" in err
    assert "wrote " in out and "\r" not in out  # the bars never touch stdout


def test_piped_shows_no_bar(command: list[str]) -> None:
    process = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=_environment()
    )
    assert process.returncode == 0, process.stderr
    for text in (process.stderr, process.stdout):
        assert "\r" not in text and "█" not in text and "ETA" not in text
        assert not BAR.search(text)
    assert "optimize:" not in process.stderr and "[1/3]" not in process.stderr


def test_quiet_on_terminal_shows_no_bar(command: list[str]) -> None:
    code, out, err = _on_terminal([*command, "--quiet"])
    assert code == 0, err
    assert out == ""
    assert "\r" not in err and "█" not in err and "ETA" not in err and not BAR.search(err)
    assert "optimize:" not in err and "[1/3]" not in err


def test_timing_rounds_bar(capsys, monkeypatch) -> None:
    monkeypatch.setenv("ONNXSLIM_PROGRESS", "1")

    def run(index: int) -> None:
        time.sleep(0.06)  # the bar redraws at most every 0.2 s

    timing = interleaved_timing([run, run], rounds=5, progress="timing")
    assert timing.rounds == 5
    err = capsys.readouterr().err
    assert re.search(r"timing: +\d+%\|.*\| [1-5]/5 round \[00:00, ETA 00:00\]", err), err
    interleaved_timing([lambda i: None], rounds=3)  # no label: no bar
    assert capsys.readouterr().err == ""


def test_switches(monkeypatch, capsys) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("ONNXSLIM_PROGRESS", "1")
    assert progress.enabled() and not progress.enabled(False)
    progress.set_quiet(True)
    try:
        assert not progress.enabled() and not progress.enabled(True)
        with progress.task("never", total=3) as bar:
            bar.advance(3)
            assert not bar.active
    finally:
        progress.set_quiet(False)
    monkeypatch.setenv("ONNXSLIM_PROGRESS", "0")
    assert not progress.enabled(True)
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("ONNXSLIM_PROGRESS")
    assert not progress.enabled() and progress.enabled(True)
    assert capsys.readouterr().err == ""


def test_distillation_progress_reads_the_loop_lines(monkeypatch, capsys) -> None:
    monkeypatch.setenv("ONNXSLIM_PROGRESS", "1")
    line = Progress(None)
    for epoch in (1, 2):
        for batch in (1, 2):
            line.update(f"distill epoch {epoch}/2 batch {batch}/2 loss 0.{epoch}{batch}")
        line.done(f"distill epoch {epoch}/2 loss 0.{epoch}2 max|Δ| 0.5, SQNR 2{epoch}.0 dB")
    err = capsys.readouterr().err
    assert "distill epoch 1/2 loss 0.12 max|Δ| 0.5, SQNR 21.0 dB\n" in err
    assert "4/4 step" in err and "epoch=2/2, loss=0.22, SQNR=21.0 dB" in err
    silent = Progress(False)
    silent.update("distill epoch 1/1 batch 1/1 loss 1")
    silent.done("distill epoch 1/1 loss 1")
    assert capsys.readouterr().err == ""


def test_stage_lines_only_on_terminal(tmp_path: Path, conv_bn_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "onnxslim.cli", "optimize", str(conv_bn_path), "-o",
         str(tmp_path / "o.onnx")],
        capture_output=True, text=True, timeout=300, env=_environment(),
    )  # fmt: skip
    assert process.returncode == 0 and "[1/1]" not in process.stderr
    code, _, err = _on_terminal(
        [sys.executable, "-m", "onnxslim.cli", "optimize", str(conv_bn_path), "-o",
         str(tmp_path / "t.onnx")]
    )  # fmt: skip
    assert code == 0 and "[1/1] cleanup:" in err and "optimize:" in err
