"""The ``onnxslim`` command: optimize, inspect, bench, demo.

Exit codes: 0 success, 2 user error (one line, no traceback), 3 verification failure,
4 benchmark gate failed, 1 internal error (a bug), 130 interrupted, 141 stdout closed early
(``| head``: 128 + SIGPIPE, as ``cat`` or ``grep`` report it; quietly, files already written stay).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from onnxslim._errors import NothingChangedError, SlimError

__all__ = ["main"]

logger = logging.getLogger("onnxslim")


# 128 + SIGPIPE: what the shell reports for a command whose reader closed the pipe early
STDOUT_CLOSED_EXIT_CODE = 128 + 13


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): end quietly, without a traceback."""
    try:
        # the interpreter flushes stdout at exit; pointing it at /dev/null keeps that quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (captured in-process)
        pass
    return STDOUT_CLOSED_EXIT_CODE


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: temp files are removed, no output is written."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _progress(args: argparse.Namespace):
    """Stage lines above the bars, where bars are drawn (a terminal, not quiet, not CI)."""
    from onnxslim import progress
    from onnxslim.formatting import progress_to_stderr

    return progress_to_stderr if progress.enabled() else None


# --- optimize -------------------------------------------------------------------------------


def _passes_from_flags(args: argparse.Namespace) -> list[Any]:
    """The pipeline the flags ask for: cleanup, then every pass one of whose flags was given."""
    from onnxslim._recipe import build_pass
    from onnxslim.options import flags_enable, options_from_flags
    from onnxslim.registry import get_options_class, pass_names

    def wanted(name: str) -> bool:
        # --quantize int8 names the precision; the other passes start with their data/target flag
        return flags_enable(args, name, get_options_class(name)) or (
            args.quantize is not None
            and name == {"int8": "quantize", "int4": "quantize_int4"}[args.quantize]
        )

    if args.passes:
        names = [n.strip() for n in args.passes.split(",") if n.strip()]
    else:
        names = ["cleanup", *(name for name in pass_names() if name != "cleanup" and wanted(name))]
    return [
        build_pass(name, options_from_flags(args, name, get_options_class(name))) for name in names
    ]


def _cmd_optimize(args: argparse.Namespace) -> int:
    from onnxslim._io import load
    from onnxslim._pipeline import Pipeline
    from onnxslim._recipe import load_recipe
    from onnxslim.calibration import join_launch, writes_outputs
    from onnxslim.fidelity import FidelityBounds

    join_launch()  # under torchrun: ranks > 0 calibrate their shard, print nothing, exit 0
    sizes = dict(args.shape or [])
    output = Path(args.output)
    if output.resolve() == Path(args.model).resolve() and not args.overwrite:
        raise SlimError(
            f"{output}: output would overwrite the input model; choose another path or pass --overwrite."
        )
    model = load(args.model)  # fail fast on a bad file, before any other work; loaded once
    if args.recipe:
        recipe = load_recipe(args.recipe)
        passes, bounds, verify = recipe.passes, recipe.bounds, recipe.verify
        sizes = {**recipe.sizes, **sizes}
        num_samples = recipe.num_samples
        providers = args.providers or recipe.providers
    else:
        passes = _passes_from_flags(args)
        bounds, verify, num_samples, providers = FidelityBounds(), True, 4, args.providers
    bounds = FidelityBounds(
        min_sqnr_db=args.min_sqnr if args.min_sqnr is not None else bounds.min_sqnr_db,
        min_top1_agreement=args.min_top1
        if args.min_top1 is not None
        else bounds.min_top1_agreement,
        max_abs_error=bounds.max_abs_error,
    )
    pipeline = Pipeline(  # a prune that removes nothing is exit 2 here, a warning in the API
        passes,
        verify=verify and not args.no_verify,
        bounds=bounds,
        num_samples=num_samples,
        refuse_no_op=True,
    )
    # source: the user's file is the reference (the distillation teacher), not a saved copy;
    # the pipeline opens --data once (onnxslim.inputs.open_samples) for verification and passes
    result = pipeline.run(
        model,
        data=args.data,
        sizes=sizes,
        providers=providers,
        progress=_progress(args),
        source=args.model,
    )
    del model
    if not writes_outputs():
        return 0  # rank 0 of the launch writes every output
    result.save(output, overwrite_input=args.overwrite)
    gate_failures: list[str] = []
    bench_text = ""
    if args.bench:
        bench, gate_failures, bench_text = _bench_input_output(
            args, output, sizes, result.report.to_dict()
        )
        result.report.benchmark = bench.to_dict()
    if args.report:
        Path(args.report).write_text(result.report.to_json() + "\n", encoding="utf-8")
    if not args.quiet:
        print(result.report.table())
        if bench_text:
            print(bench_text)
        print(f"wrote {output}")
    if gate_failures:
        from onnxslim.benchmark import GATE_EXIT_CODE

        more = f" (+{len(gate_failures) - 1} more)" if len(gate_failures) > 1 else ""
        print(f"onnxslim: gate failed: {gate_failures[0]}{more}", file=sys.stderr)
        return GATE_EXIT_CODE
    return 0


