"""onnxslim QuantizeStatic vs ONNX Runtime's quantize_static, side by side.

Same model, same calibration samples, per method (minmax, percentile, entropy):
calibration wall time and peak RSS (each calibration runs in its own subprocess; ru_maxrss),
output fidelity on held-out samples (SQNR, top-1 where outputs are class scores, IoU of the
text map for PP-OCR det), and the int8/fp32 speed (fp32 time / int8 time, interleaved medians,
spinning off). ORT runs with its best CPU configuration (U8 activations, S8 per-channel
weights, reduce_range, opset upgraded); onnxslim runs with its defaults.

    python benchmarks/quant_vs_ort.py                      # all models, all methods
    python benchmarks/quant_vs_ort.py --models resnet18,ppocr_det --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("resnet18", "mobilenetv2", "bert", "ppocr_det")
METHODS = ("minmax", "percentile", "entropy")


# -- models and data -------------------------------------------------------------------------
def build_model(name: str, folder: Path, quick: bool) -> tuple[Path, dict]:
    import torch

    from onnxslim import testing

    torch.manual_seed(0)
    if name == "resnet18":
        size = 160 if quick else 224
        path = testing.export_torch(
            testing.resnet18_style(),
            (torch.randn(1, 3, size, size),),
            folder / "resnet18.onnx",
            input_names=["x"],
        )
        return path, {"x": (3, size, size)}
    if name == "mobilenetv2":
        size = 160 if quick else 224
        path = testing.export_torch(
            testing.mobilenetv2_style(),
            (torch.randn(1, 3, size, size),),
            folder / "mobilenetv2.onnx",
            input_names=["x"],
        )
        return path, {"x": (3, size, size)}
    if name == "bert":
        seq = 64 if quick else 128
        module = testing.bert_style_encoder(
            hidden=256, heads=4, layers=4, intermediate=1024, num_classes=10
        )
        ids = torch.randint(0, 1000, (1, seq))
        mask = torch.ones(1, seq, dtype=torch.int64)
        path = testing.export_torch(
            module, (ids, mask), folder / "bert.onnx", input_names=["input_ids", "attention_mask"]
        )
        return path, {"input_ids": (seq,), "attention_mask": (seq,)}
    if name == "ppocr_det":
        path = testing.ppocr_model_path("det")
        if path is None:
            raise SystemExit("ppocr_det needs the rapidocr-onnxruntime wheel")
        size = 320 if quick else 480
        return path, {"x": (3, size, size)}
    raise SystemExit(f"unknown model {name}; choose from {', '.join(MODELS)}")


def _text_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A page of rendered text lines (PIL's built-in font), normalized like PP-OCR's det input."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=int(rng.integers(14, 28)))
    except TypeError:  # older Pillow: fixed-size bitmap font
        font = ImageFont.load_default()
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    for _ in range(int(rng.integers(4, 10))):
        text = "".join(rng.choice(list(letters), int(rng.integers(4, 16))))
        xy = (int(rng.integers(0, size // 2)), int(rng.integers(0, size - 30)))
        draw.text(xy, text, fill=tuple(int(v) for v in rng.integers(0, 80, 3)), font=font)
    pixels = np.asarray(image, np.float32) / 255.0
    pixels = (pixels - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32
    )
    return pixels.transpose(2, 0, 1)


def make_data(name: str, shapes: dict, count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "bert":
        seq = shapes["input_ids"][0]
        ids = rng.integers(0, 1000, (count, seq)).astype(np.int64)
        lengths = rng.integers(seq // 2, seq + 1, count)
        mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
        return {"input_ids": ids, "attention_mask": mask}
    channels, height, width = shapes["x"]
    if name == "ppocr_det":
        return {"x": np.stack([_text_image(rng, height) for _ in range(count)]).astype(np.float32)}
    # Smooth random images: low-frequency noise upsampled, like natural-image statistics.
    coarse = rng.standard_normal((count, channels, height // 16, width // 16)).astype(np.float32)
    return {"x": np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)}


# -- workers (subprocesses: peak RSS per calibration) -----------------------------------------
def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    worker started from a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ort_prepare(model_path: Path, folder: Path) -> Path:
    """ORT's best configuration needs opset >= 13 (per-channel) and initializer biases."""
    import onnx
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnx import version_converter

    model = ir.load(str(model_path))
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    proto = ir.to_proto(model)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        proto = version_converter.convert_version(proto, 13)
    path = folder / (model_path.stem + ".ort-input.onnx")
    onnx.save(proto, str(path))
    return path


