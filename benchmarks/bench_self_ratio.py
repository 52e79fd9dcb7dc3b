"""The same model against itself, interleaved: how close to 1.0 are the benchmark's latency ratios?

Each repetition is one ``onnxslim.benchmark.benchmark([m, m])`` run (two sessions alive, runs
interleaved A B / B A, thread spinning off); its figure is the median of the round-by-round ratios.
The spread of those medians over repetitions is the noise floor of a ratio reported by
``onnxslim bench``: a gate like ``--max-latency-ratio 1.0`` needs a margin at least this wide.

    python benchmarks/bench_self_ratio.py                        # PP-OCRv4 det from rapidocr, 1x3x320x320
    python benchmarks/bench_self_ratio.py --model m.onnx --shape x=1x3x224x224 --repetitions 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from onnxslim.benchmark import benchmark, machine_info
from onnxslim.inputs import parse_size_argument


def _default_model(workdir: Path) -> tuple[Path, dict]:
    from onnxslim import testing

    det = testing.ppocr_model_path("det")
    if det is not None:
        return det, {"x": [1, 3, 320, 320]}
    import torch

    path = workdir / "resnet18_style.onnx"
    testing.export_torch(
        testing.resnet18_style(), (torch.randn(1, 3, 224, 224),), path, input_names=["x"]
    )
    return path, {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--shape", action="append", default=[], type=parse_size_argument)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--runs", type=int, default=40, help="interleaved rounds per repetition")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--intra-op-threads", type=int, default=None)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="leave ORT thread spinning on, to see the interference",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model, sizes = (args.model, {}) if args.model else _default_model(Path(tmp))
        sizes.update(dict(args.shape))
        print(f"machine: {machine_info().describe()}")
        print(
            f"model: {model}  sizes: {sizes or 'from the model'}  rounds/repetition: {args.runs}  spinning: {'on' if args.spinning else 'off'}"
        )
        medians = []
        for repetition in range(args.repetitions):
            result = benchmark(
                [model, model],
                sizes=sizes or None,
                runs=args.runs,
                warmup=args.warmup,
                intra_op_threads=args.intra_op_threads,
                coverage=False,
                fidelity_samples=1,
                allow_spinning=args.spinning,
            )
            twin = result.measurements[1]
            ratio = twin.latency_ratio
            medians.append(ratio.median)
            print(
                f"repetition {repetition + 1}: p50 {result.measurements[0].latency.p50_ms:.2f} ms vs "
                f"{twin.latency.p50_ms:.2f} ms; pair ratio median {ratio.median:.3f} "
                f"(p10 {ratio.p10:.3f}, p90 {ratio.p90:.3f})"
            )
    overall = statistics.median(medians)
    spread = max(abs(m - 1.0) for m in medians)
    print(
        f"median of medians {overall:.3f}; medians range {min(medians):.3f}–{max(medians):.3f} "
        f"(max |ratio − 1| = {100 * spread:.1f}%) over {len(medians)} repetitions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
