"""onnxscript's private names: the default rewrite rules and the constant-folding pass."""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.optimizer import _constant_folding

__all__ = [
    "AXES_AS_INPUT_RULES",
    "BATCHNORM_FOLDING_RULES",
    "DEFAULT_FOLD_INPUT_SIZE_LIMIT",
    "constant_folding_pass",
    "default_rewrite_rules",
]

# Named default rules that fold BatchNormalization into the op before it.
BATCHNORM_FOLDING_RULES = frozenset(
    {"FuseBatchNormIntoConv", "FuseBatchNormIntoConvTranspose", "FuseBatchNormIntoGemm"}
)
# Named default rules that emit the opset-13 Squeeze/Unsqueeze (axes as an input).
AXES_AS_INPUT_RULES = frozenset({"UnsqueezeUnsqueeze", "SqueezeReshape1d"})
DEFAULT_FOLD_INPUT_SIZE_LIMIT: int = _constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT


def default_rewrite_rules(*, exclude: frozenset[str] = frozenset()) -> list:
    """onnxscript's default rewrite rules, without the named rules in ``exclude``."""
    return [
        rule
        for rule in rewriter._DEFAULT_REWRITE_RULES
        if getattr(rule, "name", None) not in exclude
    ]


def constant_folding_pass(
    *,
    input_size_limit: int,
    output_size_limit: int,
    should_fold: Callable[[ir.Node], bool | None],
) -> ir.passes.PassBase:
    """onnxscript's constant folding with shape inference, as an onnx_ir pass."""
    return _constant_folding.FoldConstantsPass(
        shape_inference=True,
        input_size_limit=input_size_limit,
        output_size_limit=output_size_limit,
        should_fold=should_fold,
    )
