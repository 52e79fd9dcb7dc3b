"""``prune_distill``: gradual pruning with recovery, several prune -> distill steps as one pass.

The MACs targets of the steps fall geometrically to ``target_macs`` (3 steps to 0.25 keep
0.63, 0.40, 0.25 of the input's MACs); after each step the model, a state file and the step's
record (MACs, parameters, fidelity to the teacher, the user's metric, latency against the
input timed interleaved, seconds) are written to
``state_dir`` so a re-run with the same options and input continues after the last finished step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir

import onnxslim
from onnxslim import PassContext, SlimError, SlimPass, SlimPassResult
from onnxslim.model import parameter_count
from onnxslim.options import option
from onnxslim.runtime import create_session, interleaved_timing, session_options, session_run

__all__ = ["PruneDistill", "PruneDistillOptions", "step_targets"]

logger = logging.getLogger(__name__)

STATE_FILE = "prune_distill.state.json"


@dataclasses.dataclass(frozen=True)
class PruneDistillOptions:
    """Options of the ``prune_distill`` pass."""

    target_macs: float = option(
        0.5, help="fraction of the input's MACs KEPT after the last step, in (0, 1]"
    )
    steps: int = option(3, help="prune -> distill steps; MACs targets fall geometrically")
    criterion: str = option(
        "auto", help="pruning importance of every step (auto, l2, activation, taylor, ...)"
    )
    round_to: int | None = option(None, help="kept counts are multiples of this (prune's rule)")
    data: Any = option(None, help="training data of every distill step; default: the pipeline's")
    epochs: int = option(5, help="distillation epochs of every step")
    lr: float = option(3e-3, help="distillation learning rate")
    feature_weight: float | None = option(
        None, help="weight of the feature losses at block outputs (None: distill's default)"
    )
    prune: Mapping[str, Any] | None = option(None, help="further options of every prune step")
    distill: Mapping[str, Any] | None = option(None, help="further options of every distill step")
    state_dir: str | None = option(
        None, help="folder of the state file and step models (default: the pipeline's work dir)"
    )
    metric: Callable[[ir.Model], float] | None = option(
        None, help="callable(model) -> task metric, recorded after every step"
    )
    timing_seconds: float = option(
        1.0,
        help="seconds of interleaved ORT timing of every step's model against the input "
        "(latency per step for the report); 0: not timed",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.target_macs <= 1.0:
            raise SlimError(
                f"prune_distill: target_macs {self.target_macs} is outside (0, 1]; it is the "
                "fraction of the MACs kept (0.5 keeps half)."
            )
        if self.steps < 1:
            raise SlimError(f"prune_distill: steps must be >= 1, got {self.steps}.")


def step_targets(target_macs: float, steps: int) -> list[float]:
    """The fraction of the input's MACs kept after each step (geometric, ending at the target)."""
    return [target_macs ** ((step + 1) / steps) for step in range(steps)]


