"""The command line: exit codes, one-line errors without tracebacks, inputs never damaged."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from onnxslim.cli import main


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxslim.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_optimize_writes_model_and_report(conv_bn_path: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    before = digest(conv_bn_path)
    process = cli("optimize", str(conv_bn_path), "-o", str(out), "--report", str(report))
    assert process.returncode == 0, process.stderr
    assert "cleanup" in process.stdout and f"wrote {out}" in process.stdout
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Conv", "Relu"]
    stages = json.loads(report.read_text())["stages"]
    assert [s["stage"] for s in stages] == ["input", "cleanup"]
    assert digest(conv_bn_path) == before


def test_optimize_with_recipe_in_process(conv_bn_path: Path, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[passes]]\nname = "cleanup"\ntarget_opset = 15\n')
    code = main(
        [
            "optimize",
            str(conv_bn_path),
            "-o",
            str(tmp_path / "o.onnx"),
            "--recipe",
            str(recipe),
            "-q",
        ]
    )
    assert code == 0 and capsys.readouterr().out == ""
    assert onnx.load(tmp_path / "o.onnx").opset_import[0].version == 15


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a model", "not a valid ONNX model"),
        (None, "no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "in.onnx"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.onnx"
    process = cli("optimize", str(path), "-o", str(out))
    assert process.returncode == 2
    assert message in process.stderr and "Traceback" not in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
    assert not out.exists()
    if content is not None:
        assert path.read_bytes() == content


def test_unknown_pass_exit_2(conv_bn_path: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "optimize",
                str(conv_bn_path),
                "-o",
                str(tmp_path / "o.onnx"),
                "--passes",
                "cleanup,shrink",
            ]
        )
        == 2
    )
    assert "unknown pass 'shrink'" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_refuses_to_overwrite_input(conv_bn_path: Path, capsys) -> None:
    before = digest(conv_bn_path)
    assert main(["optimize", str(conv_bn_path), "-o", str(conv_bn_path)]) == 2
    assert "would overwrite the input model" in capsys.readouterr().err
    assert digest(conv_bn_path) == before


def test_bad_shape_flag(conv_bn_path: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "optimize",
                str(conv_bn_path),
                "-o",
                str(tmp_path / "o.onnx"),
                "--shape",
                "x=1x3xeight",
            ]
        )
        == 2
    )
    assert "--shape 'x=1x3xeight': sizes must be integers" in capsys.readouterr().err


def test_missing_provider_exit_2(conv_bn_path: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "optimize",
                str(conv_bn_path),
                "-o",
                str(tmp_path / "o.onnx"),
                "--providers",
                "tensorrt",
            ]
        )
        == 2
    )
    assert "'tensorrt' is not available" in capsys.readouterr().err


def test_inspect(conv_bn_path: Path, capsys) -> None:
    assert main(["inspect", str(conv_bn_path), "--shape", "N=2"]) == 0
    text = capsys.readouterr().out
    assert "input       x: FLOAT [N, 3, 8, 8]" in text
    assert f"MACs:       {2 * 4 * 8 * 8 * 27:,} (at x=2x3x8x8)" in text
    assert "BatchNormalization" in text and "external:   none" in text
    assert main(["inspect", str(conv_bn_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 4 * 27 + 16 and info["op_histogram"]["Conv"] == 1


def test_sigterm_leaves_no_output(resnet_bn_path: Path, tmp_path: Path) -> None:
    # a slow-enough run: many verification samples; SIGTERM arrives mid-run
    out = tmp_path / "out.onnx"
    # a private temp folder: another process's onnxslim-run-* folder must not look like ours
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onnxslim.cli",
            "optimize",
            str(resnet_bn_path),
            "-o",
            str(out),
            "--shape",
            "batch=64",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )
    # signal only once the run is under way (imports done, handler installed): the verification
    # temp folder appears when the pipeline starts
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name.startswith("onnxslim-run-") for p in private_tmp.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 130 and "no output was written" in stderr
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.onnx")] == []


def test_demo_runs_and_prints_recipe(tmp_path: Path) -> None:
    process = cli("demo", "--quick", "--output-dir", str(tmp_path / "demo"))
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    header = next(line for line in lines if line.startswith("stage"))
    assert header.split() == [
        "stage",
        "params",
        "MACs",
        "size",
        "p50",
        "b1",
        "p50",
        "b32",
        "speed",
        "b1",
        "speed",
        "b32",
        "accuracy",
        "agrees",
        "w/",
        "input",
    ]
    stages = [line.split()[0] for line in lines[lines.index(header) + 2 :][:5]]
    assert stages == ["input", "cleanup", "prune", "distill", "quantize"]
    for name in (
        "report.json",
        "report.html",
        "digits_resnet.slim.onnx",
        "stages/04-quantize.onnx",
    ):
        assert (tmp_path / "demo" / name).is_file(), name
    recipe = cli("demo", "--recipe", "--output-dir", str(tmp_path / "demo"))
    assert recipe.returncode == 0
    for name in ("cleanup", "prune", "distill", "quantize"):
        assert f'name = "{name}"' in recipe.stdout
    # the printed recipe is valid: every pass and option is accepted
    import onnxslim

    toml = tmp_path / "demo.toml"
    toml.write_text(
        "\n".join(line for line in recipe.stdout.splitlines() if not line.startswith("#"))
    )
    assert len(onnxslim.load_recipe(toml).passes) == 4


def test_optimize_with_bench_and_gates(conv_bn_path: Path, tmp_path: Path, capsys) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    args = [
        "optimize",
        str(conv_bn_path),
        "-o",
        str(out),
        "--report",
        str(report),
        "--bench",
        "cpu",
    ]
    assert main([*args, "--max-size-ratio", "2.0"]) == 0
    document = json.loads(report.read_text())
    assert [m["model"] for m in document["benchmark"]["measurements"]] == ["input", "output"]
    page = out.with_suffix(".bench.html").read_text()
    assert page.count("<svg") >= 1
    # the per-pass table next to the charts: figures and the pass's own account
    assert "<h2>Passes</h2><h3>cleanup</h3>" in page.replace("\n", "")
    assert "<td>what it did</td><td>4 -&gt; 2 nodes (2 folded, fused or removed).</td>" in page
    capsys.readouterr()
    # the cleaned model is smaller than its input: a size ratio bound of 0.5 must fail with exit 4
    assert main([*args, "--max-size-ratio", "0.5"]) == 4
    assert "gate failed: output on CPU batch 1: file size ratio" in capsys.readouterr().err


def test_optimize_prune_flags_and_inspect_groups(
    resnet_bn_path: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "pruned.onnx"
    assert (
        main(
            [
                "optimize",
                str(resnet_bn_path),
                "-o",
                str(out),
                "--prune",
                "0.5",
                "--prune-round-to",
                "4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    # the summary reads as sentences now (issue 14); pruned_groups stays a key of the JSON report
    assert "prune" in text and "prune: Pruned " in text and "prunable group(s)" in text
    assert "pruned_groups=" not in text and "key=value" not in text
    widths = sorted(
        {
            onnx.numpy_helper.to_array(t).shape[0]
            for t in onnx.load(out).graph.initializer
            if t.name.endswith("weight") and len(t.dims) == 4
        }
    )
    assert (
        all(width % 4 == 0 for width in widths) and max(widths) <= 8
    )  # 8/16 halved, multiples of 4
    assert main(["inspect", str(resnet_bn_path), "--groups"]) == 0
    listing = capsys.readouterr().out
    assert (
        "pruning groups:" in listing and "blocked: " in listing and "is a graph output" in listing
    )


def test_quantize_flags_reach_the_pass() -> None:
    from onnxslim.cli import _passes_from_flags, build_parser

    args = build_parser().parse_args(
        [
            "optimize", "m.onnx", "-o", "out.onnx", "--quantize", "int8",
            "--calibration", "random:8", "--latency-batch", "16", "--quant-exclude", "op:Add",
        ]
    )  # fmt: skip
    quantize = _passes_from_flags(args)[-1]
    assert (quantize.name, quantize.latency_batch, quantize.exclude) == ("quantize", 16, ["op:Add"])
