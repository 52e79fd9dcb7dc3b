"""Taylor importance: |activation x gradient| of a label-free distillation loss per unit."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim.inputs import open_samples
from onnxslim.passes.pruning import StructuredPrune, analyze, score_groups

pytest.importorskip("torch")


def dead_channel_net() -> ir.Model:
    """Conv(2->4) -> Relu -> Conv(4->3, 1x1) -> ReduceMean: channel 2 of the first conv has the
    largest weights, but the second conv multiplies it by 0 (its gradient is exactly 0)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    w1[2] *= 5.0
    b1 = np.full(4, 0.5, dtype=np.float32)
    w2 = rng.normal(size=(3, 4, 1, 1)).astype(np.float32)
    w2[:, 2] = 0.0
    return conv_net(w1, b1, w2)


def conv_net(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> ir.Model:
    """Conv(w1, b1) -> Relu -> Conv(w2, 1x1) -> ReduceMean over the map: class scores."""
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        oh.make_node("ReduceMean", ["c2"], ["logits"], name="pool", axes=[2, 3], keepdims=0),
    ]
    graph = oh.make_graph(
        nodes,
        "conv_net",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 2, 6, 6])],
        [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 3])],
        [onnx.numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    return ir.serde.deserialize_model(proto)


def batches(count: int = 2, size: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(size, 2, 6, 6)).astype(np.float32)} for _ in range(count)]


def test_taylor_ranks_the_channel_with_zero_gradient_last_where_magnitude_does_not():
    model = dead_channel_net()
    analysis = analyze(model, {"n": 1})
    prunable = [g for g in analysis.groups if g.prunable]
    assert [g.num_units for g in prunable] == [4]
    index = prunable[0].index
    taylor = score_groups(analysis.view, analysis.groups, "taylor", batches=batches())[index]
    magnitude = score_groups(analysis.view, analysis.groups, "l2")[index]
    activation = score_groups(analysis.view, analysis.groups, "activation", batches=batches())[
        index
    ]
    assert taylor.shape == (4,)
    assert taylor[2] == 0.0 and np.all(np.delete(taylor, 2) > 0)
    assert int(np.argmin(taylor)) == 2
    assert int(np.argmax(magnitude)) == 2
    assert int(np.argmax(activation)) == 2


def test_taylor_rank_order_is_the_brute_force_loss_change():
    """Each unit removed in turn (its conv row and bias zeroed: the Relu then passes 0), the
    label-free loss re-evaluated per sample: the same order as |activation x gradient|."""
    import torch

    from onnxslim.passes.pruning._taylor import taylor_loss

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    b1 = np.full(6, 0.5, dtype=np.float32)
    w2 = rng.normal(size=(3, 6, 1, 1)).astype(np.float32)
    scale = np.array([0.05, 0.1, 0.2, 0.4, 0.8, 1.6], np.float32)[None, :, None, None]
    w2 *= scale[:, rng.permutation(6)]  # the units' effects well apart
    inputs = np.random.default_rng(1)
    samples = [{"x": inputs.normal(size=(1, 2, 6, 6)).astype(np.float32)} for _ in range(6)]
    model = conv_net(w1, b1, w2)
    analysis = analyze(model, {"n": 1}, round_to=1)
    (group,) = [g for g in analysis.groups if g.prunable]
    taylor = score_groups(analysis.view, analysis.groups, "taylor", batches=samples)[group.index]
    full = onnxslim.create_session(model)
    brute = np.zeros(6)
    for unit in range(6):
        cut_w1, cut_b1 = w1.copy(), b1.copy()
        cut_w1[unit], cut_b1[unit] = 0.0, 0.0
        cut = onnxslim.create_session(conv_net(cut_w1, cut_b1, w2))
        for seed, feeds in enumerate(samples):  # the criterion's seed per batch
            teacher = {"logits": full.run(None, feeds)[0]}
            before = taylor_loss({"logits": torch.from_numpy(teacher["logits"])}, teacher, seed)
            after = taylor_loss(
                {"logits": torch.from_numpy(cut.run(None, feeds)[0])}, teacher, seed
            )
            brute[unit] += abs(float(after - before))
    assert np.argsort(taylor).tolist() == np.argsort(brute).tolist()


def test_taylor_criterion_in_the_pass_removes_the_dead_channel(tmp_path):
    model = dead_channel_net()
    path = tmp_path / "teacher.onnx"
    onnxslim.save(model, path)
    context = onnxslim.PassContext(
        reference_path=path, data=open_samples(feeds=batches()), workdir=tmp_path
    )
    before = onnxslim.create_session(path).run(None, batches(1)[0])[0]
    result = StructuredPrune(ratio=0.25, round_to=1, criterion="taylor").apply(model, context)
    assert result.summary["channels_kept"]["conv1"] == [4, 3]
    assert model.graph.initializers["w1"].const_value.shape == (3, 2, 3, 3)
    after = onnxslim.create_session(model).run(None, batches(1)[0])[0]
    # the removed channel never reached the output: the pruned model computes the same
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_taylor_without_data_names_the_fix():
    with pytest.raises(onnxslim.SlimError, match="criterion 'taylor' needs calibration data"):
        StructuredPrune(ratio=0.25, criterion="taylor").apply(
            dead_channel_net(), onnxslim.PassContext()
        )
