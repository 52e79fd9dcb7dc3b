"""onnxscript's private names: the default rewrite rules and the constant-folding pass."""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.optimizer import _constant_folding
from onnxscript.rewriter import _pattern_ir
from onnxscript.rewriter._rewrite_rule import RewriteRule
from onnxscript.rewriter.rules.common import _no_op

__all__ = [
    "AXES_AS_INPUT_RULES",
    "BATCHNORM_FOLDING_RULES",
    "DEFAULT_FOLD_INPUT_SIZE_LIMIT",
    "EXACT_NO_OP_RULES",
    "constant_folding_pass",
    "quantization_fusion_rules",
    "default_rewrite_rules",
]

# Named default rules that fold BatchNormalization into the op before it.
BATCHNORM_FOLDING_RULES = frozenset(
    {"FuseBatchNormIntoConv", "FuseBatchNormIntoConvTranspose", "FuseBatchNormIntoGemm"}
)
# Named default rules that emit the opset-13 Squeeze/Unsqueeze (axes as an input).
AXES_AS_INPUT_RULES = frozenset({"UnsqueezeUnsqueeze", "SqueezeReshape1d"})
DEFAULT_FOLD_INPUT_SIZE_LIMIT: int = _constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT


def _exactly(value: int) -> _pattern_ir.Constant:
    # onnxscript's `x + 0` matches any scalar within abs_tol 1e-8 / rel_tol 1e-5, so it deletes
    # the `+ 1e-10` of `Log(x*x + 1e-10)` (basic-pitch); a no-op is only a no-op when exact
    return _pattern_ir.Constant(value, rel_tol=0.0, abs_tol=0.0)


def _identity(op, x, **_):
    return op.Identity(x)


def _exact_no_op_rules() -> tuple[RewriteRule, ...]:
    """onnxscript's `_no_op` rules (x*1, 1*x, x+0, 0+x, x-0, x/1, Dropout no-ops), named, with
    their constants matched exactly instead of within a tolerance."""
    rules: list[RewriteRule] = []
    for name, target in (
        ("MulByOne", lambda op, x: op.Mul(x, _exactly(1))),
        ("OneMul", lambda op, x: op.Mul(_exactly(1), x)),
        ("AddZero", lambda op, x: op.Add(x, _exactly(0))),
        ("ZeroAdd", lambda op, x: op.Add(_exactly(0), x)),
        ("SubZero", lambda op, x: op.Sub(x, _exactly(0))),
        ("DivByOne", lambda op, x: op.Div(x, _exactly(1))),
        ("DropoutZero", _no_op.dropout_zero),
        ("DropoutInference", _no_op.dropout_inference),
    ):
        rules.append(RewriteRule(target, _identity, name=name))
    return tuple(rules)


EXACT_NO_OP_RULES: tuple[RewriteRule, ...] = _exact_no_op_rules()
# identity, not names: onnxscript's no-op rules are anonymous
_TOLERANT_NO_OP_RULES = tuple(_no_op.rules.rules)


def default_rewrite_rules(*, exclude: frozenset[str] = frozenset()) -> list:
    """onnxscript's default rewrite rules, without the named rules in ``exclude``; its tolerant
    no-op rules are replaced, in place, by ``EXACT_NO_OP_RULES``."""
    rules: list = []
    for rule in rewriter._DEFAULT_REWRITE_RULES:
        if rule is _TOLERANT_NO_OP_RULES[0]:
            rules += EXACT_NO_OP_RULES
        elif not any(rule is tolerant for tolerant in _TOLERANT_NO_OP_RULES):
            rules.append(rule)
    return [rule for rule in rules if getattr(rule, "name", None) not in exclude]


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


def quantization_fusion_rules() -> dict[str, Callable[[ir.Model], int]]:
    """Fusions to standard ONNX ops, by name -> ``apply(model) -> count``: BatchNorm into the
    Conv/ConvTranspose/Gemm before it, Conv + constant Mul/Add, HardSigmoid/HardSwish chains,
    and the decomposed LayerNorm (``LayerNormalization``, opset >= 17)."""
    from onnxscript.rewriter.rules.common import _fuse_batchnorm, _fuse_conv_affine, _fuse_hardswish
    from onnxscript.rewriter.rules.fusion import _layer_norm

    return {
        "batchnorm": _fuse_batchnorm.rules.apply_to_model,
        "conv_affine": rewriter.RewriteRuleSet(
            [_fuse_conv_affine.affine_conv_fusion_rule, _fuse_conv_affine.conv_affine_fusion_rule]
        ).apply_to_model,
        "hardswish": _fuse_hardswish.fuse_hardswish_rules().apply_to_model,
        "layer_norm": rewriter.RewriteRuleSet(
            [_layer_norm_axes_attribute_rule(), *_layer_norm.layer_normalization_rules]
        ).apply_to_model,
    }


def _layer_norm_axes_attribute_rule() -> RewriteRule:
    """onnxscript's LayerNorm fusion for opsets 13..17 (its pattern takes ReduceMean's axes as
    an input, the opset-18 form; exported models at 17 carry them as an attribute)."""
    from onnxscript.rewriter import pattern
    from onnxscript.rewriter.rules.fusion import _layer_norm

    class LayerNormAxesAttribute(_layer_norm.LayerNormFusion):
        def pattern(self, op, x, scale, epsilon):
            deviation = op.Sub(x, op.ReduceMean(x, axes=[-1], keepdims=1))
            squared = pattern.OrValue([op.Mul(deviation, deviation), op.Pow(deviation, 2)])
            variance = op.ReduceMean(squared, axes=[-1], keepdims=1)
            std_dev = op.Sqrt(op.Add(variance, epsilon))
            normalized = pattern.OrValue(
                [op.Mul(deviation, op.Reciprocal(std_dev)), op.Div(deviation, std_dev)]
            )
            return op.Mul(normalized, scale)

    return LayerNormAxesAttribute.rule()
