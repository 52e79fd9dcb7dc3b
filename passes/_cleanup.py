"""Cleanup: the exact pass every pipeline starts with (opset upgrade, folding, BN fusion, DCE)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.version_converter import ConvertVersionPass

from onnxslim import PassContext, SlimError, SlimPass, SlimPassResult, UnsupportedModelError
from onnxslim.compat.onnxscript import (
    AXES_AS_INPUT_RULES,
    BATCHNORM_FOLDING_RULES,
    DEFAULT_FOLD_INPUT_SIZE_LIMIT,
    constant_folding_pass,
    default_rewrite_rules,
)
from onnxslim.model import WEIGHT_INPUTS, onnx_opset
from onnxslim.passes._cleanup_options import CleanupOptions

__all__ = ["Cleanup", "CleanupOptions"]

logger = logging.getLogger(__name__)

# Inputs that hold parameters: a ConstantOfShape feeding one of these is a weight generator
# (opset-9 model-zoo exports), so folding it into an initializer is what the user wants.
# The one weight table for the standard ops, less slot 0 (an activation unless constant),
# plus BatchNormalization's running statistics.
_PARAMETER_OPS = (
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "PRelu",
)
_PARAMETER_SLOTS = {op: {slot for slot in WEIGHT_INPUTS[op] if slot != 0} for op in _PARAMETER_OPS}
_PARAMETER_SLOTS["BatchNormalization"] |= {3, 4}
# ...and the recurrent ops' W, R and B, for the layout chains that build them
_WEIGHT_SLOTS = {**_PARAMETER_SLOTS, **{op: {1, 2, 3} for op in ("LSTM", "GRU", "RNN")}}
# Ops that only move elements (no arithmetic): folding one is exact by construction.
_LAYOUT_OPS = frozenset(
    {
        "Slice",
        "Concat",
        "Unsqueeze",
        "Squeeze",
        "Reshape",
        "Transpose",
        "Split",
        "Flatten",
        "Identity",
    }
)
# How many layout ops deep a chain from a constant to a weight slot is followed.
_LAYOUT_DEPTH = 8
# Constant folding may materialise tensors up to this many elements (larger stays symbolic).
_FOLD_OUTPUT_LIMIT = 1 << 26


def _feeds_parameters_only(node: ir.Node) -> bool:
    uses = list(node.outputs[0].uses())
    return bool(uses) and all(
        index in _PARAMETER_SLOTS.get(user.op_type, ()) for user, index in uses
    )


def _weight_only(value: ir.Value, depth: int = 0) -> bool:
    """Whether every use of ``value`` is a parameter slot, directly or through layout ops (in
    this graph or a subgraph capturing it): torch's LSTM export reorders W/R/B gate blocks with
    Slice/Concat/Unsqueeze, and Silero VAD does so inside an If."""
    uses = list(value.uses())
    if not uses or value.is_graph_output():
        return False
    for user, index in uses:
        if user.domain not in ("", "ai.onnx"):
            return False
        if index in _WEIGHT_SLOTS.get(user.op_type, ()):
            continue
        if user.op_type not in _LAYOUT_OPS or depth >= _LAYOUT_DEPTH:
            return False
        if not all(_weight_only(output, depth + 1) for output in user.outputs):
            return False
    return True


# A ConstantOfShape this small is folded: the model does not grow, and what it feeds (torch's
# F.pad computing its pads from ConstantOfShape/Concat/Slice) becomes a constant other passes read.
_SMALL_FOLD_ELEMENTS = 1024


def _small_constant_shape(node: ir.Node) -> bool:
    shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
    if shape is None:
        return False
    dims = shape.numpy().reshape(-1)
    return bool((dims >= 0).all()) and int(np.prod(dims)) <= _SMALL_FOLD_ELEMENTS


def _should_fold(node: ir.Node) -> bool | None:
    """Called for nodes whose inputs are all constant. Weight generators and layout chains that
    end in weight slots fold whatever their size (the weight they make replaces its source);
    the rest follows onnxscript's size limits."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "ConstantOfShape":
        return True if _feeds_parameters_only(node) or _small_constant_shape(node) else None
    if node.op_type in _LAYOUT_OPS and node.outputs and all(map(_weight_only, node.outputs)):
        return True
    return None


