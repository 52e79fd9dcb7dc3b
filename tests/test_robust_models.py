"""Models real users bring: inputs without a batch axis, data-dependent output lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto, numpy_helper

import onnxslim
from onnxslim.fidelity import TaskMetric, compare_outputs
from onnxslim.inputs import open_samples, samples
from onnxslim.passes import Cleanup, QuantizeStatic, StructuredPrune

# torchvision detection models take one image [3, H, W]: no batch axis at all.
UNBATCHED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[3, 8, 8] image) => (float[4, 8, 8] y)
  <float[4, 3, 1, 1] w = {1,2,3,4,5,6,7,8,9,10,11,12}, int64[1] ax = {0}> {
  b = Unsqueeze(image, ax)
  c = Conv(b, w)
  y = Squeeze(c, ax)
}
"""


@pytest.fixture
def unbatched_path(tmp_path: Path) -> Path:
    path = tmp_path / "unbatched.onnx"
    onnx.save(onnx.parser.parse_model(UNBATCHED), path)
    return path


def _stack() -> np.ndarray:
    return np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 3, 8, 8) / 100


def test_npz_of_stacked_samples_for_an_input_without_batch_axis(
    unbatched_path: Path, tmp_path: Path
) -> None:
    data = tmp_path / "images.npz"
    np.savez(data, image=_stack())
    model = onnxslim.load(unbatched_path)
    reader = open_samples(data, model, batch_size=4)  # no batch axis: one sample per run anyway
    reader.validate(model)
    batches = list(reader)
    assert [b["image"].shape for b in batches] == [(3, 8, 8)] * 5
    np.testing.assert_array_equal(batches[3]["image"], _stack()[3])
    assert reader.sample_count == 5
    feeds = samples(open_samples(data, model, batch_size=None), model, 10)
    assert len(feeds) == 5 and feeds[0]["image"].shape == (3, 8, 8)
    result = onnxslim.Pipeline([Cleanup()]).run(unbatched_path, data=data)
    assert result.report.samples == 4 and result.report.sample_source == "the given data"


