"""User data through the one door: the pipeline opens it once, passes get a SampleReader, and
``optimize --data`` / ``bench --data`` read the same ``.npz`` as the same stack of samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import PassContext, SlimPass, SlimPassResult
from onnxslim.benchmark import benchmark
from onnxslim.benchmark._cli import build_parser, run_bench
from onnxslim.inputs import ItemsReader, NpzReader, SampleReader, open_reader, samples


class OrtStyle:
    """ONNX Runtime's CalibrationDataReader protocol only: get_next()/rewind()."""

    def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
        self.items = items
        self.index = 0

    def get_next(self):
        if self.index >= len(self.items):
            return None
        self.index += 1
        return self.items[self.index - 1]

    def rewind(self) -> None:
        self.index = 0


class Probe(SlimPass):
    """Records what a pass sees of the user's data; changes nothing."""

    name = "probe"
    description = "test pass: records its context"
    exact = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict = {}

    def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
        data = context.data
        self.seen = {
            "is_reader": isinstance(data, SampleReader),
            "type": type(data).__name__,
            "verification": [f["x"].shape for f in context.sample_inputs],
            "batches": [b["x"].shape[0] for b in data] if data is not None else None,
            "reopened_at_2": [b["x"].shape[0] for b in open_reader(data, model, batch_size=2)]
            if data is not None
            else None,
            "reopened_is_same": open_reader(data, model, batch_size=2) is data,
        }
        return SlimPassResult(model, False)


def _stack(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, 8, 8)).astype(np.float32)


def test_pipeline_hands_passes_one_reader_for_items(conv_bn_path: Path) -> None:
    items = [{"x": _stack(3, 1)}, {"x": _stack(3, 2)}]
    probe = Probe()
    result = onnxslim.Pipeline([probe], num_samples=4).run(conv_bn_path, data=items)
    assert result.report.samples == 2 and result.report.sample_source == "the given data"
    assert probe.seen == {
        "is_reader": True,
        "type": "ItemsReader",
        "verification": [(3, 3, 8, 8), (3, 3, 8, 8)],  # items as given
        "batches": [3, 3],
        "reopened_at_2": [2, 2, 2],  # the items re-read as 6 samples at the pass's batch size
        "reopened_is_same": False,
    }


def test_pipeline_opens_an_npz_once_as_samples(conv_bn_path: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=_stack(5))
    probe = Probe()
    result = onnxslim.Pipeline([probe], num_samples=4).run(conv_bn_path, data=tmp_path / "d.npz")
    assert result.report.samples == 4
    assert probe.seen == {
        "is_reader": True,
        "type": "NpzReader",
        "verification": [(1, 3, 8, 8)] * 4,
        "batches": [1] * 5,
        "reopened_at_2": [1] * 5,  # a reader given is used as is
        "reopened_is_same": True,
    }


def test_a_reader_given_again_comes_back_rewound(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.arange(4, dtype=np.float32).reshape(4, 1))
    reader = open_reader(tmp_path / "d.npz", None, batch_size=1)
    assert reader.get_next()["x"].tolist() == [[0.0]]
    assert reader.get_next()["x"].tolist() == [[1.0]]
    again = open_reader(reader)
    assert again is reader and again.get_next()["x"].tolist() == [[0.0]]


def test_samples_leaves_a_get_next_reader_rewound_when_it_stops_early() -> None:
    model = ir.from_proto(
        __import__("onnx").parser.parse_model(
            '<ir_version: 8, opset_import: ["" : 13]> g (float[N, 1] x) => (float[N, 1] y) '
            "{ y = Identity (x) }"
        )
    )

    data = OrtStyle([{"x": np.full((1, 1), i, np.float32)} for i in range(5)])
    assert [float(f["x"][0, 0]) for f in samples(data, model, 2)] == [0.0, 1.0]
    assert data.index == 0


def test_items_reader_names_inputs_like_the_pipeline_did(tmp_path: Path) -> None:
    model = ir.from_proto(
        __import__("onnx").parser.parse_model(
            '<ir_version: 8, opset_import: ["" : 13]> g (float[N, 3] a, float[N, 3] b) '
            "=> (float[N, 3] y) { y = Add (a, b) }"
        )
    )
    reader = onnxslim.inputs.open_samples([np.ones((2, 3), np.float32)], model, batch_size=None)
    assert isinstance(reader, ItemsReader)
    with pytest.raises(onnxslim.InputDataError) as error:
        samples(reader, model, 4)
    assert str(error.value) == (
        "data items must be dicts keyed by input name for a model with inputs ['a', 'b']; "
        "got ndarray."
    )


def test_same_npz_in_optimize_and_bench_gives_the_requested_batches(
    conv_bn_path: Path, tmp_path: Path
) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, x=_stack(5))
    probe = Probe()
    onnxslim.Pipeline([probe], num_samples=4).run(conv_bn_path, data=data)
    assert probe.seen["verification"] == [(1, 3, 8, 8)] * 4
    calls: list[list[tuple[int, ...]]] = []

    def shapes(reference, candidate):
        calls.append([out["y"].shape for out in reference])
        return 0.0

    result = benchmark(
        [conv_bn_path, conv_bn_path],
        data=data,
        batch_sizes=[1, 2],
        runs=1,
        warmup=0,
        coverage=False,
        metric=shapes,
    )
    assert [m.batch for m in result.measurements if m.model != result.reference] == [1, 2]
    # batch 1: the first 4 of 5 samples; batch 2: two feeds, the fifth sample dropped
    assert calls[0] == [(1, 4, 8, 8)] * 4 and calls[-1] == [(2, 4, 8, 8)] * 2
    assert result.settings["inputs"] == "data" and result.settings["batch_sizes"] == [1, 2]
    args = build_parser().parse_args(
        [
            str(conv_bn_path),
            str(conv_bn_path),
            "--data",
            str(data),
            "--batch-sizes",
            "2",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-coverage",
            "--json",
            str(tmp_path / "b.json"),
            "--html",
            str(tmp_path / "b.html"),
        ]
    )
    assert run_bench(args) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["settings"]["batch_sizes"] == [2] and report["settings"]["fidelity_samples"] == 2


def test_bench_data_with_a_wrong_input_name_fails_before_timing(
    conv_bn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, image=_stack(2))
    args = build_parser().parse_args(
        [str(conv_bn_path), "--data", str(data), "--json", str(tmp_path / "b.json")]
    )
    assert run_bench(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {data}: input 'image' is not an input of the model (expected inputs: x); "
        "rename the data keys to the model's input names."
    ]
    assert not (tmp_path / "b.json").exists()
    assert isinstance(open_reader(data, None), NpzReader)


def test_an_ort_style_reader_is_pipeline_data(conv_bn_path: Path) -> None:
    probe = Probe()
    result = onnxslim.Pipeline([probe], num_samples=2).run(
        conv_bn_path, data=OrtStyle([{"x": _stack(2, seed)} for seed in range(3)])
    )
    assert result.report.samples == 2
    assert probe.seen["verification"] == [(2, 3, 8, 8)] * 2  # its items, as given
    assert probe.seen["batches"] == [2, 2, 2] and probe.seen["reopened_at_2"] == [2, 2, 2]