def _axes_inputs_to_attributes(model: ir.Model) -> bool:
    """Before opset 13, Squeeze/Unsqueeze take axes as an attribute; onnxscript's folding of
    ConcatFromSequence emits the opset-13 form (an axes input) even in older graphs."""
    opset = onnx_opset(model)
    if opset is None or opset >= 13:
        return False
    modified = False
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if (
            node.op_type in ("Squeeze", "Unsqueeze")
            and node.domain in ("", "ai.onnx")
            and len(node.inputs) == 2
            and node.inputs[1] is not None
            and node.inputs[1].const_value is not None
        ):
            axes = node.inputs[1].const_value.numpy().reshape(-1).tolist()
            node.attributes["axes"] = ir.AttrInt64s("axes", [int(a) for a in axes])
            node.resize_inputs(1)
            modified = True
    return modified


def _remove_unused_subgraph_initializers(model: ir.Model) -> bool:
    """Initializers of If/Loop/Scan bodies that no live node reads (onnx-ir's unused-node
    removal prunes only the main graph's): folding a body's weight chain leaves its source, and
    folding an If on a constant condition leaves the dropped branch's nodes as (dead) users."""
    bodies = [
        attribute.as_graph()
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        for attribute in node.attributes.values()
        if attribute.type == ir.AttributeType.GRAPH
    ]
    live = {id(graph) for graph in [model.graph, *bodies]}
    removed = 0
    for body in bodies:
        for name, value in list(body.initializers.items()):
            if value.is_graph_output() or value in body.inputs:
                continue
            if any(id(use.node.graph) in live for use in value.uses()):
                continue
            body.initializers.pop(name)
            removed += 1
    return removed > 0


def _identity_must_stay(node: ir.Node) -> bool:
    """An Identity that produces a graph output stays when removing it would make that output a
    value the graph does not compute: an input or initializer (of this graph or an outer one),
    a value of an outer scope (an If/Loop branch returning a captured value), or a value that is
    already an output under another name (``y = Identity(r)`` with ``r`` an output too)."""
    source, target = node.inputs[0], node.outputs[0]
    if source is None or not target.is_graph_output():
        return False
    producer = source.producer()
    return producer is None or producer.graph is not node.graph or source.is_graph_output()


