"""Units pinned, the rest pruned: a group whose slot cannot change size (a Concat part that a
graph output also reads, as in basic-pitch's note head) keeps exactly that part's units and
prunes the others, with the zeroed-slice oracle; a group whose every unit is pinned stays
blocked, and a run that removes nothing says why in one sentence built from the groups."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import PassContext
from onnxslim.passes.pruning import StructuredPrune, dependency_groups
from tests.test_pruning import check_oracles


def _weights(count: int, seed: int) -> str:
    values = np.random.default_rng(seed).normal(size=count)
    return ", ".join(f"{v:.4f}" for v in values)


# x -> Conv A (8) -> Relu -+-> Concat(B, A) (9) -> Conv C (1) -> y
# x -> Conv B (1) -> Sigmoid -+-> Reshape [N, 8, 8] -> note (a graph output)
HEADS = f"""
<ir_version: 8, opset_import: ["" : 17]>
heads (float[N, 2, 8, 8] x) => (float[N, 8, 8] note, float[N, 1, 8, 8] y) {{
    wa = Constant <value = float[8, 2, 3, 3] {{{_weights(8 * 18, 0)}}}> ()
    wb = Constant <value = float[1, 2, 3, 3] {{{_weights(18, 1)}}}> ()
    wc = Constant <value = float[1, 9, 3, 3] {{{_weights(81, 2)}}}> ()
    a = Conv <pads = [1, 1, 1, 1]> (x, wa)
    ra = Relu (a)
    b = Conv <pads = [1, 1, 1, 1]> (x, wb)
    sb = Sigmoid (b)
    target = Constant <value = int64[3] {{-1, 8, 8}}> ()
    note = Reshape (sb, target)
    both = Concat <axis = 1> (sb, ra)
    y = Conv <pads = [1, 1, 1, 1]> (both, wc)
}}
"""


@pytest.fixture
def heads_path(tmp_path):
    path = tmp_path / "heads.onnx"
    onnx.save(onnx.parser.parse_model(HEADS), path)
    return path


def test_concat_part_read_by_a_graph_output_is_pinned(heads_path):
    groups = {g["size"]: g for g in dependency_groups(onnxslim.load(heads_path))}
    shared = groups[9]  # B's channel and A's 8, tied by the Concat
    assert shared["prunable"] and shared["reasons"] == []
    assert shared["kept_whole"]["units"] == 1
    (reason,) = shared["kept_whole"]["reasons"]
    assert "axis 1 of 'sb' is not followed" in reason  # the Reshape drops B's size-1 axis


def test_pinned_group_prunes_the_free_units_with_the_oracles(heads_path, tmp_path):
    pruned, summary = check_oracles(heads_path, tmp_path, ratio=0.5, round_to=1)
    assert summary["units_removed"] == 4  # half of A's 8; B's channel is never a candidate
    assert sorted(summary["channels_kept"].values()) == [[1, 1], [1, 1], [8, 4]]
    shapes = {tuple(node.inputs[1].shape) for node in pruned.graph if node.op_type == "Conv"}
    assert shapes == {(4, 2, 3, 3), (1, 2, 3, 3), (1, 5, 3, 3)}  # C reads B's 1 + A's 4


def test_every_unit_pinned_stays_blocked(tmp_path):
    """Without C, the Concat itself is a graph output: every unit is pinned, the group blocks."""
    text = HEADS.replace("float[N, 1, 8, 8] y", "float[N, 9, 8, 8] both").replace(
        "    y = Conv <pads = [1, 1, 1, 1]> (both, wc)\n", ""
    )
    model = ir.from_proto(onnx.parser.parse_model(text))
    groups = dependency_groups(model)
    assert [(g["size"], g["prunable"]) for g in groups] == [(9, False)]
    assert any("'both' is a graph output" in r for g in groups for r in g["reasons"])


def test_nothing_pruned_counts_causes_and_single_units(heads_path, tmp_path):
    model = onnxslim.load(heads_path)
    result = StructuredPrune(ratio=0.3, round_to=8).apply(model, PassContext(workdir=tmp_path))
    assert not result.modified
    assert result.summary["warnings"] == [
        "prune removed nothing: 1 group(s) have a single unit (nothing to cut); 1 group(s) are "
        "prunable (width 8), but at this ratio/target and round_to=8 none keeps a smaller "
        "multiple of round_to; ask for more (a larger ratio or a smaller target) or set "
        "round_to lower (1 keeps any width)"
    ]
    assert [g["cause"] for g in result.summary["blocked"]] == ["a single unit"]
