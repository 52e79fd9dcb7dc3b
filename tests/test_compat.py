"""The upstream names onnxslim reaches privately still exist and behave as we use them."""

from __future__ import annotations

import subprocess
import sys

import onnx
import onnx_ir as ir
import pytest
from onnxscript import rewriter

from onnxslim.compat.onnxruntime import symbolic_shape_inference
from onnxslim.compat.onnxscript import (
    AXES_AS_INPUT_RULES,
    BATCHNORM_FOLDING_RULES,
    DEFAULT_FOLD_INPUT_SIZE_LIMIT,
    constant_folding_pass,
    default_rewrite_rules,
)


def test_every_rule_we_exclude_by_name_is_a_default_rule() -> None:
    names = {getattr(rule, "name", None) for rule in rewriter._DEFAULT_REWRITE_RULES}
    assert BATCHNORM_FOLDING_RULES <= names
    assert AXES_AS_INPUT_RULES <= names
    kept = default_rewrite_rules(exclude=BATCHNORM_FOLDING_RULES)
    assert len(kept) == len(rewriter._DEFAULT_REWRITE_RULES) - len(BATCHNORM_FOLDING_RULES)
    assert not {getattr(rule, "name", None) for rule in kept} & BATCHNORM_FOLDING_RULES


def test_constant_folding_pass_folds_an_add_of_constants() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y) <float[2] a = {1.0, 2.0}, float[2] b = {3.0, 4.0}> {
            c = Add (a, b)
            y = Mul (x, c)
        }
        """
    )
    assert DEFAULT_FOLD_INPUT_SIZE_LIMIT > 0
    result = constant_folding_pass(
        input_size_limit=DEFAULT_FOLD_INPUT_SIZE_LIMIT,
        output_size_limit=1 << 20,
        should_fold=lambda node: None,
    )(model)
    assert result.modified
    assert [node.op_type for node in result.model.graph] == ["Mul"]


@pytest.mark.parametrize("opset, expected", [(13, [2, 12]), (6, None)])
def test_symbolic_shape_inference_follows_reshape_arithmetic(opset: int, expected) -> None:
    text = f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g (float[2, 3, 4] x) => (float[?, ?] y) <int64[2] shape = {{2, -1}}> {{
            y = Reshape (x, shape)
        }}
    """
    proto = onnx.parser.parse_model(text) if opset >= 7 else onnx.parser.parse_model(text)
    inferred = symbolic_shape_inference(proto)
    if expected is None:
        assert inferred is None
        return
    assert inferred is not None
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == expected


def test_tolerant_no_op_rules_are_replaced_by_exact_ones_in_place() -> None:
    from onnxscript.rewriter.rules.common import _no_op

    from onnxslim.compat.onnxscript import EXACT_NO_OP_RULES

    rules = default_rewrite_rules()
    assert len(rules) == len(rewriter._DEFAULT_REWRITE_RULES)
    assert len(EXACT_NO_OP_RULES) == len(_no_op.rules.rules) == 8
    assert rules[:8] == list(EXACT_NO_OP_RULES)
    assert not any(rule is tolerant for rule in rules for tolerant in _no_op.rules.rules)
    assert [rule.name for rule in EXACT_NO_OP_RULES] == [
        "MulByOne",
        "OneMul",
        "AddZero",
        "ZeroAdd",
        "SubZero",
        "DivByOne",
        "DropoutZero",
        "DropoutInference",
    ]
    kept = default_rewrite_rules(exclude=frozenset({"AddZero"}))
    assert "AddZero" not in {rule.name for rule in kept} and len(kept) == len(rules) - 1


def test_sympy_loads_on_first_symbolic_arithmetic_not_at_import() -> None:
    """onnx-ir imports sympy at its own import (0.4 s, ~25 MB); onnxslim defers it until a
    symbolic dim's arithmetic needs it, and quantizing a model does not (a fresh process)."""
    script = """
import sys
import numpy as np
import onnx
from onnx import helper, TensorProto
import onnxslim
from onnxslim.passes.quantization import QuantizeStatic
print(type(sys.modules["sympy"]).__name__)
w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel())
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
import onnx_ir as ir
model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
data = [{"x": np.random.default_rng(i).normal(size=(1, 8)).astype(np.float32)} for i in range(4)]
QuantizeStatic(data, latency_guard=False).apply(model, onnxslim.PassContext())
print(type(sys.modules["sympy"]).__name__)
print(ir.SymbolicDim("N") * 2, type(sys.modules["sympy"]).__name__)
"""
    lines = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert lines[:3] == ["_LazyModule", "_LazyModule", "2*N module"]
