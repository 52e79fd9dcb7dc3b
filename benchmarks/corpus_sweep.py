"""Sweep every model the onnx package ships (onnx/backend/test/data) through each pipeline.

Each model is verified (ORT outputs within the pass's tolerance; for cleanup also against the
corpus's stored reference outputs) or refused with a reason; crashes must be 0.
Run:  python benchmarks/corpus_sweep.py [--pipelines cleanup,prune,quantize] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from onnxslim._sweep import corpus_models, summarize, sweep_model
from onnxslim.registry import get_pass_class


def pipelines() -> dict[str, object]:
    cleanup = get_pass_class("cleanup")

    def prune():
        return [cleanup(), get_pass_class("prune")(ratio=0.3)]

    def quantize():
        # random calibration data from the input shapes: smoke data, labelled so in the report
        return [cleanup(), get_pass_class("quantize")(calibration="random")]

    return {
        "cleanup": lambda: [cleanup()],
        "cleanup+prune(0.3)": prune,
        "cleanup+quantize": quantize,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default="cleanup,prune,quantize")
    parser.add_argument("--limit", type=int, help="first N models only")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    chosen = {
        k: v
        for k, v in pipelines().items()
        if k.split("+")[-1].split("(")[0] in args.pipelines.split(",")
    }
    models = corpus_models()[: args.limit]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in models:
            for label, factory in chosen.items():
                outcome = sweep_model(
                    path, label, factory, check_stored=(label == "cleanup"), workdir=Path(tmp)
                )
                outcomes.append(outcome)
                if outcome.status == "crashed":
                    print(f"CRASH {label} {path}: {outcome.reason}", flush=True)
    print(f"models: {len(models)}")
    print(summarize(outcomes))
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))


if __name__ == "__main__":
    main()
