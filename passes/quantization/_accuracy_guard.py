"""The accuracy guard: evaluate candidates against the float model; widen clipped ranges, then
keep the most sensitive layers in float until the bound holds."""

from __future__ import annotations

import os
from collections.abc import Collection, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.fidelity import (
    FidelityBounds,
    TaskMetric,
    compare_outputs,
    decisive_top1_agreement,
)
from onnxslim.model import ValueProbe
from onnxslim.passes.quantization._candidates import Candidate, Evaluation
from onnxslim.passes.quantization._emit import Emitter
from onnxslim.passes.quantization._judging import (
    EarlyStop,
    JudgingData,
    evaluation_batches,
    judging_data,
)
from onnxslim.passes.quantization._output_metrics import (
    only_outputs,
    output_metrics,
    proxy_kind,
    proxy_violations,
)
from onnxslim.passes.quantization._prepare import Prepared
from onnxslim.passes.quantization._sensitivity import (
    layer_sensitivity,
    seen_as_among,
    seen_candidates,
)
from onnxslim.progress import task
from onnxslim.runtime import session_options

__all__ = [
    "Evaluator",
    "JudgingData",
    "evaluation_batches",
    "judging_data",
    "first_candidates",
    "keep_sensitive_layers_in_float",
    "layer_sensitivity",
    "output_logits",
    "run_outputs",
    "run_with_logits",
    "widen_clipped_ranges",
]

Feeds = Mapping[str, np.ndarray]


