"""Cleanup: the exact pass every pipeline starts with (opset upgrade, folding, BN fusion, DCE)."""

from __future__ import annotations

import logging

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.version_converter import ConvertVersionPass

from onnxslim import PassContext, SlimPass, SlimPassResult, UnsupportedModelError
from onnxslim.compat.onnxscript import (
    AXES_AS_INPUT_RULES,
    BATCHNORM_FOLDING_RULES,
    DEFAULT_FOLD_INPUT_SIZE_LIMIT,
    constant_folding_pass,
    default_rewrite_rules,
)
from onnxslim.model import WEIGHT_INPUTS
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
# Constant folding may materialise tensors up to this many elements (larger stays symbolic).
_FOLD_OUTPUT_LIMIT = 1 << 26


def _feeds_parameters_only(node: ir.Node) -> bool:
    uses = list(node.outputs[0].uses())
    return bool(uses) and all(
        index in _PARAMETER_SLOTS.get(user.op_type, ()) for user, index in uses
    )


def _should_fold(node: ir.Node) -> bool | None:
    if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
        return True if _feeds_parameters_only(node) else None
    return None


def _axes_inputs_to_attributes(model: ir.Model) -> None:
    """Before opset 13, Squeeze/Unsqueeze take axes as an attribute; onnxscript's folding of
    ConcatFromSequence emits the opset-13 form (an axes input) even in older graphs."""
    opset = _onnx_opset(model)
    if opset is None or opset >= 13:
        return
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


def _onnx_opset(model: ir.Model) -> int | None:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx"))


class Cleanup(SlimPass):
    """Constant folding, Constant -> initializer, dead code and identity removal, Conv/Gemm+BN
    folding, CSE, optional opset upgrade, and shape inference. Outputs are unchanged."""

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
        current = _onnx_opset(model)
        if (
            self.settings.target_opset is None
            or current is None
            or current >= self.settings.target_opset
        ):
            return False
        result = ConvertVersionPass(self.settings.target_opset, fallback=True)(model)
        after = _onnx_opset(result.model)
        if after != self.settings.target_opset:
            raise UnsupportedModelError(
                f"cannot upgrade the model from opset {current} to {self.settings.target_opset} "
                "(the version converter has no adapter for one of its ops); re-export at a newer opset."
            )
        return True

    def _simplify_passes(self, opset: int | None) -> list[ir.passes.PassBase]:
        excluded: frozenset[str] = frozenset()
        if not self.settings.fuse_batchnorm:
            excluded |= BATCHNORM_FOLDING_RULES
        if opset is not None and opset < 13:
            # these rules emit opset-13 forms (axes as an input): wrong in older graphs
            excluded |= AXES_AS_INPUT_RULES
        rules = default_rewrite_rules(exclude=excluded)
        steps: list[ir.passes.PassBase] = []
        if self.settings.fold_constants:
            steps.append(
                constant_folding_pass(
                    input_size_limit=DEFAULT_FOLD_INPUT_SIZE_LIMIT,
                    output_size_limit=_FOLD_OUTPUT_LIMIT,
                    should_fold=_should_fold,
                )
            )
        steps += [
            rewriter.RewritePass(rules),
            common_passes.IdentityEliminationPass(),
            common_passes.RemoveUnusedNodesPass(),
            common_passes.RemoveUnusedFunctionsPass(),
            common_passes.RemoveUnusedOpsetsPass(),
        ]
        return steps

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        nodes_before = sum(1 for _ in model.graph)
        ops_before = {node.op_type for node in model.graph}
        constants_before = sum(1 for node in model.graph if node.op_type == "Constant")
        opset_before = _onnx_opset(model)
        modified = False
        if model.functions:
            modified |= common_passes.InlinePass()(model).modified
        modified |= self._upgrade_opset(model)
        modified |= common_passes.LiftConstantsToInitializersPass(
            lift_all_constants=True, size_limit=0
        )(model).modified
        if model.ir_version < 4:
            # IR < 4 requires every initializer to be a graph input too; 4 lifts that rule and
            # changes nothing else, so folded initializers stay valid
            model.ir_version = 4
            modified = True
        # initializers listed as graph inputs (the IR < 4 convention) are weights, not inputs:
        # unlisting them lets folding see them as constants (input_specs already skips them)
        modified |= common_passes.RemoveInitializersFromInputsPass()(model).modified
        manager = ir.passes.PassManager(
            self._simplify_passes(_onnx_opset(model)),
            steps=self.settings.iterations,
            early_stop=True,
        )
        modified |= manager(model).modified
        _axes_inputs_to_attributes(model)
        for step in (
            common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
            common_passes.DeduplicateInitializersPass(),
            common_passes.CommonSubexpressionEliminationPass(),
            common_passes.RemoveUnusedNodesPass(),
            common_passes.TopologicalSortPass(),
        ):
            modified |= step(model).modified
        if self.settings.shape_inference:
            # Inferred shapes are annotations, not a change of computation.
            common_passes.ShapeInferencePass()(model)
        nodes_after = sum(1 for _ in model.graph)
        ops_after = {node.op_type for node in model.graph}
        summary = {
            "nodes_before": nodes_before,
            "nodes_after": nodes_after,
            "constant_nodes_lifted": constants_before
            - sum(1 for node in model.graph if node.op_type == "Constant"),
            "batchnorm_folded": "BatchNormalization" in ops_before
            and "BatchNormalization" not in ops_after,
            "opset": f"{opset_before} -> {_onnx_opset(model)}",
        }
        logger.info("cleanup: %d -> %d nodes", nodes_before, nodes_after)
        return SlimPassResult(model, modified, summary=summary)