class GraphOutputSafeIdentityElimination(ir.passes.InPlacePass):
    """onnx-ir's IdentityEliminationPass, less the identities it cannot remove soundly.

    onnx-ir's pass (1.1) moves a subgraph output onto the outer value an ``If`` branch returns
    through an Identity (the checker then rejects the branch: "Graph output 't' is not an output
    of any node", or the move raises "Value ... is already an output of a different graph" when
    the outer value is an output elsewhere), and renames a main-graph output away when the
    Identity's input is an output already (two outputs ``p1, p1``, ``y`` gone).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graphs: list[ir.Graph | ir.Function] = [model.graph, *model.functions.values()]
        candidates = [
            node
            for graph in graphs
            for node in ir.traversal.RecursiveGraphIterator(graph)
            if node.op_type == "Identity"
            and node.domain in ("", "ai.onnx")
            and len(node.inputs) == 1
            and len(node.outputs) == 1
            and node.inputs[0] is not None
        ]
        removed = 0
        for node in candidates:
            if _identity_must_stay(node):
                continue
            source, target = node.inputs[0], node.outputs[0]
            assert source is not None
            if source.type is None:
                source.type = target.type
            if source.shape is None:
                source.shape = target.shape
            was_output = target.is_graph_output()
            target.replace_all_uses_with(source, replace_graph_outputs=True)
            if was_output:
                source.name = target.name
            assert node.graph is not None
            node.graph.remove(node, safe=True)
            removed += 1
        return ir.passes.PassResult(model, modified=removed > 0)


@dataclasses.dataclass(frozen=True)
class _Step:
    """One named stage of cleanup; ``run`` edits the model in place and says if it changed it."""

    name: str
    run: Callable[[ir.Model], bool]


def _as_step(name: str, onnx_pass: ir.passes.PassBase) -> _Step:
    return _Step(name, lambda model: onnx_pass(model).modified)


# Above this many bytes of tensors the checker cannot take the model as one proto.
_CHECKER_BYTE_LIMIT = 1 << 30


def _checker_failure(model: ir.Model) -> str | None:
    """The ONNX checker's first line of complaint about ``model``, or None when it accepts it
    (or when the model is too large to check in memory: the pipeline checks the saved file)."""
    weight_bytes = sum(
        value.const_value.nbytes
        for value in model.graph.initializers.values()
        if value.const_value is not None
    )
    if weight_bytes > _CHECKER_BYTE_LIMIT:
        return None
    try:
        onnx.checker.check_model(ir.to_proto(model), full_check=True)
    except Exception as error:
        return f"the ONNX checker rejects its result: {str(error).strip().splitlines()[0]}"
    return None


def _adopt(model: ir.Model, source: ir.Model) -> None:
    """Makes ``model`` carry ``source``'s graph and functions (Cleanup is in place: the result
    must be the input object)."""
    model.graph = source.graph
    model.ir_version = source.ir_version
    model.functions.clear()
    model.functions.update(source.functions)


@dataclasses.dataclass
class _StepRunner:
    """Runs cleanup's steps; guarded, each step runs on a copy and is dropped for this model
    when it raises or the checker rejects its result, and the rest still applies."""

    guarded: bool
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)

    def run(self, model: ir.Model, step: _Step) -> bool:
        if step.name in self.dropped:
            return False
        if not self.guarded:
            return step.run(model)
        trial = model.clone()
        try:
            modified = step.run(trial)
        except SlimError:
            raise
        except Exception as error:
            reason = f"it raised {type(error).__name__}: {str(error).strip().splitlines()[0]}"
            self._drop(step, reason)
            return False
        failure = _checker_failure(trial) if modified else None
        if failure is not None:
            self._drop(step, failure)
            return False
        if modified:
            _adopt(model, trial)
        return modified

    def _drop(self, step: _Step, reason: str) -> None:
        logger.warning("cleanup: step '%s' dropped for this model: %s", step.name, reason)
        self.dropped[step.name] = reason


class Cleanup(SlimPass):
    """Constant folding, Constant -> initializer, dead code and identity removal, Conv/Gemm+BN
    folding, CSE, optional opset upgrade, and shape inference. Outputs are unchanged.

    A step that raises or breaks the checker on a model is dropped for that model and named,
    with its reason, in the summary's ``dropped_steps``; the other steps still apply."""

    Options = CleanupOptions
    settings: CleanupOptions
    name = "cleanup"
    description = (
        "fold constants and BatchNorm, remove dead/identity nodes, upgrade opset, infer shapes"
    )
    exact = True
    # BN folding re-associates float arithmetic: outputs match within float32 rounding.
    atol = 1e-4
    rtol = 1e-4

    def _upgrade_opset(self, model: ir.Model) -> bool:
        current = onnx_opset(model)
        if (
            self.settings.target_opset is None
            or current is None
            or current >= self.settings.target_opset
        ):
            return False
        result = ConvertVersionPass(self.settings.target_opset, fallback=True)(model)
        after = onnx_opset(result.model)
        if after != self.settings.target_opset:
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {current} to {self.settings.target_opset} "
                "(the version converter has no adapter for one of its ops); re-export at a newer opset."
            )
        return True

    def _simplify_steps(self, opset: int | None) -> list[_Step]:
        excluded: frozenset[str] = frozenset()
        if not self.settings.fuse_batchnorm:
            excluded |= BATCHNORM_FOLDING_RULES
        if opset is not None and opset < 13:
            # these rules emit opset-13 forms (axes as an input): wrong in older graphs
            excluded |= AXES_AS_INPUT_RULES
        # default_rewrite_rules matches no-op constants exactly (x + 1e-10 is not x + 0)
        rules = default_rewrite_rules(exclude=excluded)
        steps: list[_Step] = []
        if self.settings.fold_constants:
            folding = constant_folding_pass(
                input_size_limit=DEFAULT_FOLD_INPUT_SIZE_LIMIT,
                output_size_limit=_FOLD_OUTPUT_LIMIT,
                should_fold=_should_fold,
            )
            steps.append(_as_step("fold_constants", folding))
        return steps + [
            _as_step("rewrite", rewriter.RewritePass(rules)),
            _as_step("eliminate_identities", GraphOutputSafeIdentityElimination()),
            _as_step("remove_unused_nodes", common_passes.RemoveUnusedNodesPass()),
            _as_step("remove_unused_functions", common_passes.RemoveUnusedFunctionsPass()),
            _as_step("remove_unused_opsets", common_passes.RemoveUnusedOpsetsPass()),
        ]

    def _prepare_steps(self, model: ir.Model) -> list[_Step]:
        steps = [_Step("upgrade_opset", self._upgrade_opset)]
        if model.functions:
            steps.insert(0, _as_step("inline_functions", common_passes.InlinePass()))
        return steps + [
            _as_step(
                "lift_constants",
                common_passes.LiftConstantsToInitializersPass(
                    lift_all_constants=True, size_limit=0
                ),
            ),
            _Step("ir_version_4", _raise_ir_version),
            # initializers listed as graph inputs (the IR < 4 convention) are weights, not
            # inputs: unlisting them lets folding see them as constants
            _as_step("unlist_initializers", common_passes.RemoveInitializersFromInputsPass()),
        ]

    def _finish_steps(self) -> list[_Step]:
        return [
            _Step("axes_to_attributes", _axes_inputs_to_attributes),
            _as_step(
                "lift_folded_constants",
                common_passes.LiftConstantsToInitializersPass(
                    lift_all_constants=True, size_limit=0
                ),
            ),
            _as_step("deduplicate_initializers", common_passes.DeduplicateInitializersPass()),
            _as_step(
                "eliminate_common_subexpressions",
                common_passes.CommonSubexpressionEliminationPass(),
            ),
            _as_step("remove_unused_nodes_final", common_passes.RemoveUnusedNodesPass()),
            _Step("remove_unused_subgraph_initializers", _remove_unused_subgraph_initializers),
            _as_step("topological_sort", common_passes.TopologicalSortPass()),
        ]

    def _run_steps(self, model: ir.Model, runner: _StepRunner) -> bool:
        modified = False
        for step in self._prepare_steps(model):
            modified |= runner.run(model, step)
        simplify = self._simplify_steps(onnx_opset(model))
        for _ in range(self.settings.iterations):
            changed = False
            for step in simplify:
                changed |= runner.run(model, step)
            modified |= changed
            if not changed:
                break
        for step in self._finish_steps():
            modified |= runner.run(model, step)
        if self.settings.shape_inference:
            # Inferred shapes are annotations, not a change of computation.
            runner.run(model, _as_step("infer_shapes", common_passes.ShapeInferencePass()))
        return modified

    def _run_robustly(self, model: ir.Model) -> tuple[bool, dict[str, str]]:
        """All steps at once; when that raises or breaks the checker on a model the checker
        accepted, again from the input with each step guarded, dropping the ones at fault."""
        backup = model.clone()
        try:
            modified = self._run_steps(model, _StepRunner(guarded=False))
            failed = _checker_failure(model) is not None and _checker_failure(backup) is None
        except SlimError:
            raise
        except Exception as error:
            logger.info("cleanup raised %s; rerunning it step by step", type(error).__name__)
            failed = True
        if not failed:
            return modified, {}
        _adopt(model, backup)
        runner = _StepRunner(guarded=True)
        modified = self._run_steps(model, runner)
        return modified, runner.dropped

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        # nodes of If/Loop/Scan bodies included: a control-flow model is mostly bodies
        nodes_before = _node_count(model)
        ops_before = {node.op_type for node in model.graph}
        constants_before = sum(1 for node in model.graph if node.op_type == "Constant")
        opset_before = onnx_opset(model)
        modified, dropped = self._run_robustly(model)
        nodes_after = _node_count(model)
        ops_after = {node.op_type for node in model.graph}
        summary: dict[str, object] = {
            "nodes_before": nodes_before,
            "nodes_after": nodes_after,
            "constant_nodes_lifted": constants_before
            - sum(1 for node in model.graph if node.op_type == "Constant"),
            "batchnorm_folded": "BatchNormalization" in ops_before
            and "BatchNormalization" not in ops_after,
            "opset": f"{opset_before} -> {onnx_opset(model)}",
        }
        if dropped:
            summary["dropped_steps"] = [
                {"step": step, "reason": reason} for step, reason in dropped.items()
            ]
        logger.info("cleanup: %d -> %d nodes", nodes_before, nodes_after)
        return SlimPassResult(model, modified, summary=summary)


def _node_count(model: ir.Model) -> int:
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


def _raise_ir_version(model: ir.Model) -> bool:
    """IR < 4 requires every initializer to be a graph input too; 4 lifts that rule and changes
    nothing else, so folded initializers stay valid."""
    if model.ir_version >= 4:
        return False
    model.ir_version = 4
    return True