def _bench_input_output(
    args: argparse.Namespace, output: Path, sizes: dict[str, Any], pipeline: dict[str, Any]
) -> tuple[Any, list[str], str]:
    """Benchmarks input vs output on the ``--bench`` providers; writes the HTML page beside the output."""
    from onnxslim.benchmark import Gates, benchmark, check_gates
    from onnxslim.fidelity import FidelityBounds

    bench = benchmark(
        [args.model, output], providers=args.bench, sizes=sizes or None, labels=["input", "output"]
    )
    html = output.with_suffix(".bench.html")
    bench.write(html_path=html, pipeline=pipeline)
    gates = Gates(
        fidelity=FidelityBounds(
            min_sqnr_db=args.gate_min_sqnr, min_top1_agreement=args.gate_min_top1
        ),
        max_latency_ratio=args.max_latency_ratio,
        max_size_ratio=args.max_size_ratio,
    )
    return bench, check_gates(bench, gates), bench.to_markdown() + f"\nbenchmark page: {html}"


# --- inspect --------------------------------------------------------------------------------


def _after_cleanup(path: str, sizes: dict[str, Any], **options: Any) -> tuple[Any, str | None]:
    """The model at ``path`` after the registered cleanup pass, as the passes after it see it.

    Returns ``(model, None)``, or the model as stored and the reason when cleanup fails on it
    (inspect still describes the file).
    """
    from onnxslim._io import load
    from onnxslim._pass import PassContext, run_pass
    from onnxslim.registry import get_pass_class

    model = load(path)
    try:
        cleanup = get_pass_class("cleanup")(**options)
        return run_pass(cleanup, model, PassContext(sizes=sizes)).model, None
    except Exception as error:  # a cleanup bug must not stop inspect from describing the file
        logger.debug("inspect: cleanup failed", exc_info=True)
        return load(path), f"cleanup failed on this model ({type(error).__name__}: {error})"


def _inspect_dict(path: str, sizes: dict[str, Any]) -> dict[str, Any]:
    import onnx_ir as ir

    from onnxslim._io import load, model_file_size
    from onnxslim.inputs import DefaultSizeError, input_specs, resolve_shape, runnable_sizes
    from onnxslim.model import model_stats, parameter_count

    model = load(path)
    # weights computed from constants (ConstantOfShape, Constant lists) exist only once cleanup
    # folds them; BatchNormalization stays unfused so the count is the file's layers' weights
    folded, cleanup_note = _after_cleanup(path, sizes, fuse_batchnorm=False)
    # MACs at the sizes the model runs at (a 16-sample waveform is shorter than an STFT
    # kernel), on the folded graph (pads computed from constants inside If bodies resolve)
    try:
        run_sizes = runnable_sizes(model, sizes)
    except DefaultSizeError:
        run_sizes = dict(sizes)
    stats = model_stats(model if cleanup_note else folded, run_sizes)
    ops = Counter(
        (f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type)
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
    )
    external: dict[str, int] = {}
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            location = str(value.const_value.location)
            external[location] = external.get(location, 0) + (value.const_value.length or 0)

    def shape_text(value: ir.Value) -> str:
        if value.shape is None:
            return "?"
        return ", ".join(str(d) if isinstance(d, int) else (d.value or "?") for d in value.shape)

    specs = input_specs(model)
    return {
        "model": path,
        "ir_version": model.ir_version,
        "opsets": dict(model.opset_imports),
        "producer": f"{model.producer_name or '?'} {model.producer_version or ''}".strip(),
        "inputs": [
            {"name": v.name, "dtype": str(v.dtype), "shape": shape_text(v)}
            for v in model.graph.inputs
            if not v.is_initializer()
        ],
        "outputs": [
            {"name": v.name, "dtype": str(v.dtype), "shape": shape_text(v)}
            for v in model.graph.outputs
        ],
        "nodes": sum(ops.values()),
        "op_histogram": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": parameter_count(folded),
        "parameters_stored": parameter_count(model),
        "cleanup_note": cleanup_note,
        "macs": stats.macs,
        "macs_at": {spec.name: list(resolve_shape(spec, run_sizes)) for spec in specs},
        "macs_unknown_nodes": len(stats.unknown_shape_nodes),
        "macs_unknown_reasons": dict(stats.unknown_reasons),
        "size_bytes": model_file_size(path),
        "external_data": external,
    }


