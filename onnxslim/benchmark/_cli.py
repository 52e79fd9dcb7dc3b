"""``onnxslim bench``: argument parser and runner (wired into ``onnxslim.cli``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from onnxslim._errors import SlimError
from onnxslim.benchmark._benchmark import benchmark
from onnxslim.benchmark._gates import GATE_EXIT_CODE, Gates, check_gates
from onnxslim.fidelity import FidelityBounds
from onnxslim.inputs import parse_size_argument

__all__ = [
    "add_bench_parser",
    "build_parser",
    "run_bench",
    "main",
    "parse_provider_option",
]

logger = logging.getLogger(__name__)


def parse_provider_option(text: str) -> tuple[str, str, str]:
    """``cuda:device_id=1`` -> (provider, key, value)."""
    provider, sep, rest = text.partition(":")
    key, sep2, value = rest.partition("=")
    if not sep or not sep2 or not provider or not key:
        raise argparse.ArgumentTypeError(
            f"--provider-option {text!r}: write PROVIDER:KEY=VALUE, e.g. cuda:device_id=1"
        )
    return provider, key, value


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes {text!r}: write e.g. 1,8,32") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(
            f"--batch-sizes {text!r}: give positive integers, e.g. 1,8"
        )
    return sizes


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "models", nargs="+", type=Path, help="ONNX models; the first is the reference"
    )
    parser.add_argument(
        "--providers",
        default="cpu",
        help="comma-separated: cpu, cuda, tensorrt, openvino, dml, coreml or full ORT names",
    )
    parser.add_argument(
        "--provider-option",
        action="append",
        default=[],
        type=parse_provider_option,
        metavar="PROVIDER:KEY=VALUE",
        help="ORT provider option (repeatable)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=None,
        help="e.g. 1,8: batches of generated inputs or of --data samples (default 1)",
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        type=parse_size_argument,
        metavar="NAME=1x3x224x224",
        help="full shape of an input, or DIM=N for a symbolic dim (repeatable)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=(
            "samples instead of generated inputs: an .npz with one array per input name, samples "
            "stacked on the batch axis (as in optimize --data), or a folder; fed in batches of "
            "--batch-sizes"
        ),
    )
    parser.add_argument("--intra-op-threads", type=int, default=None)
    parser.add_argument("--inter-op-threads", type=int, default=None)
    parser.add_argument(
        "--optimization-level", choices=["disable", "basic", "extended", "all"], default="all"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed runs per session (default 5)"
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--runs", type=int, default=None, help="timed rounds (default 30)")
    timing.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time rounds for this long per provider and batch size",
    )
    parser.add_argument("--fidelity-samples", type=int, default=4)
    parser.add_argument(
        "--no-coverage", action="store_true", help="skip the int8 MAC coverage analysis"
    )
    parser.add_argument(
        "--json", type=Path, default=Path("onnxslim-bench.json"), help="JSON report path"
    )
    parser.add_argument(
        "--html", type=Path, default=Path("onnxslim-bench.html"), help="HTML report path"
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the Markdown table here"
    )
    gates = parser.add_argument_group("gates (exit code 4 when one fails)")
    gates.add_argument("--max-latency-ratio", type=float, default=None, help="e.g. 1.0")
    gates.add_argument("--min-sqnr", type=float, default=None, help="dB, e.g. 30")
    gates.add_argument("--min-top1-agreement", type=float, default=None, help="e.g. 0.99")
    gates.add_argument("--max-size-ratio", type=float, default=None, help="e.g. 0.5")
    return parser


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``bench`` subcommand; its handler is :func:`run_bench`."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark models on ONNX Runtime providers (interleaved, vs the first model)",
        description="Benchmark ONNX models side by side on ONNX Runtime execution providers.",
    )
    _configure(parser)
    parser.set_defaults(handler=run_bench)
    return parser


def build_parser() -> argparse.ArgumentParser:
    return _configure(
        argparse.ArgumentParser(prog="onnxslim bench", description="Benchmark ONNX models.")
    )


def run_bench(args: argparse.Namespace) -> int:
    """Runs the benchmark, prints the table, writes the reports; 0, 2 (user error) or 4 (gate)."""
    provider_options: dict[str, dict[str, str]] = {}
    for provider, key, value in args.provider_option:
        provider_options.setdefault(provider, {})[key] = value
    try:
        result = benchmark(
            args.models,
            providers=args.providers,
            provider_options=provider_options or None,
            batch_sizes=args.batch_sizes,
            sizes=dict(args.shape) or None,
            data=args.data,
            intra_op_threads=args.intra_op_threads,
            inter_op_threads=args.inter_op_threads,
            optimization_level=args.optimization_level,
            warmup=args.warmup,
            runs=args.runs,
            time_budget_s=args.time_budget,
            fidelity_samples=args.fidelity_samples,
            coverage=not args.no_coverage,
        )
        gates = Gates(
            fidelity=FidelityBounds(
                min_sqnr_db=args.min_sqnr, min_top1_agreement=args.min_top1_agreement
            ),
            max_latency_ratio=args.max_latency_ratio,
            max_size_ratio=args.max_size_ratio,
        )
        failures = check_gates(result, gates)
    except SlimError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(result.to_markdown())
    written = result.write(json_path=args.json, html_path=args.html, markdown_path=args.markdown)
    print("wrote " + ", ".join(str(path) for path in written))
    if failures:
        print(
            f"gate failed: {failures[0]}"
            + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""),
            file=sys.stderr,
        )
        return GATE_EXIT_CODE
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_bench(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