class _NpzReader:
    def __init__(self, path: Path):
        with np.load(path) as archive:
            self.arrays = {k: archive[k] for k in archive.files}
        self.index = 0

    def get_next(self):
        count = len(next(iter(self.arrays.values())))
        if self.index >= count:
            return None
        feeds = {k: v[self.index : self.index + 1] for k, v in self.arrays.items()}
        self.index += 1
        return feeds

    def rewind(self):
        self.index = 0


def worker(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    result: dict = {}
    if args.worker == "ort-calibrate":
        from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }
        with tempfile.TemporaryDirectory() as tmp:
            calibrator = create_calibrator(
                Path(args.model),
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=methods[args.method],
            )
            calibrator.collect_data(_NpzReader(Path(args.data)))
            calibrator.compute_data()
    elif args.worker == "ours-calibrate":
        import onnxslim
        from onnxslim.calibration import collect_statistics, compute_range, open_reader
        from onnxslim.passes.quantization import QuantizeStatic, quantizable_op_types

        model = onnxslim.load(args.model)
        quantizer = QuantizeStatic(method=args.method)
        with tempfile.TemporaryDirectory() as tmp:
            _, proto = quantizer._prepare(model, Path(tmp))
        import onnx_ir as ir

        prepared = ir.from_proto(proto)
        names = QuantizeStatic._tensors_to_calibrate(proto, quantizable_op_types())
        reader = open_reader(args.data, prepared, batch_size=args.batch)
        collector = collect_statistics(prepared, names, reader)
        for stats in collector.tensors.values():
            compute_range(stats, args.method)
        result["retained_bytes"] = collector.retained_bytes()
    elif args.worker == "ort-quantize":
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }
        quantize_static(
            args.model,
            args.output,
            _NpzReader(Path(args.data)),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            calibrate_method=methods[args.method],
        )
    elif args.worker == "ours-quantize":
        import onnxslim
        from onnxslim.passes.quantization import QuantizeStatic

        model = onnxslim.load(args.model)
        quantizer = QuantizeStatic(
            args.data, method=args.method, batch_size=args.batch, latency_runs=args.runs
        )
        outcome = quantizer.apply(model, onnxslim.PassContext())
        onnxslim.save(model, args.output)
        summary = outcome.summary
        summary.pop("tensors", None)
        result["summary"] = summary
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    Path(args.json).write_text(json.dumps(result, default=str))


