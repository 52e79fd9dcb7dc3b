"""Reliability sweep: run passes over a corpus of models; each is verified or refused with a reason.

A crash (any exception that is not a :class:`SlimError`) is a bug in onnxslim. Used by
``benchmarks/corpus_sweep.py`` (the whole onnx backend corpus) and by the test suite (a subset).
"""

from __future__ import annotations

import dataclasses
import glob
import re
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxslim._errors import SlimError, VerificationError
from onnxslim._pipeline import Pipeline
from onnxslim.runtime import create_session

__all__ = [
    "Outcome",
    "corpus_models",
    "sweep_model",
    "reason_group",
    "stored_data",
    "summarize",
    "model_table",
    "prune_share",
    "closing_line",
]

PassFactory = Callable[[], list[Any]]


@dataclasses.dataclass
class Outcome:
    """What happened to one model under one pipeline."""

    model: str
    pipeline: str
    status: str  # "verified", "refused" or "crashed"
    reason: str = ""
    stored_reference: str = ""  # "match", "mismatch", or "" when the corpus has no data
    seconds: float = 0.0
    sqnr_db: float | None = None  # of the last stage vs the input (lossy pipelines)
    modified: bool = False  # the last pass changed the model
    internal: bool = False  # crashed with an exception that is not a SlimError (exit 1)
    why: str = ""  # verified: the last pass's own first line (why it changed nothing, or what)
    parameters_removed: float | None = None  # share of the cleaned model's parameters removed

    @property
    def verdict(self) -> str:
        """improved / unchanged (why) / refused (why) / crashed (why), for the per-model table."""
        if self.status == "verified":
            return "improved" if self.modified else f"unchanged ({self.why or 'nothing to do'})"
        return f"{self.status} ({self.reason})"


def corpus_models(root: str | Path | None = None) -> list[Path]:
    """The models the onnx package ships under ``onnx/backend/test/data`` (light, pytorch-*, simple)."""
    root = Path(root or Path(onnx.__file__).parent / "backend" / "test" / "data")
    paths = sorted(glob.glob(str(root / "light" / "*.onnx")))
    for folder in ("pytorch-converted", "pytorch-operator", "simple"):
        paths += sorted(glob.glob(str(root / folder / "*" / "model.onnx")))
    return [Path(p) for p in paths]


