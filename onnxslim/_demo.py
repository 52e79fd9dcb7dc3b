"""``onnxslim demo``: the pipeline on the embedded digits model, with its shipped data."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxslim._pipeline import Pipeline
from onnxslim._recipe import recipe_to_toml
from onnxslim._runtime import create_session
from onnxslim.data import demo_data, demo_model_path

__all__ = ["demo_passes", "run_demo", "accuracy"]


def demo_passes() -> list:
    from onnxslim.passes import Cleanup

    return [Cleanup(target_opset=13)]


def accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a digits classifier in ONNX Runtime."""
    session = create_session(model_path)
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float(np.mean(logits.argmax(axis=1) == labels))


def run_demo(args: argparse.Namespace, progress: Callable[[str], None] | None = None) -> int:
    passes = demo_passes()
    if args.recipe:
        print(recipe_to_toml(passes))
        return 0
    data = demo_data()
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = demo_model_path()
    samples = [{"image": data["test_images"][i : i + 8]} for i in range(0, 32, 8)]
    result = Pipeline(passes).run(source, data=samples, progress=progress)
    output = result.save(out_dir / "digits_resnet.slim.onnx")
    (out_dir / "report.json").write_text(result.report.to_json() + "\n", encoding="utf-8")
    before = accuracy(source, data["test_images"], data["test_labels"])
    after = accuracy(output, data["test_images"], data["test_labels"])
    if not getattr(args, "quiet", False):
        print(result.report.table())
        print(
            f"test accuracy ({len(data['test_labels'])} digits): input {100 * before:.2f}%, output {100 * after:.2f}%"
        )
        print(f"wrote {output} and {out_dir / 'report.json'}")
    return 0
