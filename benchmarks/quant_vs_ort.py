"""onnxslim QuantizeStatic vs ONNX Runtime's quantize_static, side by side.

Same model, same calibration samples, per method (minmax, percentile, entropy): calibration
wall time after library imports and peak RSS (each calibration in its own fresh subprocess; VmHWM;
medians of --calib-repeats runs, ours and ORT's alternating), output fidelity
on held-out samples (SQNR; top-1 agreement on class scores; accuracy on the digits test set;
IoU of the text map for PP-OCR det) and the fp32/int8 speed ratio (interleaved medians,
spinning off, one sample). Three int8 models per row: onnxslim's defaults, ORT's default
config (S8 activations, S8 per-tensor weights, QDQ) and ORT's best CPU config (U8 activations,
S8 per-channel weights; reduce_range only without VNNI), both after an opset upgrade and bias
folding so ORT's integer kernels can take the convs.

    python benchmarks/quant_vs_ort.py                       # all models, all methods
    python benchmarks/quant_vs_ort.py --quick               # a few minutes
    python benchmarks/quant_vs_ort.py --configs resnet18    # ORT int8 config sweep (types, format, options)
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

MODELS = ("digits", "resnet18", "mobilenetv2", "bert", "ppocr_det")
METHODS = ("minmax", "percentile", "entropy")


# -- models and data -------------------------------------------------------------------------
def build_model(name: str, folder: Path, quick: bool) -> tuple[Path, dict]:
    import torch

    from onnxslim import testing

    torch.manual_seed(0)
    if name == "digits":
        from onnxslim.data import demo_model_path

        return demo_model_path(), {"image": (1, 32, 32)}
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
        # 320: ORT's percentile/entropy calibrators keep every activation (about 160 MB per
        # sample here); at 480 x 64 samples they were OOM-killed on a 23 GB machine.
        size = 256 if quick else 320
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
    if name == "digits":
        from onnxslim.data import demo_data

        data = demo_data()
        if seed == 0:
            return {"image": data["calibration_images"][:count]}
        return {"image": data["test_images"], "labels": data["test_labels"]}
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
def ort_best_options() -> dict:
    """ORT's best quantize_static configuration on this CPU: U8 activations, S8 per-channel
    weights, reduce_range only without VNNI/AMX (the same profile our target detection picks)."""
    from onnxruntime.quantization import QuantType

    from onnxslim.runtime import cpu_features

    features = cpu_features()
    return dict(
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=not (features.vnni or features.amx),
    )


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
    import onnxscript.optimizer
    from onnx import version_converter

    model = ir.load(str(model_path))
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    # Exact folding (the exporter's Identity of a bias initializer): ORT quantizes only
    # initializer biases, and a float bias keeps the Conv out of its integer kernels.
    onnxscript.optimizer.fold_constants(model)
    common.RemoveUnusedNodesPass()(model)
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
    # Library imports are timed apart (onnx_ir pulls in sympy; ~1.3 s for onnxslim, ~0.5 s
    # for onnxruntime.quantization): the calibration columns compare the work itself.
    started = time.perf_counter()
    if args.worker.startswith("ort-"):
        import onnxruntime.quantization  # noqa: F401
        import onnxruntime.quantization.calibrate  # noqa: F401
    else:
        import onnxslim.calibration  # noqa: F401
        import onnxslim.passes.quantization  # noqa: F401
    result: dict = {"import_seconds": time.perf_counter() - started}
    started = time.perf_counter()
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
        from onnxslim.passes.quantization import run_calibration

        calibration = run_calibration(
            onnxslim.load(args.model), args.data, method=args.method, batch_size=args.batch
        )
        result["retained_bytes"] = calibration.summary()["retained_bytes"]
    elif args.worker == "ort-quantize":
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            quantize_static,
        )

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }
        # default: QDQ, S8 activations, S8 per-tensor weights
        config = {} if args.config == "default" else ort_best_options()
        quantize_static(
            args.model,
            args.output,
            _NpzReader(Path(args.data)),
            quant_format=QuantFormat.QDQ,
            calibrate_method=methods[args.method],
            **config,
        )
    elif args.worker == "ours-quantize":
        import onnxslim
        from onnxslim.passes.quantization import QuantizeStatic

        model = onnxslim.load(args.model)
        quantizer = QuantizeStatic(
            args.data,
            method=args.method,
            batch_size=args.batch,
            latency_runs=args.runs,
            threads=int(args.threads),
        )
        outcome = quantizer.apply(model, onnxslim.PassContext())
        onnxslim.save(model, args.output)
        summary = outcome.summary
        summary.pop("tensors", None)
        result["summary"] = summary
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    # to the parent process, not a report
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
    config: str = "best",
    threads: int = 2,
) -> dict:
    result_path = folder / f"{kind}-{method}-{config}.json"
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
        "--config",
        config,
        "--threads",
        str(threads),
    ]
    if output is not None:
        command += ["--output", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        if completed.returncode in (-9, 137):
            return {"error": "killed (out of memory)"}
        return {
            "error": completed.stderr.strip().splitlines()[-1][:80]
            if completed.stderr.strip()
            else f"exit {completed.returncode}"
        }
    return json.loads(result_path.read_text())


def median_run(results: list[dict]) -> dict:
    """The repeats of one calibration worker: median seconds and peak RSS, every run kept."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[0]
    merged = dict(good[0])
    for key in ("seconds", "peak_rss_mb", "import_seconds"):
        if all(key in r for r in good):
            merged[key] = float(np.median([r[key] for r in good]))
    merged["repeats"] = [
        {k: r.get(k) for k in ("seconds", "peak_rss_mb", "error") if k in r} for r in results
    ]
    return merged


