"""MACs of audio front-ends and control flow: DFT/STFT, Conv inside If, symbolic dims too short
for a kernel (unknown with a reason, never negative); the audio wheels' models count > 0; a
prune that removes nothing says which groups were blocked and by what."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest

from onnxslim.model import model_stats
from onnxslim.runtime import create_session

DFT = """
<ir_version: 8, opset_import: ["" : 17]>
dft (float[1, 16, 1] x) => (float[1, 16, 2] y) {
    y = DFT <axis = 1> (x)
}
"""

STFT = """
<ir_version: 8, opset_import: ["" : 17]>
stft (float[1, 64, 1] x) => (float[1, 4, 9, 2] y) {
    step = Constant <value = int64 {16}> ()
    window = Constant <value = float[16] {1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1}> ()
    y = STFT <onesided = 1> (x, step, window)
}
"""

CONV_IN_IF = """
<ir_version: 8, opset_import: ["" : 17]>
branchy (bool c, float[1, 1, 8] x) => (float[1, 2, ?] y) {
    y = If (c) <
        then_branch = g1 () => (float[1, 2, 6] t) {
            w3 = Constant <value = float[2, 1, 3] {1, 1, 1, 1, 1, 1}> ()
            t = Conv (x, w3)
        },
        else_branch = g2 () => (float[1, 2, 8] e) {
            w1 = Constant <value = float[2, 1, 1] {1, 1}> ()
            e = Conv (x, w1)
        }
    >
}
"""

SHORT_WAVE = """
<ir_version: 8, opset_import: ["" : 17]>
front (float[1, 1, samples] x) => (float[1, 1, frames] y) {
    w = Constant <value = float[1, 1, 8] {1, 1, 1, 1, 1, 1, 1, 1}> ()
    y = Conv (x, w)
}
"""


def _model(text: str, tmp_path: Path) -> tuple[ir.Model, Path]:
    path = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(text), str(path))
    return ir.load(str(path)), path


def test_dft_counts_bins_times_length(tmp_path: Path) -> None:
    model, path = _model(DFT, tmp_path)
    out = create_session(str(path)).run(None, {"x": np.ones((1, 16, 1), np.float32)})[0]
    assert out.shape == (1, 16, 2)  # 16 complex bins, each a sum over 16 real samples
    assert model_stats(model).macs == 16 * 16 * 2


def test_stft_counts_frames_bins_window(tmp_path: Path) -> None:
    model, path = _model(STFT, tmp_path)
    out = create_session(str(path)).run(None, {"x": np.ones((1, 64, 1), np.float32)})[0]
    assert out.shape == (1, 4, 9, 2)
    assert model_stats(model).macs == 4 * 9 * 16 * 2  # frames x bins x window x 2


def test_conv_inside_if_counts_larger_branch(tmp_path: Path) -> None:
    model, path = _model(CONV_IN_IF, tmp_path)
    session = create_session(str(path))
    x = np.ones((1, 1, 8), np.float32)
    assert session.run(None, {"c": np.array(True), "x": x})[0].shape == (1, 2, 6)
    stats = model_stats(model)
    assert stats.macs == 2 * 6 * 3  # then: 12 outputs x 3 taps; else only 2 x 8 x 1
    assert stats.unknown_shape_nodes == []
    assert any("then_branch" in note for note in stats.mac_notes)


def test_symbolic_dim_too_short_is_unknown_not_negative(tmp_path: Path) -> None:
    model, _ = _model(SHORT_WAVE, tmp_path)
    short = model_stats(model, {"samples": 4})  # an 8-tap kernel on 4 samples: length -3
    assert short.macs == 0
    assert len(short.unknown_shape_nodes) == 1
    assert "1x1x-3" in next(iter(short.unknown_reasons.values()))
    assert model_stats(model, {"samples": 16}).macs == 9 * 8


def _site_model(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} wheel not installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not in this {package} wheel")
    return path


def _inspect(path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "onnxslim", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "package, parts",
    [
        ("openwakeword", ("resources", "models", "melspectrogram.onnx")),
        ("silero_vad", ("data", "silero_vad.onnx")),
    ],
)
def test_wheel_audio_models_count_macs(package: str, parts: tuple[str, ...]) -> None:
    info = _inspect(_site_model(package, *parts))
    assert info["macs"] > 0
    assert info["macs_unknown_nodes"] == 0, info["macs_unknown_reasons"]


BLOCKED = """
<ir_version: 8, opset_import: ["" : 17]>
flat (float[1, 3, 8, 8] x) => (float[1, 288] y) {
    w = Constant <value = float[8, 3, 3, 3] {WEIGHTS}> ()
    c = Conv (x, w)
    r = Relu (c)
    shape = Constant <value = int64[2] {1, 288}> ()
    y = Reshape (r, shape)
}
""".replace("WEIGHTS", ", ".join(str((i % 7) / 7 - 0.4) for i in range(8 * 27)))


def test_prune_that_removes_nothing_is_refused_through_the_api_in_its_own_words(
    tmp_path: Path,
) -> None:
    import onnxslim
    from onnxslim.passes import StructuredPrune

    _, path = _model(BLOCKED, tmp_path)
    with pytest.raises(onnxslim.NothingChangedError) as caught:
        onnxslim.Pipeline([StructuredPrune(ratio=0.5)], refuse_no_op=True).run(path)
    assert caught.value.pass_name == "prune"
    assert str(caught.value) == (
        "prune removed nothing: 1 of 1 group(s) blocked by a graph output (1). Nothing was written"
    )  # the command line's flags are the CLI's to name (below)


def test_prune_that_removes_nothing_is_refused_by_the_cli(tmp_path: Path) -> None:
    _, path = _model(BLOCKED, tmp_path)
    before = path.read_bytes()
    out = tmp_path / "out.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "onnxslim", "optimize", str(path), "--prune", "0.5",
         "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # asked to prune, removed nothing: a user error
    assert proc.stderr.splitlines() == [
        "onnxslim: error: prune removed nothing: 1 of 1 group(s) blocked by a graph output (1). "
        "Nothing was written; on the command line that is --prune-round-to, a larger --prune or "
        "smaller --prune-macs/--prune-latency, or no prune flag."
    ]
    assert not out.exists() and path.read_bytes() == before
