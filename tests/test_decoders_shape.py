"""Pruning follows ``Shape`` of a pruned activation (transformers' GPT-2 ``Conv1D``:
``x.view(-1, x.size(-1))`` then ``.view(x.size()[:-1] + (nf,))``): the size is computed at run
time, so the cut is safe when every reader of the pruned axis' entry sizes a Reshape target
that follows the cut; a reader that does arithmetic with it (a ``1 / sqrt(d)`` scale) blocks.
Oracle: the shared pruning oracles (pruned == the original with the removed slices zeroed).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim.passes.pruning import StructuredPrune, dependency_groups

from .test_pruning import check_oracles

HIDDEN, UNITS = 16, 32


def _ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name)
    )


def _conv1d_mlp(read: str, scale_reader: bool = False) -> onnx.ModelProto:
    """x [batch, 5, 16] -> MatMul -> Relu (the pruned 32 units on axis 2) -> GPT-2's Conv1D:
    flatten to ``[-1, size(-1)]`` (``read``: the entry by Gather or by Slice), MatMul, and back
    to ``size()[:-1] + (16,)``. ``scale_reader``: also ``h / size(-1)`` (arithmetic on the size)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((HIDDEN, UNITS)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((UNITS, HIDDEN)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("Shape", ["h"], ["shape"]),
        _ints("minus_one", [-1]),
    ]
    if read == "gather":  # torch: Gather(Shape, -1) as a scalar, then Unsqueeze
        nodes += [
            helper.make_node(
                "Constant", [], ["last"], value=numpy_helper.from_array(np.array(-1, np.int64))
            ),
            helper.make_node("Gather", ["shape", "last"], ["size_scalar"], axis=0),
            _ints("zero", [0]),
            helper.make_node("Unsqueeze", ["size_scalar", "zero"], ["size"]),
        ]
    else:  # Slice(Shape, -1, max)
        nodes += [
            _ints("from_last", [-1]),
            _ints("to_end", [np.iinfo(np.int64).max]),
            helper.make_node("Slice", ["shape", "from_last", "to_end"], ["size"]),
        ]
    h = "h"
    if scale_reader:
        nodes += [
            helper.make_node("Cast", ["size"], ["size_float"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["h", "size_float"], ["scaled"]),
        ]
        h = "scaled"
    nodes += [
        helper.make_node("Concat", ["minus_one", "size"], ["flat_target"], axis=0),
        helper.make_node("Reshape", [h, "flat_target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w2"], ["z"]),
        _ints("zero_start", [0]),
        helper.make_node("Slice", ["shape", "zero_start", "minus_one"], ["lead"]),
        _ints("nf", [HIDDEN]),
        helper.make_node("Concat", ["lead", "nf"], ["out_target"], axis=0),
        helper.make_node("Reshape", ["z", "out_target"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv1d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, HIDDEN])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _unit_groups(path) -> list[dict]:
    return [g for g in dependency_groups(onnxslim.load(path)) if g["size"] == UNITS]


def test_shape_of_the_pruned_axis_read_by_gather_follows_the_cut(tmp_path):
    path = tmp_path / "gather.onnx"
    onnx.save(_conv1d_mlp("gather"), path)
    [group] = _unit_groups(path)
    assert group["prunable"] and group["reasons"] == []
    pruned, summary = check_oracles(path, tmp_path, ratio=0.5)
    assert summary["pruned_groups"] == 1
    shapes = sorted(
        tuple(t.shape) for t in pruned.graph.initializers.values() if t.shape.rank() == 2
    )
    assert shapes == [(HIDDEN, UNITS // 2), (UNITS // 2, HIDDEN)]


def test_shape_of_the_pruned_axis_read_by_slice_follows_the_cut(tmp_path):
    path = tmp_path / "slice.onnx"
    onnx.save(_conv1d_mlp("slice"), path)
    [group] = _unit_groups(path)
    assert group["prunable"]
    _, summary = check_oracles(path, tmp_path, ratio=0.25)
    assert summary["pruned_groups"] == 1
    assert summary["parameters"] == {"before": 1024, "after": 768}


def test_arithmetic_on_the_pruned_size_blocks_with_the_axis_named(tmp_path):
    # h / size(-1) would change its value after the cut: pruning must not follow it.
    path = tmp_path / "scaled.onnx"
    onnx.save(_conv1d_mlp("gather", scale_reader=True), path)
    [group] = _unit_groups(path)
    assert not group["prunable"]
    assert any(r.endswith("(Shape): Shape reads axis 2") for r in group["reasons"]), group[
        "reasons"
    ]
    model = onnxslim.load(path)
    assert not StructuredPrune(ratio=0.5)(model).modified