# -- measurements ---------------------------------------------------------------------------
def fidelity(name: str, float_path: Path, int8_path: Path, eval_data: dict) -> dict:
    import onnxslim
    from onnxslim.fidelity import decisive_top1_agreement
    from onnxslim.passes.quantization import run_outputs

    labels = eval_data.get("labels")
    feeds = {k: v for k, v in eval_data.items() if k != "labels"}
    count = len(next(iter(feeds.values())))
    step = 64 if name == "digits" else 1
    batches = [{k: v[i : i + step] for k, v in feeds.items()} for i in range(0, count, step)]
    reference = run_outputs(float_path, batches)
    candidate = run_outputs(int8_path, batches)
    result = onnxslim.compare_outputs(reference, candidate).to_dict()
    # Only samples with a clear float top-1 (untrained test nets tie: any noise flips those).
    result["top1_agreement"], result["top1_samples"] = decisive_top1_agreement(reference, candidate)
    if labels is not None:
        for key, outputs in (("accuracy_fp32", reference), ("accuracy", candidate)):
            predicted = np.concatenate([next(iter(o.values())).argmax(-1) for o in outputs])
            result[key] = float((predicted == labels).mean())
    if name == "ppocr_det":
        ious = []
        for ref, cand in zip(reference, candidate):
            a, b = next(iter(ref.values())) > 0.3, next(iter(cand.values())) > 0.3
            union = np.logical_or(a, b).sum()
            ious.append(np.logical_and(a, b).sum() / union if union else 1.0)
        result["map_iou"] = float(np.mean(ious))
    return result


def speed(float_path: Path, paths: list[Path], feeds: dict, runs: int, threads: int) -> list[float]:
    from onnxslim.passes.quantization import interleaved_latency

    latencies = interleaved_latency([float_path, *paths], feeds, runs=runs, threads=threads)
    return [latencies[0] / t for t in latencies[1:]]