class PruneDistill(SlimPass):
    """Gradual pruning with recovery: ``steps`` rounds of ``prune`` then ``distill``."""

    Options = PruneDistillOptions
    settings: PruneDistillOptions
    name = "prune_distill"
    description = "Gradual structured pruning, each step recovered by distillation (resumable)."
    exact = False

    _input: ir.Model | None = None

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        folder = Path(self.state_dir) if self.state_dir else context.workdir
        if folder is None:
            raise SlimError(
                "prune_distill: no folder for its state; run it in a Pipeline or give state_dir."
            )
        folder.mkdir(parents=True, exist_ok=True)
        state_path = folder / STATE_FILE
        fingerprint = self._fingerprint(model)
        records = _finished_steps(state_path, fingerprint)
        self._input = model.clone() if self.timing_seconds > 0 else None
        if records:
            last = onnxslim.load(folder / records[-1]["model"])
            _move_into(model, last)
            logger.info("prune_distill: resumed after step %d", len(records))
        base = records[0]["macs_before"] if records else None
        for step, target in enumerate(step_targets(self.target_macs, self.steps)):
            if step < len(records):
                continue
            record = self._step(model, context, step, target, base, records)
            base = record["macs_before"] if base is None else base
            onnxslim.save(model, folder / record["model"])
            records.append(record)
            _write_state(state_path, fingerprint, records)
        summary = {
            "target_macs": self.target_macs,
            "resumed_steps": sum(bool(r.get("resumed")) for r in records),
            "steps": [{k: v for k, v in r.items() if k != "resumed"} for r in records],
            "macs_fraction": records[-1]["macs_fraction"],
        }
        for record in records:
            record["resumed"] = True  # what a later run would find
        return SlimPassResult(model, modified=True, summary=summary)

    def _step(
        self,
        model: ir.Model,
        context: PassContext,
        step: int,
        target: float,
        base: int | None,
        records: list[dict[str, Any]],
    ) -> dict[str, Any]:
        from onnxslim.passes.distillation import Distill
        from onnxslim.passes.pruning import StructuredPrune

        started = time.perf_counter()
        current = records[-1]["macs"] if records else None
        relative = target if base is None or not current else min(1.0, target * base / current)
        prune = StructuredPrune(
            target_macs=relative,
            criterion=self.criterion,
            round_to=self.round_to,
            **dict(self.prune or {}),
        ).apply(model, context if not records else dataclasses.replace(context, refuse_no_op=False))
        # only a first step that removes nothing is a no-op run; later ones may meet their target
        macs = prune.summary["macs"]
        base = macs["before"] if base is None else base
        extra = dict(self.distill or {})
        if self.feature_weight is not None:
            extra["feature_weight"] = self.feature_weight
        distill = Distill(self.data, epochs=self.epochs, lr=self.lr, **extra).apply(model, context)
        fidelity = distill.summary["fidelity_after"]
        record = {
            "step": step + 1,
            "target_macs": target,
            "macs_before": base,
            "macs": macs["after"],
            "macs_fraction": macs["after"] / base if base else 1.0,
            "params": parameter_count(model),
            "fidelity": {k: fidelity.get(k) for k in ("top1_agreement", "sqnr_db")},
            "best_epoch": distill.summary.get("best_epoch"),
            "metric": self.metric(model) if self.metric is not None else None,
            **self._latency(model, context),
            "seconds": time.perf_counter() - started,
            "model": f"prune_distill_step{step + 1}.onnx",
        }
        logger.info("prune_distill: step %d: %s", step + 1, record)
        return record

    def _latency(self, model: ir.Model, context: PassContext) -> dict[str, float]:
        """The step model's median latency and its ratio to the input's, timed interleaved."""
        if self._input is None:
            return {}
        from onnxslim.passes.pruning._targets import sample_feeds

        feeds = sample_feeds(self._input, context, context.sizes, 1)
        options = session_options(allow_spinning=False)
        sessions = [create_session(m, context.providers, options) for m in (self._input, model)]
        timing = interleaved_timing(
            [session_run(s, feeds) for s in sessions],
            time_budget_s=self.timing_seconds,
            min_rounds=3,
            warmup=1,
            min_block_s=0.02,
        )
        medians = timing.quantiles()
        return {
            "latency_ms": 1000 * medians[1],
            "input_latency_ms": 1000 * medians[0],
            "latency_fraction": statistics.median(timing.ratios(1, 0)),
        }

    def _fingerprint(self, model: ir.Model) -> str:
        """The options and the input model: a state file of another run is not resumed."""
        digest = hashlib.sha1(ir.to_proto(model).SerializeToString())
        options = {k: v for k, v in self.config().items() if k not in ("data", "metric")}
        digest.update(json.dumps(options, sort_keys=True, default=repr).encode())
        return digest.hexdigest()


def _finished_steps(path: Path, fingerprint: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("fingerprint") != fingerprint:
        logger.info("prune_distill: %s is from other options or another input; starting over", path)
        return []
    return [dict(record, resumed=True) for record in state["steps"]]


def _write_state(path: Path, fingerprint: str, records: list[dict[str, Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    steps = [{k: v for k, v in r.items() if k != "resumed"} for r in records]
    temporary.write_text(
        json.dumps({"fingerprint": fingerprint, "steps": steps}, default=float), encoding="utf-8"
    )
    os.replace(temporary, path)


def _move_into(model: ir.Model, source: ir.Model) -> None:
    """The pass is in place: the resumed step's graph replaces ``model``'s own."""
    from onnxslim.passes.distillation._export import replace_model  # imports torch

    replace_model(model, source)
    model.metadata_props.clear()
    model.metadata_props.update(source.metadata_props)