def stored_data(model_path: Path) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Inputs and expected outputs of the model's ``test_data_set_0``, if the corpus has them."""
    folder = model_path.parent / "test_data_set_0"
    if not folder.is_dir():
        return None

    def read(kind: str) -> list[np.ndarray]:
        arrays = []
        for path in sorted(folder.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
            tensor = onnx.TensorProto()
            tensor.ParseFromString(path.read_bytes())
            arrays.append(onnx.numpy_helper.to_array(tensor))
        return arrays

    inputs, outputs = read("input"), read("output")
    return (inputs, outputs) if inputs and outputs else None


def _matches_stored(path: Path, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> bool:
    session = create_session(path)
    feeds = {meta.name: array for meta, array in zip(session.get_inputs(), inputs)}
    actual = session.run(None, feeds)
    for got, expected in zip(actual, outputs):
        if not np.issubdtype(np.asarray(expected).dtype, np.number):
            if not np.array_equal(got, expected):
                return False
        elif not np.allclose(got, expected, rtol=1e-3, atol=1e-5):
            return False
    return True


def reason_group(reason: str) -> str:
    """A short key that groups refusals with the same cause (paths, names and numbers removed)."""
    text = re.sub(r"/\S+", "<path>", reason)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:110]


def sweep_model(
    path: Path,
    label: str,
    passes: PassFactory,
    *,
    check_stored: bool = False,
    workdir: Path | None = None,
    data: Any = None,
    name: str | None = None,
) -> Outcome:
    """Runs ``passes()`` on one model (on ``data`` when given); classifies the result."""
    import time

    from onnxslim.registry import describe_summary

    name = name or str(path)
    started = time.perf_counter()
    outcome = Outcome(model=name, pipeline=label, status="verified")
    try:
        pipeline = Pipeline(passes(), num_samples=2)
        result = pipeline.run(path, data=data)
        last = result.report.stages[-1]
        outcome.modified = last.modified
        story = [line.strip() for line in describe_summary(last.stage, last.summary)]
        # unchanged: the pass's own lines say why (groups left whole, the float model returned)
        outcome.why = " ".join(story[: 1 if last.modified else 4])[:300]
        cleaned = result.report.stages[1].parameters if len(result.report.stages) > 2 else 0
        if cleaned:
            outcome.parameters_removed = 1.0 - last.parameters / cleaned
        fidelity = last.fidelity or {}
        sqnr = fidelity.get("sqnr_db")
        outcome.sqnr_db = float(sqnr) if sqnr is not None else None
        # inf: a NaN appeared where the input model had a number, or a non-numeric output changed
        if fidelity.get("max_abs_error") == float("inf"):  # records keep floats
            outcome.status = "crashed"
            outcome.reason = "silently wrong output: NaN or a changed non-numeric output"
        if check_stored and workdir is not None:
            data = stored_data(path)
            if data is not None:
                out = result.save(workdir / "swept.onnx")
                ours = _matches_stored(out, *data)
                theirs = _matches_stored(path, *data)
                # a mismatch ORT already has on the input model is ORT's, not ours
                outcome.stored_reference = "match" if ours or not theirs else "mismatch"
                if outcome.stored_reference == "mismatch":
                    outcome.status = "crashed"
                    outcome.reason = "output differs from the corpus's stored reference outputs"
    except SlimError as error:
        outcome.status, outcome.reason = "refused", str(error).replace(str(path), "<model>")
        # a pass that broke a model the input of which ORT ran is our bug, not a refusal
        if isinstance(error, VerificationError) and not any(
            text in str(error) for text in ("the input model", "fidelity bound")
        ):
            outcome.status = "crashed"
    except Exception as error:  # a crash: a bug to fix, recorded with its traceback's last frame
        frame = traceback.extract_tb(error.__traceback__)[-1]
        outcome.status, outcome.internal = "crashed", True
        outcome.reason = (
            f"{type(error).__name__}: {error} ({Path(frame.filename).name}:{frame.lineno})"
        )
    outcome.seconds = time.perf_counter() - started
    return outcome


def summarize(outcomes: Sequence[Outcome]) -> str:
    """A table: per pipeline, models tried / verified / refused / crashed, then refusal reasons grouped."""
    from collections import Counter, defaultdict

    width = max([28, *(len(o.pipeline) for o in outcomes)])
    header = f"{'pipeline':{width}} {'tried':>6} {'verified':>9} {'modified':>9} {'refused':>8} {'crashed':>8}"
    lines = [header + "  median SQNR (verified)"]
    by_pipeline: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_pipeline[outcome.pipeline].append(outcome)
    for label, group in by_pipeline.items():
        counts = Counter(o.status for o in group)
        verified = [o for o in group if o.status == "verified"]
        modified = sum(o.modified for o in verified)
        sqnrs = [o.sqnr_db for o in verified if o.sqnr_db is not None]
        median = f"{float(np.median(sqnrs)):.1f} dB" if sqnrs else "-"
        lines.append(
            f"{label:{width}} {len(group):6d} {counts['verified']:9d} {modified:9d} "
            f"{counts['refused']:8d} {counts['crashed']:8d}  {median}"
        )
    stored = Counter(o.stored_reference for o in outcomes if o.stored_reference)
    if stored:
        lines.append(
            f"stored reference outputs (cleanup): {stored['match']} match, {stored['mismatch']} mismatch"
        )
    reasons = Counter(
        (o.pipeline, reason_group(o.reason)) for o in outcomes if o.status == "refused"
    )
    if reasons:
        lines.append("")
        lines.append("refusals, grouped:")
        for (label, reason), count in sorted(reasons.items(), key=lambda kv: (kv[0][0], -kv[1])):
            lines.append(f"  {count:4d}  [{label}] {reason}")
    crashes = [o for o in outcomes if o.status == "crashed"]
    if crashes:
        lines.append("")
        lines.append("CRASHES (bugs):")
        lines += [f"  [{o.pipeline}] {o.model}: {o.reason}" for o in crashes]
    return "\n".join(lines)


def prune_share(outcomes: Sequence[Outcome], threshold: float = 0.10) -> tuple[int, int]:
    """Models the prune pipeline ran on, and how many of them lost >= ``threshold`` of the
    parameters (verified: a refusal or a crash removes nothing)."""
    tried = [o for o in outcomes if "prune" in o.pipeline]
    hits = [
        o
        for o in tried
        if o.status == "verified" and (o.parameters_removed or 0.0) >= threshold - 1e-12
    ]
    return len(tried), len(hits)


def model_table(outcomes: Sequence[Outcome], width: int = 240) -> str:
    """One line per model and pipeline: improved / unchanged (why) / refused (why)."""
    name_width = max([12, *(len(o.model) for o in outcomes)])
    label_width = max([8, *(len(o.pipeline) for o in outcomes)])
    lines = []
    for o in outcomes:
        removed = (
            f" [-{100 * o.parameters_removed:.0f}% params]"
            if o.status == "verified" and "prune" in o.pipeline and o.parameters_removed
            else ""
        )
        line = f"{o.model:{name_width}} {o.pipeline:{label_width}} {o.verdict}{removed}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)


def closing_line(outcomes: Sequence[Outcome]) -> str:
    """Counts of verified / refused / internal errors / crashes, and the prune share."""
    from collections import Counter

    counts = Counter(o.status for o in outcomes)
    internal = sum(o.internal for o in outcomes)
    tried, hits = prune_share(outcomes)
    share = f"{hits}/{tried} ({100 * hits / tried:.0f} %)" if tried else "-"
    return (
        f"summary: {len(outcomes)} runs: {counts['verified']} verified, {counts['refused']} "
        f"refused, {internal} internal errors, {counts['crashed'] - internal} crashes "
        f"(broken or wrong models); prune(0.3) removes >= 10 % of the parameters on {share} "
        "of the models"
    )