class Evaluator:
    """Runs a candidate on the evaluation batches and checks the bound against the float model.

    The bound is the task ``metric`` when given; else one metric per output chosen from its
    shape and range (:func:`onnxslim.fidelity.choose_metric`): embeddings, maps and sequence
    scores get their task metric, class scores and other outputs the classic SQNR / top-1
    bounds (on logits where an output is a Sigmoid/Softmax of them). A CTC output is judged on
    the text it reads when the model's metadata holds its character table (Paddle's
    ``character``).
    """

    def __init__(
        self,
        input_path: Path,
        prepared: Prepared,
        batches: list[dict],
        bound: FidelityBounds,
        metric: TaskMetric | None = None,
    ) -> None:
        self.batches = batches
        self.bound = bound
        self.reference = run_outputs(input_path, batches)
        metadata = dict(prepared.model.metadata_props)
        self.metrics, proxies = output_metrics(self.reference, bound, metric, metadata)
        self.proxy_outputs = [name for name, _ in proxies]
        self._proxy_reasons = [reason for _, reason in proxies]
        self.logits = {
            o: t for o, t in output_logits(prepared.model).items() if o in self.proxy_outputs
        }
        self.reference_logits = (
            run_with_logits(prepared.path, batches, self.logits) if self.logits else self.reference
        )
        # class scores whose logits decide no row (flat, e.g. a constant-weight head): their
        # logits say nothing of what int8 did to them, so the scores hold the SQNR bound
        self.undecided = [
            name
            for name in self.logits
            if proxy_kind(self.reference[0][name]) == "top1"
            and decisive_top1_agreement(*[only_outputs(self.reference_logits, [name])] * 2)[1] == 0
        ]
        self._early = EarlyStop(self.metrics, self.reference)
        self.evaluations = 0
        self.stopped_early = 0  # evaluations stopped before the last batch

    def summary(self) -> dict[str, Any]:
        """``metric``, ``metric_chosen_because`` and the floors, for the pass's report."""
        judged = [*(m.name for m in self.metrics)]
        reasons = [m.reason for m in self.metrics]
        if self.proxy_outputs:
            kinds = {proxy_kind(self.reference[0][n]) for n in self.proxy_outputs}
            judged.insert(0, "+".join(sorted(kinds, reverse=True)))
            reasons.insert(
                0, "; ".join(self._proxy_reasons) + " (bounds: min_top1 on scores, min_sqnr_db)"
            )
        return {
            "metric": ", ".join(dict.fromkeys(judged)) or "none (accuracy guard off)",
            "metric_chosen_because": "; ".join(r for r in reasons if r),
            "min_score": {m.name: m.bound for m in self.metrics},
        }

    def evaluate(
        self, path: Path, stop_early: bool = False, stop_below: float | None = None
    ) -> Evaluation:
        """The candidate's scores and violations on every batch; ``stop_early`` (where only
        pass/fail matters) stops at the first batch after which a task metric can no longer
        reach its bound, ``stop_below`` (where only beating that score matters) once one can no
        longer reach it: the evaluation then fails, its scores are the most it could reach."""
        self.evaluations += 1
        # one session per candidate: its outputs and (where judged on them) its logits
        outputs: list[dict[str, np.ndarray]] = []
        with_logits: list[dict[str, np.ndarray]] = []
        gained = self._early.start()
        runs = _iter_outputs_and_logits(path, self.batches, self.logits)
        for index, (plain, replaced) in enumerate(runs):
            outputs.append(plain)
            with_logits.append(replaced)
            stop = (
                self._early.check(
                    gained,
                    index,
                    self.reference[index],
                    plain,
                    bound=stop_early,
                    floor=stop_below,
                )
                if stop_early or stop_below is not None
                else None
            )
            if stop is not None and index + 1 < len(self.batches):
                self.stopped_early += 1
                runs.close()  # the candidate's session goes now
                return self._stopped(outputs, *stop)
        fidelity = compare_outputs(self.reference, outputs)
        problems: list[str] = []
        scores: dict[str, float] = {}
        for metric in self.metrics:
            where = f" on {', '.join(metric.outputs)}" if metric.outputs else ""
            score, violation = metric.judge(self.reference, outputs)
            scores[metric.name + where] = score
            if violation is not None:
                problems.append(violation + where)
        if not self.proxy_outputs:
            return Evaluation(fidelity, tuple(problems), task_scores=scores)
        if not self.logits:
            found = proxy_violations(self.bound, self.reference, outputs, self.proxy_outputs)
            return Evaluation(fidelity, tuple(problems + found), task_scores=scores)
        reference = only_outputs(self.reference_logits, self.proxy_outputs)
        candidate = only_outputs(with_logits, self.proxy_outputs)
        logit_fidelity = compare_outputs(reference, candidate)
        found = proxy_violations(self.bound, reference, candidate, self.proxy_outputs, "logits")
        found += self._undecided_violations(outputs)
        return Evaluation(
            fidelity,
            tuple(problems + found),
            logits_sqnr_db=logit_fidelity.sqnr_db,
            on_logits=True,
            task_scores=scores,
        )

    def _undecided_violations(self, outputs: Sequence[Feeds]) -> list[str]:
        """The SQNR bound on each undecided class-score output itself (a Softmax output that
        its own Q/DQ flattened passed on its logits: exact logits, 0 dB scores)."""
        floor = self.bound.min_sqnr_db
        problems: list[str] = []
        if floor is None:
            return problems
        for name in self.undecided:
            ref, cand = only_outputs(self.reference, [name]), only_outputs(outputs, [name])
            sqnr = compare_outputs(ref, cand).sqnr_db
            if sqnr < floor:
                problems.append(
                    f"output SQNR {sqnr:.1f} dB < {floor:g} dB on {name} (its logits decide no "
                    "top-1, so the scores are judged themselves)"
                )
        return problems

    def _stopped(
        self, outputs: list[dict[str, np.ndarray]], metric: TaskMetric, most: float
    ) -> Evaluation:
        done = len(outputs)
        where = f" on {', '.join(metric.outputs)}" if metric.outputs else ""
        under = f"< {metric.bound:g}" if metric.bound is not None and most < metric.bound else ""
        problem = (
            f"{metric.name} at most {most:.4g} {under or 'under the score to beat'}{where} "
            f"(stopped after {done} of {len(self.batches)} batches: the rest cannot lift it)"
        )
        fidelity = compare_outputs(self.reference[:done], outputs)
        return Evaluation(fidelity, (problem,), task_scores={metric.name + where: most})


def first_candidates(
    op_sets: Sequence[tuple[str, tuple[str, ...] | None]],
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
) -> list[Candidate]:
    """One evaluated candidate per op set, with the calibrated ranges."""
    tried = []
    with task("quantize: op-class candidates", len(op_sets), "candidate") as bar:
        for label, op_types in op_sets:
            path = emitter.emit(label, op_types, list(excluded))
            tried.append(Candidate(label, op_types, path, evaluator.evaluate(path)))
            bar.advance(candidate=label)
    return tried