def run_worker(
    kind: str,
    model: Path,
    data: Path,
    method: str,
    folder: Path,
    batch: int,
    runs: int,
    output: Path | None = None,
) -> dict:
    result_path = folder / f"{kind}-{method}.json"
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--model",
        str(model),
        "--data",
        str(data),
        "--method",
        method,
        "--json",
        str(result_path),
        "--batch",
        str(batch),
        "--runs",
        str(runs),
    ]
    if output is not None:
        command += ["--output", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        return {
            "error": completed.stderr.strip().splitlines()[-1]
            if completed.stderr.strip()
            else f"exit {completed.returncode}"
        }
    return json.loads(result_path.read_text())


# -- measurements ---------------------------------------------------------------------------
def fidelity(name: str, float_path: Path, int8_path: Path, eval_data: dict) -> dict:
    import onnxslim
    from onnxslim.passes.quantization._guards import run_outputs

    count = len(next(iter(eval_data.values())))
    batches = [{k: v[i : i + 1] for k, v in eval_data.items()} for i in range(count)]
    reference = run_outputs(float_path, batches)
    candidate = run_outputs(int8_path, batches)
    result = onnxslim.compare_outputs(reference, candidate).to_dict()
    if name == "ppocr_det":
        ious = []
        for ref, cand in zip(reference, candidate):
            a, b = next(iter(ref.values())) > 0.3, next(iter(cand.values())) > 0.3
            union = np.logical_or(a, b).sum()
            ious.append(np.logical_and(a, b).sum() / union if union else 1.0)
        result["map_iou"] = float(np.mean(ious))
    return result


def speed(float_path: Path, paths: list[Path], feeds: dict, runs: int) -> list[float]:
    from onnxslim.passes.quantization import interleaved_latency

    latencies = interleaved_latency([float_path, *paths], feeds, runs=runs)
    return [latencies[0] / t for t in latencies[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument(
        "--quick", action="store_true", help="smaller inputs, 16 samples, minmax+percentile"
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4, help="onnxslim calibration batch size")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--model", "--data", "--method", "--json", "--output"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.samples = min(args.samples, 16)
        if args.methods == ",".join(METHODS):
            args.methods = "minmax,percentile"
    rows = []
    with tempfile.TemporaryDirectory(prefix="quant-vs-ort-") as tmp:
        folder = Path(tmp)
        for name in args.models.split(","):
            model_path, shapes = build_model(name, folder, args.quick)
            calibration = make_data(name, shapes, args.samples, seed=0)
            held_out = make_data(name, shapes, 4 if args.quick else 8, seed=1)
            data_path = folder / f"{name}-calibration.npz"
            np.savez(data_path, **calibration)
            ort_input = ort_prepare(model_path, folder)
            feeds = {k: v[:1] for k, v in held_out.items()}
            for method in args.methods.split(","):
                ours_out = folder / f"{name}-{method}-ours.onnx"
                ort_out = folder / f"{name}-{method}-ort.onnx"
                ours_cal = run_worker(
                    "ours-calibrate", model_path, data_path, method, folder, args.batch, args.runs
                )
                ort_cal = run_worker(
                    "ort-calibrate", ort_input, data_path, method, folder, args.batch, args.runs
                )
                ours_q = run_worker(
                    "ours-quantize",
                    model_path,
                    data_path,
                    method,
                    folder,
                    args.batch,
                    args.runs,
                    ours_out,
                )
                ort_q = run_worker(
                    "ort-quantize",
                    ort_input,
                    data_path,
                    method,
                    folder,
                    args.batch,
                    args.runs,
                    ort_out,
                )
                row = {"model": name, "method": method, "ours_cal": ours_cal, "ort_cal": ort_cal}
                produced = [p for p in (ours_out, ort_out) if p.is_file()]
                ratios = speed(model_path, produced, feeds, args.runs) if produced else []
                speeds = dict(zip(produced, ratios))
                for label, path, quantized in (("ours", ours_out, ours_q), ("ort", ort_out, ort_q)):
                    if path.is_file():
                        row[f"{label}_fidelity"] = fidelity(name, model_path, path, held_out)
                        row[f"{label}_speed"] = speeds[path]
                    row[f"{label}_quantize"] = quantized
                rows.append(row)
                print_row(row, header=len(rows) == 1)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1, default=str))


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'model':<12}{'method':<11}{'tool':<9}{'calib s':>8}{'peak MB':>9}{'SQNR dB':>9}"
            f"{'top-1':>7}{'IoU':>6}{'speed':>7}  notes",
            flush=True,
        )
    for label in ("ours", "ort"):
        cal = row[f"{label}_cal"]
        fid = row.get(f"{label}_fidelity", {})
        quantized = row.get(f"{label}_quantize", {})
        notes = cal.get("error") or quantized.get("error") or ""
        summary = quantized.get("summary", {})
        if summary:
            notes = summary.get("chosen") or summary.get("fallback", "")[:60]
        top1 = fid.get("top1_agreement")
        print(
            f"{row['model']:<12}{row['method']:<11}{'onnxslim' if label == 'ours' else 'ort':<9}"
            f"{_fmt(cal.get('seconds'), '8.1f')}{_fmt(cal.get('peak_rss_mb'), '9.0f')}"
            f"{_fmt(fid.get('sqnr_db'), '9.1f')}{_fmt(100 * top1 if top1 is not None else None, '7.1f')}"
            f"{_fmt(fid.get('map_iou'), '6.2f')}{_fmt(row.get(f'{label}_speed'), '6.2f')}x  {notes}",
            flush=True,
        )


if __name__ == "__main__":
    main()
