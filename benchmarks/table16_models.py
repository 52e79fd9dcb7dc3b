"""Issue #16's table, model by model, through the CLI: cleanup, ``--prune 0.3``, ``--quantize
int8`` and ``inspect --groups`` on each model of the table, with generated real-ish data.

Models: Silero VAD (silero-vad wheel), openWakeWord melspectrogram / embedding / alexa and
hey_jarvis heads and its bundled Silero VAD (LSTM, torch export) (openwakeword 0.5.1 wheel),
basic-pitch (its ``nmp.onnx``), DenseNet-121 and Inception v2 (the ``onnx`` package's light
test models), torchvision DenseNet-121 and SSDlite (files exported by
``--export`` into FOLDER), GPT-2 and a Llama-style GQA decoder with past_key_values
(``onnxslim.testing``), wav2vec2 and a CREPE-like pitch CNN (``onnxslim._sweep_corpus``).
A model whose wheel or file is missing is skipped and says so.

Data (one ``.npz`` per sample in a folder; 8 calibration samples, 4 others for ``--data``):
speech-like audio (``onnxslim.testing.speech_like_audio``) for the audio models (openWakeWord's
embedding and head get features computed by the models before them), smooth coloured images
(ImageNet-normalised) for the vision models, random token ids with a random cache for decoders.

Per run: exit code, the message on failure, whether stderr holds a traceback or ORT log lines,
parameters before/after and the verified fidelity (from ``--report``).

    # torchvision exports (a venv with torch + torchvision; weights=None):
    /work/tv-venv/bin/python benchmarks/table16_models.py --export /work/notes/table16
    # the table (this project's venv):
    python benchmarks/table16_models.py /work/notes/table16 [--models a,b] [--table out.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

CALIBRATION, VERIFY = 8, 4
ORT_LOG = re.compile(r"\[[EWIV]:onnxruntime|onnxruntime::|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[")
Samples = Callable[[int, int], Iterator[dict[str, np.ndarray]]]  # (count, seed) -> feeds


# ------------------------------------------------------------------------------- export mode


def export_torchvision(folder: Path) -> None:
    """DenseNet-121 and SSDlite320-MobileNetV3 (weights=None), eval mode, opset 17."""
    import torch
    import torchvision

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    densenet = torchvision.models.densenet121(weights=None).eval()
    torch.onnx.export(
        densenet, (torch.randn(1, 3, 224, 224),), str(folder / "torchvision-densenet121.onnx"),
        dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip

    ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None
    ).eval()

    class Single(torch.nn.Module):  # the detection API takes a list of [3, H, W] images
        def __init__(self) -> None:
            super().__init__()
            self.model = ssd

        def forward(self, image):
            out = self.model([image])[0]
            return out["boxes"], out["scores"], out["labels"]

    torch.onnx.export(
        Single().eval(), (torch.rand(3, 320, 320),), str(folder / "torchvision-ssdlite320.onnx"),
        dynamo=False, opset_version=17, input_names=["image"],
        output_names=["boxes", "scores", "labels"],
    )  # fmt: skip
    print(f"exported to {folder}")


# -------------------------------------------------------------------------------------- data


def _audio(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    from onnxslim.testing import speech_like_audio

    return speech_like_audio(seconds, sample_rate=rate, seed=seed).audio


def _chunks(width: int, rate: int = 16000) -> Samples:
    def samples(count: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        audio = _audio(count * width / rate + 1.0, seed, rate)
        for i in range(count):
            yield {"": audio[i * width : (i + 1) * width][None]}

    return samples


def _images(size: int, batch: bool = True, normalise: bool = True) -> Samples:
    def samples(count: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size] / size
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        for _ in range(count):
            image = np.zeros((size, size, 3))
            for _ in range(6):  # soft coloured blobs on a gradient
                cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.3)]
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
                image += blob[..., None] * rng.uniform(0, 1, 3)
            image += (yy[..., None] * rng.uniform(0, 0.5, 3)) + rng.normal(0, 0.02, image.shape)
            image = np.clip(image / max(image.max(), 1e-6), 0, 1)
            image = (image - mean) / std if normalise else image  # SSDlite normalises itself
            chw = image.transpose(2, 0, 1).astype(np.float32)
            yield {"": chw[None] if batch else chw}

    return samples


def _silero(count: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    audio = _audio(count * 512 / 16000 + 1.0, seed)
    for i in range(count):
        yield {
            "input": audio[i * 512 : (i + 1) * 512][None],
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(16000, np.int64),
        }


def _silero_v4(count: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """openWakeWord's bundled Silero VAD (torch export, LSTM state h/c [2, batch, 64])."""
    audio = _audio(count * 512 / 16000 + 1.0, seed)
    for i in range(count):
        yield {
            "input": audio[i * 512 : (i + 1) * 512][None],
            "sr": np.array(16000, np.int64),
            "h": np.zeros((2, 1, 64), np.float32),
            "c": np.zeros((2, 1, 64), np.float32),
        }