def config_sweep(names: list[str], batches: list[int], runs: int, threads: int) -> None:
    """fp32/int8 of ORT's int8 configurations (types, granularity, reduce_range, format,
    session.qdqisint8allowed), interleaved with spinning off; SQNR vs fp32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from onnxslim.fidelity import sqnr_db
    from onnxslim.runtime import create_session, interleaved_timing, session_options, session_run

    u8, s8 = QuantType.QUInt8, QuantType.QInt8
    configs = {
        "QDQ U8S8 per-channel": (QuantFormat.QDQ, u8, True, False),
        "QDQ U8S8 per-channel reduce_range": (QuantFormat.QDQ, u8, True, True),
        "QDQ U8S8 per-tensor": (QuantFormat.QDQ, u8, False, False),
        "QDQ S8S8 per-channel": (QuantFormat.QDQ, s8, True, False),
        "QDQ S8S8 per-tensor (ORT default)": (QuantFormat.QDQ, s8, False, False),
        "QOperator U8S8 per-channel": (QuantFormat.QOperator, u8, True, False),
        "QOperator U8S8 per-tensor": (QuantFormat.QOperator, u8, False, False),
        "QOperator S8S8 per-channel": (QuantFormat.QOperator, s8, True, False),
    }
    print("| model | batch | configuration | ms | fp32/int8 | SQNR dB |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="quant-configs-") as tmp:
        folder = Path(tmp)
        for name in names:
            model_path, shapes = build_model(name, folder, quick=False)
            ort_input = ort_prepare(model_path, folder)
            data_path = folder / f"{name}-calibration.npz"
            np.savez(data_path, **make_data(name, shapes, 8, seed=0))
            variants = [("fp32", model_path, {})]
            for label, (fmt, activation, per_channel, reduce_range) in configs.items():
                path = folder / f"{name}-{len(variants)}.onnx"
                quantize_static(
                    str(ort_input),
                    str(path),
                    _NpzReader(data_path),
                    quant_format=fmt,
                    activation_type=activation,
                    weight_type=s8,
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    calibrate_method=CalibrationMethod.MinMax,
                )
                variants.append((label, path, {}))
                if activation == s8 and fmt == QuantFormat.QDQ:
                    variants.append(
                        (label + " + qdqisint8allowed=1", path, {"session.qdqisint8allowed": "1"})
                    )
            for batch in batches:
                feeds = make_data(name, shapes, batch, seed=1)
                feeds = {k: v[:batch] for k, v in feeds.items() if k != "labels"}
                sessions = []
                for label, path, config in variants:
                    options = session_options(intra_op_threads=threads, allow_spinning=False)
                    for key, value in config.items():
                        options.add_session_config_entry(key, value)
                    sessions.append((label, create_session(path, None, options)))
                outputs = {label: s.run(None, feeds)[0] for label, s in sessions}
                # the one interleaved timer: one run per model per round, order rotated
                timing = interleaved_timing(
                    [session_run(s, [feeds]) for _, s in sessions], rounds=runs
                )
                medians = dict(zip((label for label, _ in sessions), timing.quantiles()))
                base = medians["fp32"]
                reference = outputs["fp32"]
                for label, _ in sessions:
                    median = medians[label]
                    sqnr = sqnr_db(reference, outputs[label])
                    print(
                        f"| {name} | {batch} | {label} | {1e3 * median:.2f} | "
                        f"{base / median:.2f}x | {sqnr:.1f} |",
                        flush=True,
                    )
                del sessions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument(
        "--det-samples",
        type=int,
        default=16,
        help="calibration samples for ppocr_det (ORT's histogram calibrators keep them all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller inputs, 16 samples, percentile only"
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="onnxslim calibration batch size")
    parser.add_argument(
        "--calib-repeats",
        type=int,
        default=3,
        help="calibration runs per tool (alternating); the table shows medians",
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--configs", metavar="MODELS", help="sweep ORT int8 configurations on these models"
    )
    parser.add_argument("--config-batches", default="1,8")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--model", "--data", "--method", "--json", "--output"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--config", default="best", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    logging.disable(logging.WARNING)
    if args.configs:
        batches = [int(b) for b in args.config_batches.split(",")]
        config_sweep(args.configs.split(","), batches, args.runs, args.threads)
        return
    if args.quick:
        args.samples = min(args.samples, 16)
        args.det_samples = min(args.det_samples, 8)
        args.runs = min(args.runs, 5)
        args.calib_repeats = 1
        if args.methods == ",".join(METHODS):
            args.methods = "percentile"
    rows = []
    print_header()
    with tempfile.TemporaryDirectory(prefix="quant-vs-ort-") as tmp:
        folder = Path(tmp)
        for name in args.models.split(","):
            model_path, shapes = build_model(name, folder, args.quick)
            count = args.det_samples if name == "ppocr_det" else args.samples
            calibration = make_data(name, shapes, count, seed=0)
            held_out = make_data(name, shapes, 4 if args.quick else 8, seed=1)
            data_path = folder / f"{name}-calibration.npz"
            np.savez(data_path, **calibration)
            ort_input = ort_prepare(model_path, folder)
            feeds = {k: v[:1] for k, v in held_out.items() if k != "labels"}
            for method in args.methods.split(","):
                common = (data_path, method, folder, args.batch, args.runs)
                row = {"model": name, "method": method, "samples": count, "tools": {}}
                produced = {}
                # Calibration alone, ours and ORT's alternately, medians of the repeats.
                runs: dict[str, list] = {"onnxslim": [], "ort-best": []}
                for _ in range(args.calib_repeats):
                    runs["onnxslim"].append(run_worker("ours-calibrate", model_path, *common))
                    runs["ort-best"].append(run_worker("ort-calibrate", ort_input, *common))
                calibrations = {tool: median_run(results) for tool, results in runs.items()}
                for tool in ("onnxslim", "ort-default", "ort-best"):
                    output = folder / f"{name}-{method}-{tool}.onnx"
                    calibrated = calibrations.get(tool)
                    if tool == "onnxslim":
                        quantized = run_worker(
                            "ours-quantize", model_path, *common, output, threads=args.threads
                        )
                    else:
                        config = tool.split("-")[1]
                        quantized = run_worker(
                            "ort-quantize", ort_input, *common, output, config=config
                        )
                    entry = {"calibration": calibrated, "quantize": quantized}
                    if output.is_file():
                        entry["fidelity"] = fidelity(name, model_path, output, held_out)
                        produced[tool] = output
                    row["tools"][tool] = entry
                if produced:
                    ratios = speed(
                        model_path, list(produced.values()), feeds, args.runs, args.threads
                    )
                    for tool, ratio in zip(produced, ratios):
                        row["tools"][tool]["speed"] = ratio
                rows.append(row)
                print_row(row)
    if args.json_out:
        from onnxslim.formatting import json_safe

        args.json_out.write_text(
            json.dumps(json_safe(rows), allow_nan=False, indent=1, default=str)
        )


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def print_header() -> None:
    print(
        "| model | method | tool | calib s | peak MB | SQNR dB | top-1 agr % (clear) | acc % | IoU "
        "| fp32/int8 | notes |\n|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )


def print_row(row: dict) -> None:
    for tool, entry in row["tools"].items():
        calibration = entry.get("calibration") or {}
        quantized = entry.get("quantize") or {}
        fid = entry.get("fidelity", {})
        notes = calibration.get("error") or quantized.get("error") or ""
        summary = quantized.get("summary", {})
        if summary:
            notes = summary.get("chosen") or summary.get("fallback", "")[:70]
        top1 = fid.get("top1_agreement")
        accuracy = fid.get("accuracy")
        if accuracy is not None:
            notes += f" (fp32 acc {100 * fid['accuracy_fp32']:.1f}%)"
        print(
            f"| {row['model']} | {row['method']} | {tool} | {_fmt(calibration.get('seconds'), '.2f')} "
            f"| {_fmt(calibration.get('peak_rss_mb'), '.0f')} | {_fmt(fid.get('sqnr_db'), '.1f')} "
            f"| {_fmt(100 * top1 if top1 is not None else None, '.1f')} "
            f"| {_fmt(100 * accuracy if accuracy is not None else None, '.1f')} "
            f"| {_fmt(fid.get('map_iou'), '.2f')} | {_fmt(entry.get('speed'), '.2f')} | {notes} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
