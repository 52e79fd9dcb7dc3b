"""Sweep the public corpus through each pipeline: every model the onnx package ships
(onnx/backend/test/data), the models installed wheels ship (PP-OCR in rapidocr, Silero VAD,
openWakeWord) and architectures exported here (torchvision or hand-written equivalents, small
transformers configs with random weights; see onnxslim/_sweep_corpus.py). No downloads.

Each model is verified (ORT outputs within the pass's tolerance; for cleanup also against the
corpus's stored reference outputs) or refused with a reason; crashes must be 0.
Quantization calibrates on random data (smoke data, so labelled) with the latency guard off: the
sweep checks that quantization works and verifies, not that it pays off (the guard's timing
would dominate the sweep's wall time and make the choice machine-dependent).
The per-model table says improved / unchanged (why) / refused (why); the closing line counts
verified / refused / internal errors / crashes and the share of models where prune(0.3) removes
>= 10 % of the parameters.
Run:  python benchmarks/corpus_sweep.py [--corpus onnx,wheels,exported] [--pipelines cleanup,prune,quantize]
      [--limit N] [--match TEXT] [--models]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from onnxslim._sweep import closing_line, corpus_models, model_table, summarize, sweep_model
from onnxslim._sweep_corpus import exported_models, wheel_models
from onnxslim.formatting import json_safe
from onnxslim.registry import get_pass_class
from onnxslim.runtime import ort_log_to_python


def pipelines() -> dict[str, Callable[[], list]]:
    cleanup = get_pass_class("cleanup")

    def prune():
        return [cleanup(), get_pass_class("prune")(ratio=0.3)]

    def quantize():
        # random calibration data from the input shapes: smoke data, labelled so in the report
        return [
            cleanup(),
            get_pass_class("quantize")(calibration="random", latency_guard=False, eval_samples=2),
        ]

    return {
        "cleanup": lambda: [cleanup()],
        "cleanup+prune(0.3)": prune,
        "cleanup+quantize(random,no-latency-guard)": quantize,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default="cleanup,prune,quantize")
    parser.add_argument("--corpus", default="onnx,wheels,exported", help="which parts to sweep")
    parser.add_argument("--export-dir", type=Path, help="keep the exported models here (reused)")
    parser.add_argument("--models", action="store_true", help="print the per-model table")
    parser.add_argument("--limit", type=int, help="first N models only")
    parser.add_argument("--match", help="only models whose path contains this text")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    parser.add_argument("--verbose", action="store_true", help="one line per model and pipeline")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    wanted = args.pipelines.split(",")
    chosen = {k: v for k, v in pipelines().items() if k.split("+")[-1].split("(")[0] in wanted}
    outcomes: list = []
    started = time.perf_counter()
    # a time limit (timeout's SIGTERM) ends the sweep with the summary of what ran
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(args.corpus.split(","), args.export_dir or Path(tmp) / "exported")
        models = [m for m in models if not args.match or args.match in m[0]][: args.limit]
        try:
            with ort_log_to_python(3):  # ORT's C++ error log stays off the terminal, as in the CLI
                _sweep(models, chosen, outcomes, Path(tmp), args.verbose)
        except KeyboardInterrupt:
            print(f"interrupted: {len(outcomes)} runs done", flush=True)
    print(f"models: {len(models)}, wall time {time.perf_counter() - started:.0f}s")
    if args.models:
        print(model_table(outcomes))
        print()
    print(summarize(outcomes))
    print(closing_line(outcomes))
    if args.json:
        # json_safe: an identical output's infinite SQNR is "inf", not the invalid token Infinity
        outcomes_json = json_safe([o.__dict__ for o in outcomes])
        args.json.write_text(json.dumps(outcomes_json, indent=1, allow_nan=False))


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _sweep(
    models: list[tuple[str, Path]], chosen: dict, outcomes: list, workdir: Path, verbose: bool
) -> None:
    for name, path in models:
        for label, factory in chosen.items():
            outcome = sweep_model(
                path, label, factory, check_stored=(label == "cleanup"), workdir=workdir, name=name
            )
            outcomes.append(outcome)
            if verbose or outcome.status == "crashed":
                print(
                    f"{outcome.status:8} {outcome.seconds:6.1f}s {label} {name}: {outcome.reason[:200]}",
                    flush=True,
                )


def _models(parts: list[str], export_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of every model in the chosen parts of the corpus."""
    models: list[tuple[str, Path]] = []
    if "wheels" in parts:
        models += [(m.name, m.path) for m in wheel_models()]
    if "exported" in parts:
        models += [(f"exported:{m.name}", m.path) for m in exported_models(export_dir)]
    if "onnx" in parts:
        for path in corpus_models():
            name = f"{path.parent.name}/{path.name}" if path.name == "model.onnx" else path.stem
            models.append((f"onnx:{name}", path))
    return models


if __name__ == "__main__":
    main()
