"""Cleanup on the graph shapes audio/recurrent exports have: an epsilon added before a Log
(basic-pitch), graph outputs produced by Identity (LSTM VADs), and If branches returning an
outer value through Identity (Silero VAD). Exact in ORT, checker-valid, names kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime as ort
import pytest

import onnxslim
from onnxslim.passes import Cleanup
from onnxslim.passes._cleanup import _as_step, _StepRunner

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def save_text(text: str, path: Path) -> Path:
    onnx.save(onnx.parser.parse_model(f"{HEADER}\n{text}"), path)
    return path


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def cleaned(path: Path, tmp_path: Path) -> tuple[Path, onnx.ModelProto]:
    result = onnxslim.Pipeline([Cleanup()]).run(path)
    out = result.save(tmp_path / "cleaned.onnx")
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    return out, proto


LOG_EPSILON = """
g (float[N] x) => (float[N] y) {
    eps = Constant <value = float {1e-10}> ()
    sq = Mul (x, x)
    s = Add (sq, eps)
    y = Log (s)
}
"""


def test_epsilon_before_log_is_kept_and_exact(tmp_path: Path) -> None:
    source = save_text(LOG_EPSILON, tmp_path / "log_eps.onnx")
    out, proto = cleaned(source, tmp_path)
    assert [node.op_type for node in proto.graph.node] == ["Mul", "Add", "Log"]
    x = np.array([0.0, 0.0, 1e-6, -3.0, 2.5], dtype=np.float32)
    expected = run_ort(source, {"x": x})[0]
    got = run_ort(out, {"x": x})[0]
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, expected)
    assert got[0] == pytest.approx(np.log(np.float32(1e-10)), rel=1e-6)


@pytest.mark.parametrize(
    "op, constant, removed",
    [
        ("Add", "0.0", True),
        ("Sub", "0.0", True),
        ("Mul", "1.0", True),
        ("Div", "1.0", True),
        ("Add", "1e-10", False),
        ("Sub", "1e-10", False),
        ("Mul", "1.000001", False),
        ("Div", "1.000001", False),
    ],
)
def test_no_op_rewrites_need_an_exact_constant(op: str, constant: str, removed: bool) -> None:
    model = ir.from_onnx_text(
        f"""{HEADER}
        g (float[N] x) => (float[N] y) {{
            c = Constant <value = float {{{constant}}}> ()
            s = {op} (x, c)
            y = Relu (s)
        }}"""
    )
    result = Cleanup()(model)
    ops = [node.op_type for node in result.model.graph]
    assert ops == (["Relu"] if removed else [op, "Relu"])
    assert result.modified is True  # the Constant is lifted either way


OUTPUT_OF_OUTPUT = """
g (float[N] x) => (float[N] y, float[N] p1) {
    y = Relu (x)
    p1 = Identity (y)
}
"""
OUTPUT_OF_INPUT = """
g (float[N] x) => (float[N] y, float[N] p1) {
    y = Relu (x)
    p1 = Identity (x)
}
"""


@pytest.mark.parametrize("text", [OUTPUT_OF_OUTPUT, OUTPUT_OF_INPUT], ids=["of_output", "of_input"])
def test_main_graph_output_made_by_identity_keeps_its_name(text: str, tmp_path: Path) -> None:
    source = save_text(text, tmp_path / "identity_output.onnx")
    out, proto = cleaned(source, tmp_path)
    assert [output.name for output in proto.graph.output] == ["y", "p1"]
    assert [node.op_type for node in proto.graph.node] == ["Relu", "Identity"]
    x = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    for got, expected in zip(run_ort(out, {"x": x}), run_ort(source, {"x": x})):
        np.testing.assert_array_equal(got, expected)


def if_branch_text(outer_is_output: bool) -> str:
    outputs = "float[N] y, float[N] r" if outer_is_output else "float[N] y"
    return f"""
g (float[N] x, bool c) => ({outputs}) {{
    r = Relu (x)
    y = If (c) <
        then_branch = then_g () => (float[N] t) {{ t = Identity (r) }},
        else_branch = else_g () => (float[N] e) {{ e = Neg (r) }}
    >
}}
"""


@pytest.mark.parametrize("outer_is_output", [False, True], ids=["captured", "captured_output"])
def test_if_branch_returning_an_outer_value_through_identity(
    outer_is_output: bool, tmp_path: Path
) -> None:
    source = save_text(if_branch_text(outer_is_output), tmp_path / "if_identity.onnx")
    out, proto = cleaned(source, tmp_path)
    if_node = next(node for node in proto.graph.node if node.op_type == "If")
    then_branch = next(attr.g for attr in if_node.attribute if attr.name == "then_branch")
    assert [node.op_type for node in then_branch.node] == ["Identity"]
    assert [output.name for output in then_branch.output] == ["t"]
    x = np.array([-1.5, 0.0, 2.0], dtype=np.float32)
    for condition in (True, False):
        feeds = {"x": x, "c": np.array(condition)}
        for got, expected in zip(run_ort(out, feeds), run_ort(source, feeds)):
            np.testing.assert_array_equal(got, expected)


def test_identity_inside_a_branch_on_a_local_value_is_still_removed() -> None:
    model = ir.from_onnx_text(
        f"""{HEADER}
        g (float[N] x, bool c) => (float[N] y) {{
            y = If (c) <
                then_branch = then_g () => (float[N] t) {{ a = Neg (x)
                    t = Identity (a) }},
                else_branch = else_g () => (float[N] e) {{ e = Abs (x) }}
            >
        }}"""
    )
    assert Cleanup()(model).modified is True
    then_branch = model.graph.node(0).attributes["then_branch"].as_graph()
    assert [node.op_type for node in then_branch] == ["Neg"]
    assert [output.name for output in then_branch.outputs] == ["t"]


def test_guarded_step_that_raises_is_dropped_and_the_rest_applies() -> None:
    # onnx-ir's own IdentityEliminationPass raises on this model (the bug Cleanup works around)
    model = ir.from_onnx_text(f"{HEADER}\n{if_branch_text(outer_is_output=True)}")
    runner = _StepRunner(guarded=True)
    upstream = _as_step("eliminate_identities", common_passes.IdentityEliminationPass())
    assert runner.run(model, upstream) is False
    assert list(runner.dropped) == ["eliminate_identities"]
    assert runner.dropped["eliminate_identities"].startswith("it raised ValueError: Value ")
    assert "already an output of a different graph" in runner.dropped["eliminate_identities"]
    assert [node.op_type for node in model.graph] == ["Relu", "If"]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert runner.run(model, upstream) is False  # dropped for this model: not tried again
    sort = _as_step("topological_sort", common_passes.TopologicalSortPass())
    assert runner.run(model, sort) is False
    assert list(runner.dropped) == ["eliminate_identities"]


def test_guarded_step_the_checker_rejects_is_dropped() -> None:
    model = ir.from_onnx_text(f"{HEADER}\n{if_branch_text(outer_is_output=False)}")
    runner = _StepRunner(guarded=True)
    upstream = _as_step("eliminate_identities", common_passes.IdentityEliminationPass())
    assert runner.run(model, upstream) is False
    assert runner.dropped == {
        "eliminate_identities": "the ONNX checker rejects its result: "
        "Graph output 't' is not an output of any node in graph."
    }
    then_branch = model.graph.node(1).attributes["then_branch"].as_graph()
    assert [node.op_type for node in then_branch] == ["Identity"]
