"""Sweep every model the onnx package ships (onnx/backend/test/data) through each pipeline.

Each model is verified (ORT outputs within the pass's tolerance; for cleanup also against the
corpus's stored reference outputs) or refused with a reason; crashes must be 0.
Quantization calibrates on random data (smoke data, so labelled) with the latency guard off: the
sweep checks that quantization works and verifies, not that it pays off (the guard's timing
would dominate the sweep's wall time and make the choice machine-dependent).
Run:  python benchmarks/corpus_sweep.py [--pipelines cleanup,prune,quantize] [--limit N] [--match TEXT]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from onnxslim._sweep import corpus_models, summarize, sweep_model
from onnxslim.formatting import json_safe
from onnxslim.registry import get_pass_class


def pipelines() -> dict[str, object]:
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
    parser.add_argument("--limit", type=int, help="first N models only")
    parser.add_argument("--match", help="only models whose path contains this text")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    parser.add_argument("--verbose", action="store_true", help="one line per model and pipeline")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    wanted = args.pipelines.split(",")
    chosen = {k: v for k, v in pipelines().items() if k.split("+")[-1].split("(")[0] in wanted}
    models = [p for p in corpus_models() if not args.match or args.match in str(p)][: args.limit]
    outcomes = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for path in models:
            for label, factory in chosen.items():
                outcome = sweep_model(
                    path, label, factory, check_stored=(label == "cleanup"), workdir=Path(tmp)
                )
                outcomes.append(outcome)
                if args.verbose or outcome.status == "crashed":
                    print(
                        f"{outcome.status:8} {outcome.seconds:6.1f}s {label} {path}: {outcome.reason[:200]}",
                        flush=True,
                    )
    print(f"models: {len(models)}, wall time {time.perf_counter() - started:.0f}s")
    print(summarize(outcomes))
    if args.json:
        # json_safe: an identical output's infinite SQNR is "inf", not the invalid token Infinity
        outcomes_json = json_safe([o.__dict__ for o in outcomes])
        args.json.write_text(json.dumps(outcomes_json, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