def _oww_features(kind: str, wheel: Path) -> Samples:
    """openWakeWord's chain: audio -> melspectrogram (x/10 + 2) -> embedding windows -> head."""

    def samples(count: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        mel = ort.InferenceSession(str(wheel / "melspectrogram.onnx"), options)
        emb = ort.InferenceSession(str(wheel / "embedding_model.onnx"), options)
        audio = _audio(count * 0.2 + 3.0, seed)
        frames = mel.run(None, {"input": audio[None]})[0][:, 0] / 10 + 2  # [T, F, 32]
        frames = frames.reshape(-1, 32)
        windows = [frames[i : i + 76] for i in range(0, len(frames) - 76, 8)]
        if kind == "embedding":
            for i in range(count):
                yield {"": windows[i % len(windows)][None, :, :, None].astype(np.float32)}
            return
        batch = np.stack(windows)[..., None].astype(np.float32)
        embeddings = emb.run(None, {"input_1": batch})[0].reshape(len(windows), 96)
        for i in range(count):
            start = i % max(len(embeddings) - 16, 1)
            yield {"": embeddings[start : start + 16][None]}

    return samples


def _decoder(model: object, past_length: int = 3) -> Samples:
    def samples(count: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
        from onnxslim.testing import decoder_feeds

        rng = np.random.default_rng(seed + 1)
        for i in range(count):
            empty = decoder_feeds(model, tokens=4, seed=seed + i)
            past = {
                k: rng.normal(0, 1, (*v.shape[:2], past_length, v.shape[3])).astype(np.float32)
                for k, v in empty.items()
                if k.startswith("past_key_values")
            }
            yield decoder_feeds(model, tokens=4, past=past, seed=seed + i)

    return samples


def write_samples(samples: Samples, inputs: list[str], folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, feeds in enumerate(samples(count, seed)):
        named = {(inputs[0] if k == "" else k): v for k, v in feeds.items()}
        np.savez(folder / f"{i:03d}.npz", **named)  # type: ignore[arg-type]
    return folder


# ------------------------------------------------------------------------------------ models


def _site(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return (
        Path(spec.submodule_search_locations[0])
        if spec and spec.submodule_search_locations
        else None
    )


def _built(work: Path, name: str) -> Callable[[], Path]:
    def build() -> Path:
        from onnxslim._sweep_corpus import exported_models

        return exported_models(work / "built", [name])[0].path

    return build


def _decoder_file(work: Path, family: str) -> tuple[Callable[[], Path], Samples]:
    from onnxslim.testing import export_decoder, gpt2_decoder, llama_style_decoder

    model = gpt2_decoder() if family == "gpt2" else llama_style_decoder()
    path = work / "built" / f"{family}-kv.onnx"

    def build() -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path if path.is_file() else Path(export_decoder(model, path))

    return build, _decoder(model)


def model_table(folder: Path, work: Path) -> list[tuple[str, Callable[[], Path | None], Samples]]:
    """(name, a function giving the .onnx path or None when missing, the sample generator)."""
    silero, oww, pitch, onnx_pkg = (
        _site(p) for p in ("silero_vad", "openwakeword", "basic_pitch", "onnx")
    )
    oww_models = oww / "resources" / "models" if oww else Path("/missing")
    light = onnx_pkg / "backend" / "test" / "data" / "light" if onnx_pkg else Path("/missing")

    def file(path: Path | None) -> Callable[[], Path | None]:
        return lambda: path if path is not None and path.is_file() else None

    rows: list[tuple[str, Callable[[], Path | None], Samples]] = [
        ("silero-vad", file(silero and silero / "data" / "silero_vad.onnx"), _silero),
        ("oww-melspectrogram", file(oww_models / "melspectrogram.onnx"), _chunks(16000)),
        ("oww-embedding", file(oww_models / "embedding_model.onnx"), _oww_features("embedding", oww_models)),
        ("oww-alexa", file(oww_models / "alexa_v0.1.onnx"), _oww_features("head", oww_models)),
        ("oww-hey-jarvis", file(oww_models / "hey_jarvis_v0.1.onnx"), _oww_features("head", oww_models)),
        ("oww-silero-vad", file(oww_models / "silero_vad.onnx"), _silero_v4),
        ("basic-pitch", file(pitch and pitch / "saved_models" / "icassp_2022" / "nmp.onnx"),
         lambda n, s: ({"": v[..., None]} for v in (f[""] for f in _chunks(43844, 22050)(n, s)))),
        ("onnx-light-densenet121", file(light / "light_densenet121.onnx"), _images(224)),
        ("onnx-light-inception_v2", file(light / "light_inception_v2.onnx"), _images(224)),
        ("torchvision-densenet121", file(folder / "torchvision-densenet121.onnx"), _images(224)),
        ("torchvision-ssdlite320", file(folder / "torchvision-ssdlite320.onnx"), _images(320, batch=False, normalise=False)),
        ("crepe-style", _built(work, "crepe-style"), _chunks(1024)),
        ("wav2vec2", _built(work, "wav2vec2"), _chunks(16000)),
    ]  # fmt: skip
    if importlib.util.find_spec("transformers") is not None:
        for family in ("gpt2", "llama-gqa"):
            build, samples = _decoder_file(work, family)
            rows.append((f"{family}-kv", build, samples))
    return rows


# ------------------------------------------------------------------------------------- runs


def _cli(args: list[str], timeout: float) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "onnxslim", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = -9, str(exc.stdout or ""), f"timed out after {timeout:.0f} s"
    return code, out, err, time.perf_counter() - start


def _int8_nodes(path: Path) -> int:
    import onnx

    if not path.is_file():
        return 0
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(
        n.op_type in ("QuantizeLinear", "MatMulInteger", "QLinearConv", "MatMulNBits")
        for n in graph.node
    )


def _note(out: str, step: str) -> str:
    """The pass's summary block on stdout (``step: ...`` and its indented lines)."""
    lines, inside = [], False
    for line in out.splitlines():
        if line.startswith(f"{step}:"):
            inside = True
        elif inside and not line.startswith(" "):
            break
        if inside:
            lines.append(line.strip())
    return " ".join(lines)[:400]


def _message(code: int, out: str, err: str) -> str:
    if code == 0:
        return ""
    lines = [line for line in (err or out).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_model(name: str, path: Path, samples: Samples, work: Path, timeout: float) -> list[dict]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    calib = write_samples(samples, inputs, work / name / "calibration", CALIBRATION, 0)
    verify = write_samples(samples, inputs, work / name / "verify", VERIFY, 100)
    runs = {
        "cleanup": [],
        "prune 0.3": ["--prune", "0.3"],
        "int8": ["--quantize", "int8", "--calibration", str(calib)],
    }
    results = []
    for label, extra in runs.items():
        out_path, report = (
            work / name / f"{label.replace(' ', '_')}.onnx",
            work / name / f"{label}.json",
        )
        report.unlink(missing_ok=True)
        args = ["optimize", str(path), "-o", str(out_path), "--data", str(verify), "--overwrite"]
        code, out, err, wall = _cli([*args, *extra, "--report", str(report)], timeout)
        row = {"model": name, "run": label, "exit": code, "wall_s": round(wall, 1),
               "message": _message(code, out, err), "traceback": "Traceback" in err + out,
               "ort_log": bool(ORT_LOG.search(err + out))}  # fmt: skip
        if code == 0 and report.is_file():
            stages = json.loads(report.read_text())["stages"]
            row["params_before"], row["params_after"] = (
                stages[0]["parameters"],
                stages[-1]["parameters"],
            )
            row["params_cleanup"] = stages[1]["parameters"]  # constants folded: the real count
            fidelity = stages[-1].get("fidelity") or {}
            row["sqnr_db"], row["top1"] = fidelity.get("sqnr_db"), fidelity.get("top1_agreement")
            row["nodes"] = [stages[0]["nodes"], stages[-1]["nodes"]]
            row["stages"] = [s["stage"] for s in stages[1:]]
            row["int8_nodes"] = _int8_nodes(out_path)
        step = label.split()[0].replace("int8", "quantize")
        row["note"] = _note(out, step)
        (work / name / f"{label}.log").write_text(
            f"$ onnxslim {' '.join(args + extra)}\n{out}\n--- stderr\n{err}"
        )
        results.append(row)
        print(json.dumps(row), flush=True)
    code, out, err, wall = _cli(["inspect", str(path), "--groups"], timeout)
    head = [line for line in out.splitlines() if line.strip()][:10]
    row = {"model": name, "run": "inspect --groups", "exit": code, "wall_s": round(wall, 1),
           "message": _message(code, out, err), "traceback": "Traceback" in err + out,
           "ort_log": bool(ORT_LOG.search(err + out)), "head": head}  # fmt: skip
    results.append(row)
    print(json.dumps(row), flush=True)
    return results


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def write_table(rows: list[dict], skipped: list[str], path: Path) -> None:
    lines = [
        "| model | run | exit | params before -> after | SQNR dB | top-1 | Q nodes | tb | ORT log | wall s | message / pass note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = f"{r['params_before']:,} -> {r['params_after']:,}" if "params_before" in r else "-"
        if (
            "params_before" in r
            and r.get("params_cleanup", r["params_before"]) != r["params_before"]
        ):
            params = f"{r['params_before']:,} stored, {r['params_cleanup']:,} folded -> {r['params_after']:,}"
        if "params_before" in r and r["run"] == "prune 0.3":
            params += f" ({1 - r['params_after'] / max(r.get('params_cleanup', r['params_before']), 1):.1%} removed)"
        message = (r["message"] or r.get("note", "")).replace("|", "\\|")
        lines.append(
            f"| {r['model']} | {r['run']} | {r['exit']} | {params} | {_fmt(r.get('sqnr_db'))} | "
            f"{_fmt(r.get('top1'))} | {_fmt(r.get('int8_nodes'))} | {'YES' if r['traceback'] else 'no'} | "
            f"{'YES' if r['ort_log'] else 'no'} | {r['wall_s']} | {message} |"
        )
    lines += [""] + [f"- skipped: {s}" for s in skipped]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of the exported torchvision files")
    parser.add_argument("--export", action="store_true", help="export torchvision models to folder")
    parser.add_argument("--models", help="comma-separated names (default: all)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: folder/work)")
    parser.add_argument("--table", type=Path, help="markdown table (default: folder/table.md)")
    parser.add_argument("--json", type=Path, help="rows as JSON (default: folder/table.json)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per CLI run")
    args = parser.parse_args()
    if args.export:
        export_torchvision(args.folder)
        return
    work = args.work or args.folder / "work"
    wanted = set(args.models.split(",")) if args.models else None
    rows, skipped = [], []
    for name, locate, samples in model_table(args.folder, work):
        if wanted is not None and name not in wanted:
            continue
        path = locate()
        if path is None:
            skipped.append(f"{name}: its wheel or file is missing")
            print(f"{name}: skipped (its wheel or file is missing)", flush=True)
            continue
        rows += run_model(name, path, samples, work, args.timeout)
    json_path = args.json or args.folder / "table.json"
    json_path.write_text(json.dumps(rows, indent=1))
    write_table(rows, skipped, args.table or args.folder / "table.md")


if __name__ == "__main__":
    main()