def test_folder_and_list_of_single_samples_without_batch_axis(
    unbatched_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    for index, sample in enumerate(_stack()):
        np.save(folder / f"{index}.npy", sample)
    model = onnxslim.load(unbatched_path)
    for source in (folder, list(_stack())):
        reader = open_samples(source, model, batch_size=2)
        reader.validate(model)
        shapes = [b["image"].shape for b in reader]
        assert shapes == [(3, 8, 8)] * 5, source


def _nonzero_model(path: Path) -> None:
    """Scores of the hidden units above 0: how many there are depends on the values."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32) * 0.2, "W"),
        numpy_helper.from_array(rng.standard_normal((256, 64)).astype(np.float32) * 0.2, "W2"),
        numpy_helper.from_array(np.array(0.0, np.float32), "t"),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
    ]
    nodes = [
        oh.make_node("MatMul", ["x", "W"], ["h"]),
        oh.make_node("Relu", ["h"], ["r"]),
        oh.make_node("MatMul", ["r", "W2"], ["y"]),
        oh.make_node("Greater", ["y", "t"], ["m"]),
        oh.make_node("NonZero", ["m"], ["idx"]),
        oh.make_node("Transpose", ["idx"], ["idxT"]),
        oh.make_node("GatherND", ["y", "idxT"], ["vals"]),
        oh.make_node("Unsqueeze", ["vals", "ax"], ["scores"]),
    ]
    graph = oh.make_graph(
        nodes,
        "nonzero",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [
            oh.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1]),
            oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64]),
        ],
        weights,
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)


def test_outputs_of_different_lengths_are_named_not_a_crash() -> None:
    reference = [{"scores": np.ones((30, 1), np.float32), "y": np.ones(4, np.float32)}]
    candidate = [{"scores": np.ones((29, 1), np.float32), "y": np.ones(4, np.float32)}]
    fidelity = compare_outputs(reference, candidate)
    assert fidelity.changed_shapes == (
        "output 'scores' changed shape [30, 1] -> [29, 1] (a data-dependent length, "
        "e.g. NonZero/TopK/NonMaxSuppression: not comparable)",
    )
    assert fidelity.max_abs_error == float("inf") and fidelity.mean_abs_error == 0.0
    assert fidelity.to_dict()["changed_shapes"] == list(fidelity.changed_shapes)
    score, violation = TaskMetric("sqnr").judge(reference, candidate)
    assert score == float("-inf") and violation == fidelity.changed_shapes[0]


def test_quantize_rejects_candidates_whose_output_length_changes(tmp_path: Path) -> None:
    path = tmp_path / "nonzero.onnx"
    _nonzero_model(path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32))
    result = onnxslim.Pipeline([Cleanup(), QuantizeStatic()]).run(path, data=data)
    summary = result.report.stages[-1].summary
    assert summary["fallback"].startswith("returned the float model: no int8 candidate")
    assert "accuracy: output 'scores' changed shape [" in summary["fallback"]
    assert summary["size_bytes_after"] == summary["size_bytes_before"]
    rejected = [c["fidelity"]["changed_shapes"][0] for c in summary["candidates"]]
    assert all(r.startswith("output 'scores' changed shape") for r in rejected)


class _PitchNet:
    """A CREPE-like 1-d CNN: torch's ``F.pad`` exports its pads as ConstantOfShape/Concat/Slice."""

    @staticmethod
    def export(path: Path) -> None:
        torch = pytest.importorskip("torch")
        functional = torch.nn.functional

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c1 = torch.nn.Conv1d(1, 64, 16, stride=4)
                self.c2 = torch.nn.Conv1d(64, 64, 8)
                self.c3 = torch.nn.Conv1d(64, 64, 8)
                self.fc = torch.nn.Linear(64, 10)

            def forward(self, x):  # type: ignore[no-untyped-def]
                x = torch.relu(self.c1(functional.pad(x, (7, 8))))
                x = torch.relu(self.c2(functional.pad(x, (3, 4), mode="reflect")))
                x = torch.relu(self.c3(functional.pad(x, (3, 4))))
                return self.fc(x.mean(-1))

        torch.manual_seed(0)
        torch.onnx.export(
            Net().eval(),
            (torch.randn(1, 1, 256),),
            str(path),
            input_names=["audio"],
            output_names=["y"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"audio": {0: "batch"}},
        )


def test_computed_pads_fold_and_the_model_prunes(tmp_path: Path) -> None:
    path = tmp_path / "pitch.onnx"
    _PitchNet.export(path)
    exported = onnx.load(path)
    assert sum(n.op_type == "ConstantOfShape" for n in exported.graph.node) == 3
    result = onnxslim.Pipeline([Cleanup()]).run(path)
    ops = [node.op_type for node in result.model.graph]
    # constant pads fold into the Conv; the reflect one stays a Pad with a constant 'pads'
    assert ops == ["Conv", "Relu", "Pad", "Conv", "Relu", "Conv", "Relu", "ReduceMean", "Gemm"]
    pad = next(node for node in result.model.graph if node.op_type == "Pad")
    assert pad.inputs[1] is not None and pad.inputs[1].const_value is not None
    assert pad.inputs[1].const_value.numpy().tolist() == [0, 0, 3, 0, 0, 4]
    pruned = onnxslim.Pipeline([Cleanup(), StructuredPrune(ratio=0.3, round_to=1)]).run(path)
    summary = pruned.report.stages[-1].summary
    assert summary["pruned_groups"] == 3
    before, after = summary["parameters"]["before"], summary["parameters"]["after"]
    assert after < 0.7 * before


def _cached_decoder(path: Path) -> list[dict[str, np.ndarray]]:
    """A decoder step with a cache: runs only when past + new tokens are 37 (no default size)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((100, 16)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.array([1, 37, 16], np.int64), "shape"),
    ]
    nodes = [
        oh.make_node("Gather", ["emb", "ids"], ["e"]),
        oh.make_node("Concat", ["past", "e"], ["all"], axis=1),
        oh.make_node("Reshape", ["all", "shape"], ["r"]),
        oh.make_node("MatMul", ["r", "W1"], ["h"]),
        oh.make_node("Relu", ["h"], ["a"]),
        oh.make_node("MatMul", ["a", "W2"], ["y"]),
    ]
    inputs = [
        oh.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"]),
        oh.make_tensor_value_info("past", TensorProto.FLOAT, [1, "past_seq", 16]),
    ]
    outputs = [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 37, 16])]
    graph = oh.make_graph(nodes, "decoder", inputs, outputs, weights)
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return [
        {
            "ids": rng.integers(0, 100, (1, 1)).astype(np.int64),
            "past": rng.standard_normal((1, 36, 16)).astype(np.float32),
        }
        for _ in range(4)
    ]


def test_prune_observes_shapes_on_the_users_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "decoder.onnx"
    feeds = _cached_decoder(path)
    prune = StructuredPrune(ratio=0.3, round_to=1)
    with caplog.at_level("WARNING"):
        result = onnxslim.Pipeline([Cleanup(), prune]).run(path, data=feeds)
    assert not [r for r in caplog.records if "could not run the model" in r.getMessage()]
    summary = result.report.stages[-1].summary
    # the MLP units (64 -> 45) and, since the cache-aware groups, the width of the cache-like
    # 'past' input with the embedding (16 -> 12): the pipeline verifies on the cut cache
    assert summary["pruned_groups"] == 2
    assert summary["parameters"] == {"before": 3648, "after": 100 * 12 + 12 * 45 + 45 * 16}
    assert [d for d in result.model.graph.inputs[1].shape][2] == 12


def test_prune_macs_are_per_sample_like_the_report_when_data_is_given() -> None:
    """The verification batch holds several samples: the prune summary counted MACs on all of
    them (445M for the 27.8M-MAC demo net) while the report's table counts one sample."""
    from onnxslim._demo import demo_data, demo_model_path

    images = demo_data()["calibration_images"][:8]
    result = onnxslim.Pipeline([StructuredPrune(ratio=0.3)]).run(
        demo_model_path(), data={"image": images}
    )
    summary = result.report.stages[-1].summary
    assert summary["macs"]["before"] == result.report.stages[0].macs
    assert summary["macs"]["after"] == result.report.stages[-1].macs
