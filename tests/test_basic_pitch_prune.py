"""basic-pitch (the basic-pitch wheel's ``nmp.onnx``, a TF -> ONNX audio CNN) prunes at 0.3 on
real-range audio: its note head's 32 channels share a Concat with the 1-channel onset output, a
graph output that a Reshape squeezes; that channel is pinned and the 32 prune. Verified, smaller,
one line on stderr at most. ``--prune-round-to 8`` is given so the counts hold on any CPU (at the
AVX-512 default of 16, 0.3 of a 32-wide group keeps all 32: the pass says so)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim._io import load
from onnxslim.model import parameter_count
from onnxslim.testing import speech_like_audio

_WIDTH, _RATE = 43844, 22050  # the model's fixed input: about 2 s at 22.05 kHz


def _model() -> Path:
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the basic-pitch wheel is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "saved_models" / "icassp_2022" / "nmp.onnx"


def _audio(folder: Path, name: str, count: int) -> Path:
    folder.mkdir()
    clip = speech_like_audio(count * _WIDTH / _RATE + 0.5, sample_rate=_RATE, seed=3)
    for index in range(count):
        chunk = clip.audio[index * _WIDTH : (index + 1) * _WIDTH].astype(np.float32)
        np.savez(folder / f"{index}.npz", **{name: chunk[None, :, None]})
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxslim", *args], capture_output=True, text=True, timeout=300
    )


def test_basic_pitch_prunes_through_the_pinned_concat(tmp_path: Path) -> None:
    source = _model()
    name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    data = _audio(tmp_path / "audio", name, 4)
    out, report = tmp_path / "pruned.onnx", tmp_path / "report.json"
    proc = _cli("optimize", str(source), "-o", str(out), "--prune", "0.3",
                "--prune-round-to", "8", "--data", str(data), "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "onnxruntime" not in proc.stderr
    stages = {s["stage"]: s for s in json.loads(report.read_text())["stages"]}
    summary = stages["prune"]["summary"]
    assert (summary["prunable_groups"], summary["pruned_groups"]) == (3, 2)
    assert sorted(kept for kept in summary["channels_kept"].values() if kept[0] != kept[1]) == [
        [32, 24],
        [32, 24],
    ]
    assert stages["cleanup"]["parameters"] == 35703
    assert stages["prune"]["parameters"] == parameter_count(load(out)) == 33455
    onnx.checker.check_model(str(out))


def test_basic_pitch_at_round_to_16_is_refused_in_one_line(tmp_path: Path) -> None:
    source = _model()
    out = tmp_path / "out.onnx"
    proc = _cli("optimize", str(source), "-o", str(out), "--prune", "0.3",
                "--prune-round-to", "16")  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # asked to prune, removed nothing: exit 2
    (line,) = [line for line in proc.stderr.splitlines() if "removed nothing" in line]
    assert line == (
        "onnxslim: error: prune removed nothing: 1 of 7 group(s) blocked by Shape reads axis N "
        "(1); 3 group(s) have a single unit (nothing to cut); 3 group(s) are prunable (width 32, "
        "8, 32), but at this ratio/target and round_to=16 none keeps a smaller multiple of "
        "round_to; ask for more (a larger ratio or a smaller target) or set round_to lower (1 "
        "keeps any width). Nothing was written; on the command line that is --prune-round-to, a "
        "larger --prune or smaller --prune-macs/--prune-latency, or no prune flag."
    )
    assert not out.exists()
    assert "Traceback" not in proc.stderr and "onnxruntime" not in proc.stderr
