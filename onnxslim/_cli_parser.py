"""The ``onnxslim`` command line: its sub-commands and flags.

A pass's flags come from its declared options (``onnxslim.options``: help, default, type and
choices written once, in the pass's ``Options`` dataclass); only the pipeline-wide flags are here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from onnxslim.inputs import parse_size_argument

__all__ = ["build_parser"]

Handler = Callable[[argparse.Namespace], int]


def build_parser(*, optimize: Handler, inspect: Handler, demo: Handler) -> argparse.ArgumentParser:
    """The parser; each sub-command's ``handler`` default is the function given for it."""
    parser = argparse.ArgumentParser(
        prog="onnxslim",
        description="Framework-agnostic ONNX optimizer: cleanup, pruning, distillation, int8 quantization.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_optimize(commands, optimize)
    _add_inspect(commands, inspect)
    from onnxslim.benchmark._cli import add_bench_parser

    add_bench_parser(commands)
    _add_demo(commands, demo)
    return parser


def _add_optimize(commands: argparse._SubParsersAction, handler: Handler) -> None:
    optimize = commands.add_parser(
        "optimize", help="run a pass pipeline on a model and save the result"
    )
    optimize.add_argument("model", help="input .onnx file (never modified)")
    optimize.add_argument(
        "-o", "--output", required=True, help="output .onnx path (written atomically)"
    )
    how = optimize.add_mutually_exclusive_group()
    how.add_argument("--recipe", help="TOML recipe listing passes and options")
    how.add_argument("--passes", help="comma-separated pass names, e.g. cleanup (the default)")
    optimize.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="int8: static QDQ quantization; int4: weight-only MatMuls (MatMulNBits); both "
        "guarded: never slower, accuracy bound",
    )
    _add_pass_flags(optimize)
    _add_data_flags(optimize)
    _add_bound_flags(optimize)
    _add_bench_gate_flags(optimize)
    optimize.add_argument(
        "--overwrite", action="store_true", help="allow writing over the input model"
    )
    optimize.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    optimize.set_defaults(handler=handler)


def _add_pass_flags(optimize: argparse.ArgumentParser) -> None:
    """Every registered pass's declared flags (help and default from the declaration)."""
    from onnxslim.options import add_option_flags
    from onnxslim.registry import get_options_class, pass_names

    for name in pass_names():
        add_option_flags(optimize, name, get_options_class(name))


def _add_data_flags(optimize: argparse.ArgumentParser) -> None:
    optimize.add_argument(
        "--data",
        metavar="DATA",
        help="verification samples (.npz or folder); default: random inputs",
    )
    optimize.add_argument(
        "--shape",
        action="append",
        type=parse_size_argument,
        metavar="NAME=DIMS",
        help="size of a symbolic dim or input, e.g. batch=1 or x=1x3x224x224",
    )
    optimize.add_argument("--providers", help="execution providers for verification (default cpu)")


def _add_bound_flags(optimize: argparse.ArgumentParser) -> None:
    optimize.add_argument(
        "--min-sqnr",
        type=float,
        help="fail if output SQNR vs the input model drops below this (dB)",
    )
    optimize.add_argument(
        "--min-top1",
        type=float,
        help="fail if top-1 agreement with the input model drops below this (0..1)",
    )
    optimize.add_argument(
        "--no-verify", action="store_true", help="skip verification (very large models only)"
    )
    optimize.add_argument("--report", help="write the JSON report here")


def _add_bench_gate_flags(optimize: argparse.ArgumentParser) -> None:
    optimize.add_argument(
        "--bench",
        metavar="PROVIDERS",
        help="benchmark input vs output on these providers, e.g. cpu or cpu,cuda",
    )
    optimize.add_argument(
        "--max-latency-ratio",
        type=float,
        help="with --bench: fail (exit 4) if output/input latency exceeds this",
    )
    optimize.add_argument(
        "--max-size-ratio",
        type=float,
        help="with --bench: fail (exit 4) if output/input file size exceeds this",
    )
    optimize.add_argument(
        "--gate-min-sqnr",
        type=float,
        help="with --bench: fail (exit 4) below this output SQNR (dB)",
    )
    optimize.add_argument(
        "--gate-min-top1", type=float, help="with --bench: fail (exit 4) below this top-1 agreement"
    )


def _add_inspect(commands: argparse._SubParsersAction, handler: Handler) -> None:
    inspect_cmd = commands.add_parser(
        "inspect", help="describe a model: I/O, ops, parameters, MACs, size"
    )
    inspect_cmd.add_argument("model")
    inspect_cmd.add_argument(
        "--shape",
        action="append",
        type=parse_size_argument,
        metavar="NAME=DIMS",
        help="sizes for symbolic dims (MACs)",
    )
    inspect_cmd.add_argument(
        "--groups",
        action="store_true",
        help="list structured-pruning groups (after cleanup, as the prune pass sees them)",
    )
    inspect_cmd.add_argument("--json", action="store_true", help="print JSON")
    inspect_cmd.set_defaults(handler=handler)


def _add_demo(commands: argparse._SubParsersAction, handler: Handler) -> None:
    demo = commands.add_parser("demo", help="run the pipeline on the embedded digits model")
    demo.add_argument(
        "--output-dir", default="onnxslim-demo", help="where the demo writes models and reports"
    )
    demo.add_argument(
        "--recipe", action="store_true", help="print the equivalent TOML recipe and exit"
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a short run (3 distillation epochs, fewer timing runs)",
    )
    demo.add_argument("-q", "--quiet", action="store_true")
    demo.set_defaults(handler=handler)