def _cmd_inspect(args: argparse.Namespace) -> int:
    from onnxslim._json import json_safe

    sizes = dict(args.shape or [])
    info = _inspect_dict(args.model, sizes)
    if args.groups:
        from onnxslim.registry import get_pass_hook

        # the prune pass runs after cleanup: its groups are those of the cleaned model
        cleaned, note = _after_cleanup(args.model, sizes)
        info["groups_after"] = "as stored" if note else "cleanup"
        info["groups"] = get_pass_hook("prune", "groups")(cleaned, sizes or None)
    if args.json:
        print(json.dumps(json_safe(info), indent=2, allow_nan=False))
        return 0
    _print_inspect(info)
    if args.groups:
        _print_groups(info["groups"], info["groups_after"])
    return 0


def _print_inspect(info: dict[str, Any]) -> None:
    from onnxslim.formatting import human_bytes

    print(f"model:      {info['model']}")
    print(
        f"IR version: {info['ir_version']}   opsets: "
        + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info["opsets"].items())
    )
    print(f"producer:   {info['producer']}")
    for kind in ("inputs", "outputs"):
        for entry in info[kind]:
            print(f"{kind[:-1]:10}  {entry['name']}: {entry['dtype']} [{entry['shape']}]")
    at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in info["macs_at"].items())
    stored = info["parameters_stored"]
    print(
        f"parameters: {info['parameters']:,}"
        + (
            f" (after cleanup folds constants; {stored:,} stored as tensors)"
            if info["parameters"] != stored
            else ""
        )
    )
    if info["cleanup_note"]:
        print(f"note:       {info['cleanup_note']}; figures are of the file as stored")
    print(
        f"MACs:       {info['macs']:,} (at {at})"
        + (
            f", {info['macs_unknown_nodes']} node(s) not counted ({_first_reason(info)})"
            if info["macs_unknown_nodes"]
            else ""
        )
    )
    print(f"size:       {human_bytes(info['size_bytes'])}")
    if info["external_data"]:
        for location, length in info["external_data"].items():
            print(f"external:   {location} ({human_bytes(length)})")
    else:
        print("external:   none")
    print(f"nodes:      {info['nodes']}")
    for op, count in info["op_histogram"].items():
        print(f"  {op:28} {count}")


def _first_reason(info: dict[str, Any]) -> str:
    reasons = info.get("macs_unknown_reasons") or {}
    if not reasons:
        return "unknown shapes"
    node, reason = next(iter(reasons.items()))
    more = f"; +{len(reasons) - 1} more" if len(reasons) > 1 else ""
    return f"{node}: {reason}{more}"


def _print_groups(groups: list[dict[str, Any]], after: str) -> None:
    prunable = [g for g in groups if g["prunable"]]
    where = "after cleanup, as the prune pass sees them" if after == "cleanup" else "as stored"
    print(f"pruning groups: {len(groups)} ({len(prunable)} prunable; {where})")
    for group in groups:
        producers = ", ".join(group["producers"][:3]) + (
            " …" if len(group["producers"]) > 3 else ""
        )
        state = "prunable" if group["prunable"] else "blocked: " + "; ".join(group["reasons"][:2])
        print(f"  #{group['group']:<4} size {group['size']:<5} {producers or '-'}  [{state}]")


# --- demo -----------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from onnxslim._demo import run_demo

    return run_demo(args, progress=_progress(args))


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``onnxslim`` argument parser (its flags are laid out in ``onnxslim._cli_parser``)."""
    from onnxslim._cli_parser import build_parser as build

    return build(optimize=_cmd_optimize, inspect=_cmd_inspect, demo=_cmd_demo)


# A pass asked for a change that made none (NothingChangedError): the flags that change that.
_NO_CHANGE_FLAGS = {
    "prune": "--prune-round-to, a larger --prune or smaller --prune-macs/--prune-latency, or no "
    "prune flag",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # a bad flag (e.g. --shape) is a user error: exit code 2, returned
        return exit_.code if isinstance(exit_.code, int) else 2
    from onnxslim._terminal import terminal

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with terminal(debug=args.debug, quiet=bool(getattr(args, "quiet", False))):
            code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except SlimError as error:
        hint = (
            _NO_CHANGE_FLAGS.get(error.pass_name)
            if isinstance(error, NothingChangedError)
            else None
        )
        more = f"; on the command line that is {hint}." if hint else ""
        print(f"onnxslim: error: {error}{more}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interrupt:
        what = "terminated" if isinstance(interrupt, _Terminated) else "interrupted"
        print(f"onnxslim: {what}; no output was written.", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(
            f"onnxslim: internal error: {type(error).__name__}: {error} "
            "(this is a bug; rerun with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
