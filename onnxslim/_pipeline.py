"""The pass manager: runs passes, verifies the model after each one, and reports per pass."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim._errors import SlimError, VerificationError
from onnxslim._io import load, model_file_size, save
from onnxslim._json import json_safe
from onnxslim._pass import PassContext, SlimPass, run_pass
from onnxslim._pipeline_notes import far_from_input, unexercised_changes
from onnxslim._verify_shapes import declared_resizes, fit_to_declared, without
from onnxslim.fidelity import FidelityBounds, compare_outputs
from onnxslim.formatting import human_bytes, human_count
from onnxslim.inputs import (
    DimSizes,
    SampleReader,
    input_specs,
    open_samples,
    random_inputs,
    runnable_sizes,
    samples,
)
from onnxslim.model import model_stats
from onnxslim.progress import Task, task
from onnxslim.runtime import create_session, resolve_providers, session_options

__all__ = ["Bounds", "Pipeline", "Report", "StageRecord", "Result"]

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


Bounds = FidelityBounds  # the public name of the pipeline's bounds; one type behind it


@dataclasses.dataclass
class StageRecord:
    """One line of the report: the input model, or the model after one pass."""

    stage: str
    description: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    wall_time_s: float = 0.0
    verify_time_s: float = 0.0
    modified: bool = False
    parameters: int = 0
    macs: int = 0
    nodes: int = 0
    size_bytes: int = 0
    fidelity: dict[str, Any] | None = None
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)  # what verification left out
    model_path: str | None = (
        None  # where the stage's model was kept (``Pipeline.run(stage_dir=…)``)
    )


@dataclasses.dataclass
class Report:
    """Per-stage figures of a pipeline run; ``to_json()`` for machines, ``table()`` for people."""

    model: str
    samples: int
    sample_source: str
    stages: list[StageRecord] = dataclasses.field(default_factory=list)
    benchmark: dict[str, Any] | None = None  # onnxslim.benchmark result of input vs output, if run
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. far from the input

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "model": self.model,
            "samples": self.samples,
            "sample_source": self.sample_source,
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
        }
        if self.warnings:
            document["warnings"] = list(self.warnings)
        if self.benchmark is not None:
            document["benchmark"] = self.benchmark
        return json_safe(document)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def story(self) -> list[str]:
        """Each pass's summary as a few lines for people (its registry ``describe`` hook);
        the ``key=value`` figures stay in :meth:`to_json`."""
        from onnxslim.registry import describe_summary

        lines = []
        for stage in self.stages[1:]:
            described = describe_summary(stage.stage, stage.summary)
            described += [f"Verification: {note}." for note in stage.notes]
            if described:
                indent = " " * (len(stage.stage) + 2)
                lines.append(f"{stage.stage}: {described[0]}")
                lines += [indent + line for line in described[1:]]
        return lines

    def table(self) -> str:
        header = ["stage", "time", "params", "MACs", "size", "nodes", "fidelity vs input"]
        rows = []
        for stage in self.stages:
            fidelity = "-"
            if stage.fidelity:
                sqnr = stage.fidelity.get("sqnr_db")
                max_abs = stage.fidelity.get("max_abs_error")
                fidelity = f"max|Δ| {max_abs:.2g}" if _finite(max_abs) else f"max|Δ| {max_abs}"
                fidelity += f", SQNR {sqnr:.1f} dB" if _finite(sqnr) else f", SQNR {sqnr}"
                top1 = stage.fidelity.get("top1_agreement")
                if isinstance(top1, float):
                    fidelity += f", top-1 {100 * top1:.1f}%"
            rows.append(
                [
                    stage.stage,
                    f"{stage.wall_time_s:.2f}s" if stage.stage != "input" else "-",
                    human_count(stage.parameters),
                    human_count(stage.macs),
                    human_bytes(stage.size_bytes),
                    str(stage.nodes),
                    fidelity,
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        lines += self.story()
        lines += [f"warning: {warning}" for warning in self.warnings]
        lines.append(f"verified on {self.samples} sample(s) from {self.sample_source}")
        return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


@dataclasses.dataclass
class Result:
    """The optimized model and the run's report."""

    model: ir.Model
    report: Report

    def save(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        return save(self.model, path, **kwargs)


def _signature(model: ir.Model) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
    inputs = [(spec.name, spec.dtype) for spec in input_specs(model)]
    outputs = [(value.name, value.dtype) for value in model.graph.outputs]
    return inputs, outputs


class Pipeline:
    """Runs passes in order and verifies the model after every pass.

    Args:
        passes: ``SlimPass`` instances (see ``onnxslim.passes``).
        verify: Check after each pass (checker, ORT session, signature, outputs). Turning it
            off is for very large models only.
        bounds: Fidelity bounds against the input model for lossy passes (default: report only).
        num_samples: How many verification samples to draw from the data (or generate).
        refuse_no_op: A pass asked for a change that makes none fails instead of warning
            (``PassContext.refuse_no_op``; ``onnxslim optimize`` sets it).
    """

    def __init__(
        self,
        passes: Sequence[SlimPass],
        *,
        verify: bool = True,
        bounds: FidelityBounds | Mapping[str, float] | None = None,
        num_samples: int = 4,
        refuse_no_op: bool = False,
    ) -> None:
        for item in passes:
            if not isinstance(item, SlimPass):
                raise TypeError(f"{item!r} is not an onnxslim pass (SlimPass)")
        self.passes = list(passes)
        self.verify = verify
        self.bounds = (
            FidelityBounds(**bounds)  # type: ignore[arg-type]
            if isinstance(bounds, Mapping)
            else (bounds or FidelityBounds())
        )
        if self.bounds.metric is not None:
            raise TypeError("Pipeline bounds take no metric: it runs on a pass's own outputs")
        self.num_samples = num_samples
        self.refuse_no_op = refuse_no_op

    def run(
        self,
        model: ir.Model | str | os.PathLike,
        *,
        data: Any = None,
        sizes: DimSizes | None = None,
        providers: str | Sequence[str] | None = None,
        progress: Callable[[str], None] | None = None,
        stage_dir: str | os.PathLike | None = None,
        source: str | os.PathLike | None = None,
    ) -> Result:
        """Optimizes ``model`` (a path, or an in-memory model which is not modified).

        ``data``: anything :func:`onnxslim.inputs.open_samples` takes, opened once here and
        handed to every pass as ``PassContext.data``; a reader is used as is, an iterable's
        items are verification feeds as given.
        ``stage_dir``: also keep every stage's model there (``01-cleanup.onnx`` …), e.g. to
        benchmark the accuracy/latency trade-off across stages.
        ``source``: the file an in-memory ``model`` was just loaded from. That file is then the
        reference (teacher, fidelity) and ``model`` itself is optimized, not a copy: the caller
        hands it over, and nothing is loaded or saved twice.

        Raises:
            VerificationError: a pass broke the model; the message names the pass.
        """
        resolved_providers = resolve_providers(providers)
        with tempfile.TemporaryDirectory(prefix="onnxslim-run-") as workdir:
            workdir_path = Path(workdir)
            reference_path, working, label = _working_model(model, source, workdir_path)
            reader = (
                None if data is None else open_samples(data, working, batch_size=None, sizes=sizes)
            )
            if reader is None:  # smoke data: sizes for symbolic dims at which the model runs
                sizes = runnable_sizes(working, sizes, resolved_providers)
            verification, sample_source = self._samples(working, reader, sizes)
            context = PassContext(
                reference_path=reference_path,
                sample_inputs=verification,
                data=reader,
                sizes=dict(sizes or {}),
                providers=resolved_providers,
                workdir=workdir_path,
                refuse_no_op=self.refuse_no_op,
            )
            report = Report(model=label, samples=len(verification), sample_source=sample_source)
            signature = _signature(working)
            reference_outputs = self._outputs(
                working, verification, resolved_providers, stage="input"
            )
            report.stages.append(
                self._record("input", working, sizes, model_file_size(reference_path))
            )
            report.stages[0].model_path = (
                str(reference_path)
                if stage_dir is None
                else str(save(working, Path(stage_dir) / "00-input.onnx"))
            )
            with task("optimize", total=len(self.passes), unit="pass", eta=False) as bar:
                working = self._run_passes(
                    working,
                    context,
                    report,
                    (signature, verification, resolved_providers, reference_outputs),
                    sizes,
                    progress,
                    stage_dir,
                    bar,
                )
            far = far_from_input(report.stages, self.passes, self.bounds)
            notes = [far] if far is not None else []
            for note in notes + unexercised_changes(report.stages, self.passes, sample_source):
                logger.warning("%s", note)
                report.warnings.append(note)
            return Result(model=working, report=report)

    def _run_passes(
        self,
        working: ir.Model,
        context: PassContext,
        report: Report,
        checks: tuple[Any, list[Feeds], list[str], list[Feeds]],
        sizes: DimSizes | None,
        progress: Callable[[str], None] | None,
        stage_dir: str | os.PathLike | None,
        bar: Task,
    ) -> ir.Model:
        """Every pass in turn, each verified; the stage bar moves on after each.

        ``checks``: the input's signature, the verification samples, the providers and the
        input's outputs on them.
        """
        signature, verification, providers, reference_outputs = checks
        previous_outputs = reference_outputs
        for index, slim_pass in enumerate(self.passes, start=1):
            bar.describe(stage=slim_pass.name)
            if progress:
                progress(f"[{index}/{len(self.passes)}] {slim_pass.name}: {slim_pass.description}")
            started = time.perf_counter()
            result = run_pass(slim_pass, working, context)
            working = result.model
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            bar.describe(stage=f"{slim_pass.name} (verifying)")
            record, previous_outputs = self._verify(
                slim_pass,
                working,
                signature,
                verification,
                sizes,
                providers,
                reference_outputs,
                previous_outputs,
            )
            record.wall_time_s = elapsed
            record.verify_time_s = time.perf_counter() - started
            record.modified = result.modified
            record.summary = dict(result.summary)
            if stage_dir is not None:
                kept = save(working, Path(stage_dir) / f"{index:02d}-{slim_pass.name}.onnx")
                record.model_path = str(kept)
            report.stages.append(record)
            bar.advance(1, stage=slim_pass.name)
            if progress:
                progress(f"      done in {elapsed:.1f}s (verified in {record.verify_time_s:.1f}s)")
        return working

    def _samples(
        self, working: ir.Model, reader: SampleReader | None, sizes: DimSizes | None
    ) -> tuple[list[Feeds], str]:
        if reader is not None:
            return samples(reader, working, self.num_samples), "the given data"
        feeds = [random_inputs(working, sizes, seed=seed) for seed in range(self.num_samples)]
        return feeds, "random inputs (smoke data)"

    @staticmethod
    def _outputs(
        model_or_path: Any, samples: list[Feeds], providers: list[str], stage: str
    ) -> list[Feeds]:
        what = "the input model" if stage == "input" else f"the model after pass '{stage}'"
        try:
            session = create_session(model_or_path, providers, session_options())
        except SlimError:
            raise
        except Exception as error:
            raise VerificationError(
                f"ONNX Runtime cannot load {what}: {_first_line(error)}"
            ) from None
        names = [output.name for output in session.get_outputs()]
        outputs = []
        for feeds in samples:
            try:
                values = session.run(None, feeds)
            except Exception as error:
                raise VerificationError(
                    f"ONNX Runtime failed to run {what}: {_first_line(error)}"
                ) from None
            outputs.append(dict(zip(names, values)))
        return outputs

    def _record(
        self, stage: str, model: ir.Model, sizes: DimSizes | None, size: int
    ) -> StageRecord:
        stats = model_stats(model, sizes)
        return StageRecord(
            stage=stage,
            parameters=stats.parameters,
            macs=stats.macs,
            nodes=stats.nodes,
            size_bytes=size,
        )

    def _verify(
        self,
        slim_pass: SlimPass,
        model: ir.Model,
        signature: Any,
        samples: list[Feeds],
        sizes: DimSizes | None,
        providers: list[str],
        reference_outputs: list[Feeds],
        previous_outputs: list[Feeds],
    ) -> tuple[StageRecord, list[Feeds]]:
        name = slim_pass.name
        if _signature(model) != signature:
            raise VerificationError(
                f"pass '{name}' changed the graph's inputs/outputs {signature} -> {_signature(model)}; "
                "this is a bug in the pass."
            )
        with tempfile.TemporaryDirectory(prefix="onnxslim-verify-") as tmp:
            path = Path(tmp) / "model.onnx"
            save(model, path)
            size = model_file_size(path)
            record = self._record(name, model, sizes, size)
            record.description = slim_pass.description
            record.config = slim_pass.config()
            if not self.verify:
                return record, previous_outputs
            try:
                onnx.checker.check_model(str(path), full_check=True)
            except Exception as error:
                raise VerificationError(
                    f"pass '{name}' produced a model the ONNX checker rejects: {_first_line(error)}"
                ) from None
            if not slim_pass.exact:
                samples = fit_to_declared(model, samples)  # a pruned KV cache is narrower
            outputs = self._outputs(path, samples, providers, stage=name)
        resized = set() if slim_pass.exact else declared_resizes(model, reference_outputs)
        for ref, out in zip(reference_outputs, outputs):
            for output_name, array in ref.items():
                if out[output_name].shape != array.shape and output_name not in resized:
                    raise VerificationError(
                        f"pass '{name}' changed the shape of output '{output_name}': "
                        f"{list(array.shape)} -> {list(out[output_name].shape)}."
                    )
        if resized:
            # the pass declared these outputs narrower (the present KV cache): not comparable
            reference_outputs = [without(r, resized) for r in reference_outputs]
            previous_outputs = [without(r, resized) for r in previous_outputs]
            outputs = [without(r, resized) for r in outputs]
            record.notes = [
                f"output(s) {', '.join(sorted(resized))} resized by the pass: not compared"
            ]
        if slim_pass.exact:
            _check_exact(slim_pass, previous_outputs, outputs)
        fidelity = compare_outputs(reference_outputs, outputs)
        record.fidelity = fidelity.as_record()  # floats; encoded at the JSON edge
        if not slim_pass.exact:
            problems = self.bounds.violations(fidelity)
            if problems:
                raise VerificationError(
                    f"pass '{name}' misses the fidelity bound: {'; '.join(problems)}; "
                    "loosen the bound or make the pass less aggressive."
                )
        return record, outputs


def _working_model(
    model: ir.Model | str | os.PathLike,
    source: str | os.PathLike | None,
    workdir: Path,
) -> tuple[Path, ir.Model, str]:
    """The reference file, the model the passes work on, and the report's label."""
    if isinstance(model, ir.Model) and source is not None:
        return Path(source), model, str(source)
    if isinstance(model, ir.Model):
        reference_path = workdir / "reference.onnx"
        save(model, reference_path)
        # a copy: the caller's in-memory model is not modified
        working = ir.serde.deserialize_model(ir.serde.serialize_model(model))
        return reference_path, working, model.graph.name or "<in-memory model>"
    return Path(model), load(Path(model)), str(model)


def _check_exact(slim_pass: SlimPass, previous: list[Feeds], outputs: list[Feeds]) -> None:
    """An exact pass must reproduce the previous stage's outputs within its tolerance."""
    name = slim_pass.name
    for before, after in zip(previous, outputs):
        for output_name, expected in before.items():
            actual = after[output_name]
            if not np.issubdtype(expected.dtype, np.number):
                if not np.array_equal(actual, expected):
                    raise VerificationError(
                        f"pass '{name}' is exact but changed output '{output_name}'; "
                        "this is a bug in the pass."
                    )
                continue
            if not np.allclose(
                actual, expected, atol=slim_pass.atol, rtol=slim_pass.rtol, equal_nan=True
            ):
                largest = float(
                    np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))
                )
                raise VerificationError(
                    f"pass '{name}' is exact but changed output '{output_name}' by up to {largest:.3g} "
                    f"(tolerance atol={slim_pass.atol}); this is a bug in the pass."
                )


# ORT's prefix and the C++ source location and failed check inside its messages: noise to users
_ORT_NOISE = (
    re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : "),
    re.compile(r"/onnxruntime_src/\S+:\d+ (onnxruntime::\S+\(.*?\) .*? was false\. )?"),
)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    for noise in _ORT_NOISE:
        text = noise.sub("", text)
    return text
