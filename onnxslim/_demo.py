"""``onnxslim demo``: the whole pipeline on the embedded digits model, with its shipped data.

cleanup -> structured pruning (to a quarter of the MACs) -> label-free distillation from the ORT teacher
-> static int8 quantization -> benchmark of every stage on CPU (and CUDA when present).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxslim._pipeline import Pipeline
from onnxslim._recipe import recipe_to_toml
from onnxslim.data import demo_data, demo_model_path
from onnxslim.formatting import human_bytes, human_count
from onnxslim.registry import get_pass_class
from onnxslim.runtime import create_session

__all__ = ["demo_passes", "run_demo", "predict"]

# Pruning target and distillation budget: a quarter of the MACs recovers to within ~0.5 point
# of the input's accuracy in 15 label-free epochs on 2 cores.
TARGET_MACS = 0.25
DISTILL_EPOCHS = 15
QUICK_DISTILL_EPOCHS = 3


def write_demo_data(out_dir: Path) -> dict[str, Path]:
    """The shipped splits as .npz files a recipe can name (input name ``image``)."""
    data = demo_data()
    paths = {"train": out_dir / "train.npz", "calibration": out_dir / "calibration.npz"}
    np.savez(paths["train"], image=data["train_images"])
    np.savez(paths["calibration"], image=data["calibration_images"])
    return paths


def demo_passes(paths: dict[str, Path], epochs: int = DISTILL_EPOCHS) -> list:
    return [
        get_pass_class("cleanup")(target_opset=13),
        get_pass_class("prune")(target_macs=TARGET_MACS),
        get_pass_class("distill")(str(paths["train"]), epochs=epochs, lr=3e-3, temperature=4.0),
        get_pass_class("quantize")(calibration=str(paths["calibration"]), method="percentile"),
    ]


def predict(model_path: Path | str, images: np.ndarray) -> np.ndarray:
    """Top-1 classes of a digits classifier in ONNX Runtime."""
    session = create_session(model_path)
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return logits.argmax(axis=1)


def _bench(stage_paths: list[Path], labels: list[str], quick: bool) -> Any:
    from onnxslim.benchmark import benchmark

    providers = ["cpu"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.append("cuda")
    return benchmark(
        stage_paths,
        providers=providers,
        labels=labels,
        batch_sizes=[1, 32],
        runs=40 if quick else 200,
        warmup=10,
        fidelity_samples=1,
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _stage_rows(
    stages: list[Any], stage_paths: list[Path], bench: Any, data: dict[str, np.ndarray]
) -> list[list[str]]:
    """The demo table: one row per stage, with its speed and test accuracy."""
    teacher = predict(stage_paths[0], data["test_images"])
    rows = [
        [
            "stage",
            "params",
            "MACs",
            "size",
            "p50 b1",
            "p50 b32",
            "speed b1",
            "speed b32",
            "accuracy",
            "agrees w/ input",
        ]
    ]
    for stage, path in zip(stages, stage_paths):
        predicted = predict(path, data["test_images"])
        by_batch = {
            m.batch: m for m in bench.measurements if m.model == stage.stage and "CPU" in m.provider
        }
        speeds = []
        for batch in (1, 32):
            ratio = by_batch[batch].latency_ratio
            speeds.append("1.00x" if ratio is None else f"{1.0 / ratio.median:.2f}x")
        rows.append(
            [
                stage.stage,
                human_count(stage.parameters),
                human_count(stage.macs),
                human_bytes(stage.size_bytes),
                f"{by_batch[1].latency.p50_ms:.3f} ms",
                f"{by_batch[32].latency.p50_ms:.2f} ms",
                *speeds,
                f"{100 * np.mean(predicted == data['test_labels']):.2f}%",
                f"{100 * np.mean(predicted == teacher):.2f}%",
            ]
        )
    return rows


def run_demo(args: argparse.Namespace, progress: Callable[[str], None] | None = None) -> int:
    out_dir = Path(args.output_dir)
    quick = getattr(args, "quick", False)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_demo_data(out_dir)
    epochs = QUICK_DISTILL_EPOCHS if quick else DISTILL_EPOCHS
    passes = demo_passes(paths, epochs)
    if args.recipe:
        print(f"# onnxslim optimize {demo_model_path()} -o slim.onnx --recipe demo.toml")
        print(f"# (the data files named below were written to {out_dir})")
        print(recipe_to_toml(passes))
        return 0
    started = time.perf_counter()
    data = demo_data()
    verify = [{"image": data["test_images"][i : i + 16]} for i in range(0, 64, 16)]
    stage_dir = out_dir / "stages"
    stage_dir.mkdir(exist_ok=True)
    result = Pipeline(passes).run(
        demo_model_path(), data=verify, progress=progress, stage_dir=stage_dir
    )
    output = result.save(out_dir / "digits_resnet.slim.onnx")
    (out_dir / "report.json").write_text(result.report.to_json() + "\n", encoding="utf-8")
    stages = result.report.stages
    stage_paths = [Path(str(stage.model_path)) for stage in stages]  # stage_dir: all kept
    labels = [stage.stage for stage in stages]
    if progress:
        progress(
            "benchmarking every stage on CPU"
            + (" and CUDA" if len(ort.get_available_providers()) > 2 else "")
        )
    bench = _bench(stage_paths, labels, quick)
    html = out_dir / "report.html"
    bench.write(
        html_path=html, json_path=out_dir / "benchmark.json", pipeline=result.report.to_dict()
    )
    rows = _stage_rows(stages, stage_paths, bench, data)
    if not getattr(args, "quiet", False):
        print(_table(rows))
        print(
            f"test set: {len(data['test_labels'])} held-out digits; speed = input latency / stage latency on CPU (interleaved rounds, median ratio)"
        )
        print("\n".join(result.report.story()))
        print(f"wrote {output}, {out_dir / 'report.json'} and the HTML report {html}")
        print(f"demo took {time.perf_counter() - started:.0f}s")
    return 0