def widen_clipped_ranges(
    tried: list[Candidate],
    clipped: Mapping[str, tuple[float, float]],
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
    skip: Collection[str] = (),
) -> list[Candidate]:
    """Step 1: a clipping method (percentile/entropy/mse) can cut off the rare large values that
    carry the signal (digit strokes on a blank page): widen the most clipped ranges back to
    min/max, most clipped first, until the bound holds (else keep the best-scoring try).
    Candidates labelled in ``skip`` are left as they are."""
    failing = [
        c
        for c in tried
        if not (c.evaluation.accurate or c.dynamic or not clipped or c.label in skip)
    ]
    result = []
    with task("quantize: widening clipped ranges", len(failing), "candidate") as bar:
        for entry in tried:
            if any(entry is c for c in failing):
                entry = _widened(entry, clipped, emitter, evaluator, excluded)
                bar.advance(candidate=entry.label)
            result.append(entry)
    return result


def _widened(
    entry: Candidate,
    clipped: Mapping[str, tuple[float, float]],
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
) -> Candidate:
    best = entry
    counts = sorted({max(1, round(f * len(clipped))) for f in (0.25, 0.5, 1.0)})
    for count in counts:
        widened = {**emitter.ranges, **{n: clipped[n] for n in list(clipped)[:count]}}
        path = emitter.emit(entry.label, entry.op_types, list(excluded), widened)
        evaluation = evaluator.evaluate(path)
        if evaluation.accurate or evaluation.score > best.evaluation.score:
            best = entry.replace(path=path, evaluation=evaluation, ranges=widened, widened=count)
        if evaluation.accurate:
            break
    return best


def keep_sensitive_layers_in_float(
    tried: list[Candidate],
    prepared: Prepared,
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
    skip: Collection[str] = (),
) -> tuple[list[Candidate], dict[str, float]]:
    """Step 2: on static candidates that still break the bound, keep the most sensitive layers
    in float (1, 2, 4, ... up to 32); also the last per-layer SQNR loss ranking (dB). Candidates
    labelled in ``skip`` (already rescued by another placement) are left as they are."""
    sensitivity: dict[str, float] = {}
    result = []
    failing = [
        c for c in tried if not (c.evaluation.accurate or c.op_types is None or c.label in skip)
    ]
    failed = FailedSets(prepared.proto.graph, excluded)
    for entry in tried:
        if not (entry.evaluation.accurate or entry.op_types is None):
            failed.add(entry.op_types, entry.excluded, entry.ranges)
    with task("quantize: sensitive layers in float", len(failing), "candidate") as bar:
        for entry in tried:
            if any(entry is c for c in failing):
                sensitivity = _sensitivity(entry, prepared, evaluator.batches)
                entry = _without_sensitive(entry, sensitivity, emitter, evaluator, excluded, failed)
                bar.advance(candidate=entry.label)
            result.append(entry)
    return result, sensitivity


def _without_sensitive(
    entry: Candidate,
    sensitivity: Mapping[str, float],
    emitter: Emitter,
    evaluator: Evaluator,
    excluded: Mapping[str, str],
    failed: FailedSets,
) -> Candidate:
    kept = dict(entry.excluded)
    ranked = [
        n
        for n, _ in sorted(sensitivity.items(), key=lambda kv: -kv[1])
        if n not in excluded and n not in kept
    ]
    count = 1
    # At most 6 retries (up to 32 layers in float): beyond that int8 is not worth it here.
    while not entry.evaluation.accurate and count <= min(len(ranked), 32):
        # on top of the nodes the candidate already keeps float (a placement's islands)
        extra = {n: f"accuracy guard: SQNR loss {sensitivity[n]:.1f} dB" for n in ranked[:count]}
        extra = {**kept, **extra}
        count *= 2
        if failed.covers(entry.op_types or (), extra, entry.ranges):
            continue  # it keeps less in float than a candidate that failed: it fails too
        path = emitter.emit(entry.label, entry.op_types, [*excluded, *extra], entry.ranges)
        evaluation = evaluator.evaluate(path, stop_early=True)  # pass/fail decides here
        entry = entry.replace(path=path, evaluation=evaluation, excluded=extra)
        if not evaluation.accurate:
            failed.add(entry.op_types or (), extra, entry.ranges)
    return entry


class FailedSets:
    """The nodes each failing static candidate left in float, with its ranges. A candidate
    whose float nodes are a subset of a failed one's at the same ranges quantizes all that one
    did and more: it cannot pass, so it is not emitted. Ranges match when they are the same
    object (the calibrated ones: None; a candidate's widened ones, shared by its variants)."""

    def __init__(self, graph: Any, excluded: Mapping[str, str]) -> None:
        self._nodes = [(n.name, n.op_type) for n in graph.node if n.name]
        self._excluded = set(excluded)
        self.sets: list[tuple[frozenset[str], Any]] = []

    def float_nodes(self, op_types: Collection[str], extra: Collection[str]) -> frozenset[str]:
        """The named nodes outside ``op_types``, the pass's exclusions and ``extra``."""
        kept = self._excluded | set(extra)
        return frozenset(n for n, op in self._nodes if op not in op_types or n in kept)

    def add(self, op_types: Collection[str], extra: Collection[str], ranges: Any) -> None:
        self.sets.append((self.float_nodes(op_types, extra), ranges))

    def covers(self, op_types: Collection[str], extra: Collection[str], ranges: Any) -> bool:
        nodes = self.float_nodes(op_types, extra)
        return any(nodes <= done and same is ranges for done, same in self.sets)


def _sensitivity(entry: Candidate, prepared: Prepared, batches: Sequence[Feeds]) -> dict:
    op_types = entry.op_types or ()
    node_outputs = {
        n.name: n.output[0]
        for n in prepared.proto.graph.node
        if n.op_type in op_types and n.output and n.name
    }
    sensitivity, _ = layer_sensitivity(prepared.model, entry.path, node_outputs, batches)
    return sensitivity


def tensor_sqnr(
    prepared: Prepared, chosen: Candidate, ranges: Mapping[str, Any], batches: Sequence[Feeds]
) -> dict[str, float]:
    """The SQNR (dB) of every calibrated tensor that kept its name in the chosen static model."""
    if chosen.op_types is None:
        return {}
    outputs_of = {f"tensor {name}": name for name in ranges}
    _, sqnr = layer_sensitivity(prepared.model, chosen.path, outputs_of, batches[:2])
    return sqnr


def run_outputs(
    path: str | os.PathLike,
    batches: Sequence[Feeds],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> list[dict[str, np.ndarray]]:
    # the probe keeps external weights mapped (no pre-packing) and runs big models in segments
    probe = ValueProbe(Path(path), [], providers=providers, options=session_options())
    return [probe.run(dict(b), probe.outputs) for b in batches]


def output_logits(model: ir.Model) -> dict[str, str]:
    """Graph outputs made by a final Sigmoid/Softmax -> the logits tensor feeding it.

    A near-binary probability map has a low SQNR even when int8 barely moved the decision
    boundary; the logits measure the damage int8 did.
    """
    logits: dict[str, str] = {}
    for output in model.graph.outputs:
        producer = output.producer()
        if producer is not None and producer.op_type in ("Sigmoid", "Softmax", "LogSoftmax"):
            source = producer.inputs[0]
            if source is not None and source.producer() is not None:
                logits[output.name or ""] = source.name or ""
    return logits


def run_with_logits(
    path: str | os.PathLike,
    batches: Sequence[Feeds],
    logits: Mapping[str, str],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> list[dict[str, np.ndarray]]:
    """Outputs per batch, with each Sigmoid/Softmax output replaced by its logits (the
    dequantized logits in a QDQ model)."""
    return _outputs_and_logits(path, batches, logits, providers)[1]


def _outputs_and_logits(
    path: str | os.PathLike,
    batches: Sequence[Feeds],
    logits: Mapping[str, str],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The outputs per batch and (``logits`` given) the same with each Sigmoid/Softmax output
    replaced by its logits, from ONE session (no logits: the outputs twice, one session)."""
    if not logits:
        outputs = run_outputs(path, batches, providers)
        return outputs, outputs
    plain, replaced = [], []
    for got, with_logits in _iter_outputs_and_logits(path, batches, logits, providers):
        plain.append(got)
        replaced.append(with_logits)
    return plain, replaced


def _iter_outputs_and_logits(
    path: str | os.PathLike,
    batches: Sequence[Feeds],
    logits: Mapping[str, str],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Generator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]], None, None]:
    """Per batch, as :func:`_outputs_and_logits` gives them (one session, run lazily), each
    logits value as the QDQ model's consumers see it (:func:`seen_as_among`)."""
    # the session ORT deploys (full optimizations: QDQ fused), not the probe's default
    probe = ValueProbe(
        Path(path),
        list(dict.fromkeys(c for source in logits.values() for c in seen_candidates(source))),
        providers=providers,
        options=session_options(),
    )
    values = seen_as_among(probe.names, logits.values())
    seen_as = {output: values[source] for output, source in logits.items() if source in values}
    names = list(probe.graph_outputs)
    fetch = [seen_as.get(name, name) for name in names]
    for batch in batches:
        got = probe.run(batch, list(dict.fromkeys([*names, *fetch])))
        yield {name: got[name] for name in names}, {name: got[f] for name, f in zip(names, fetch)}
