"""onnxslim.inputs: the one door for user data (readers, batch axes, constants, feeds, sizes)."""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxslim import InputDataError
from onnxslim.inputs import (
    FeedsReader,
    IterableReader,
    NpzReader,
    RandomReader,
    SampleReader,
    SizeArgumentError,
    benchmark_feeds,
    open_samples,
    parse_size_argument,
    samples,
)

# Recurrent step: state [layers, batch, hidden], x [batch, hidden], a scalar sample rate.
RECURRENT = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, N, 4] state, float[N, 4] x, float sr) => (float[2, N, 4] y) {
    scaled = Mul (x, sr)
    y = Add (state, scaled)
}
"""
IMAGE = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 4, 4] x) => (float[N, 3, 4, 4] y) { y = Relu (x) }
"""


def parse(text: str) -> ir.Model:
    return ir.from_proto(onnx.parser.parse_model(text))


@pytest.fixture
def recurrent() -> ir.Model:
    return parse(RECURRENT)


def run(model: ir.Model, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString())
    return session.run(None, feeds)[0]


def recurrent_data(count: int) -> tuple[np.ndarray, np.ndarray]:
    state = np.arange(2 * count * 4, dtype=np.float32).reshape(2, count, 4)
    x = np.arange(count * 4, dtype=np.float32).reshape(count, 4) / 10
    return state, x


# -- parse_size_argument ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("seq=128", ("seq", 128)),
        ("x=1x3x224x224", ("x", [1, 3, 224, 224])),
        ("x=1,3,224,224", ("x", [1, 3, 224, 224])),
        ("x=1X3", ("x", [1, 3])),
    ],
)
def test_size_argument_parses(text, parsed):
    assert parse_size_argument(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x", "--shape 'x': write NAME=1x3x224x224 (an input) or DIM=8 (a symbolic dim)."),
        ("=3", "--shape '=3': write NAME=1x3x224x224 (an input) or DIM=8 (a symbolic dim)."),
        ("x=", "--shape 'x=': write NAME=1x3x224x224 (an input) or DIM=8 (a symbolic dim)."),
        ("x=1x3xeight", "--shape 'x=1x3xeight': sizes must be integers separated by 'x' or ','."),
        ("x=1,,3", "--shape 'x=1,,3': sizes must be integers separated by 'x' or ','."),
        ("N=0", "--shape 'N=0': sizes must be positive."),
        ("x=1x-3", "--shape 'x=1x-3': sizes must be positive."),
    ],
)
def test_size_argument_refuses_zero_negatives_and_garbage(text, message):
    with pytest.raises(InputDataError) as error:
        parse_size_argument(text)
    assert str(error.value) == message


def test_size_argument_is_an_argparse_type(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--shape", action="append", type=parse_size_argument)
    assert dict(parser.parse_args(["--shape", "x=1x3", "--shape", "N=2"]).shape) == {
        "x": [1, 3],
        "N": 2,
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--shape", "N=0"])
    assert "argument --shape: --shape 'N=0': sizes must be positive." in capsys.readouterr().err
    assert issubclass(SizeArgumentError, argparse.ArgumentTypeError)


# -- the protocol -------------------------------------------------------------------------------
def test_every_reader_speaks_the_protocol(tmp_path, recurrent):
    model = parse(IMAGE)
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 3, 4, 4), np.float32))
    readers = [
        open_samples(tmp_path / "d.npz", model),
        open_samples("random:2", model),
        open_samples([{"x": np.zeros((3, 4, 4), np.float32)}], model),
        open_samples(feeds=[{"x": np.zeros((2, 3, 4, 4), np.float32)}]),
    ]
    assert [type(r).__name__ for r in readers] == [
        "NpzReader",
        "RandomReader",
        "IterableReader",
        "FeedsReader",
    ]
    assert all(isinstance(r, SampleReader) for r in readers)
    assert [r.sample_count for r in readers] == [3, 2, 1, 2]
    assert [r.is_smoke for r in readers] == [False, True, False, False]
    assert [r.batch_size for r in readers] == [1, 1, 1, 2]
    assert readers[3].describe() == "1 feed dicts"
    assert open_samples(readers[0]) is readers[0]


def test_reader_feeds_onnxruntime_quantize_static(tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 4] x) => (float[N, 2] y)
      <float[4, 2] w = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0}> { y = MatMul (x, w) }
    """)
    onnx.save(ir.to_proto(model), tmp_path / "m.onnx")
    data = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    reader = open_samples({"x": data}, model, batch_size=2)
    quantize_static(
        str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), reader, quant_format=QuantFormat.QDQ
    )
    ops = [node.op_type for node in onnx.load(tmp_path / "q.onnx").graph.node]
    assert (ops.count("QuantizeLinear"), ops.count("DequantizeLinear")) == (2, 3)
    scales = {
        i.name: onnx.numpy_helper.to_array(i)
        for i in onnx.load(tmp_path / "q.onnx").graph.initializer
    }
    # the input's range is the range of all four samples (both batches were read)
    expected = (max(data.max(), 0.0) - min(data.min(), 0.0)) / 255
    assert float(scales["x_scale"]) == pytest.approx(expected, rel=1e-6)
    assert reader.get_next() is None  # ORT drained the reader through get_next


# -- batch axes ----------------------------------------------------------------------------------
def test_recurrent_state_batched_on_axis_1(tmp_path, recurrent):
    state, x = recurrent_data(5)
    np.savez(tmp_path / "rnn.npz", state=state, x=x, sr=np.float32(2.0))
    reader = open_samples(tmp_path / "rnn.npz", recurrent, batch_size=2, batch_axes={"state": 1})
    reader.validate(recurrent)
    batches = list(reader)
    assert [b["state"].shape for b in batches] == [(2, 2, 4), (2, 2, 4), (2, 1, 4)]
    assert [b["x"].shape for b in batches] == [(2, 4), (2, 4), (1, 4)]
    assert all(b["sr"].shape == () and b["sr"] == 2.0 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["state"] for b in batches], axis=1), state)
    for index, batch in enumerate(batches):
        start = 2 * index
        expected = state[:, start : start + 2] + x[start : start + 2] * 2.0
        np.testing.assert_array_equal(run(recurrent, batch), expected)
    assert reader.sample_count == 5
    # limit counts samples on the batch axis too
    limited = open_samples(tmp_path / "rnn.npz", recurrent, limit=3, batch_axes={"state": 1})
    assert [b["state"].shape[1] for b in limited] == [1, 1, 1]


def test_batch_axis_mistakes_are_named(tmp_path, recurrent):
    state, x = recurrent_data(5)
    np.savez(tmp_path / "rnn.npz", state=state, x=x, sr=np.float32(2.0))
    with pytest.raises(InputDataError) as error:
        open_samples(tmp_path / "rnn.npz", recurrent).validate(recurrent)  # state axis 0 = layers
    assert str(error.value) == (
        f"{tmp_path / 'rnn.npz'}: arrays have different sample counts {{'state': 2, 'x': 5}}; "
        "axis 0 must count samples in every array."
    )
    with pytest.raises(InputDataError) as error:
        open_samples(tmp_path / "rnn.npz", recurrent, batch_axes={"state": 3}).validate(recurrent)
    assert str(error.value) == (
        f"{tmp_path / 'rnn.npz'}: input 'state' has 3 dims, so no batch axis 3; "
        "stack its samples on axis 3."
    )
    with pytest.raises(InputDataError, match="batch axis of input 'state' must be an integer"):
        open_samples(tmp_path / "rnn.npz", recurrent, batch_axes={"state": -1})
    item = {"state": np.zeros((2, 3, 4), np.float32), "x": np.zeros((2, 4), np.float32)}
    with pytest.raises(InputDataError) as error:
        list(IterableReader([item], batched=True, batch_axes={"state": 1}))
    assert str(error.value) == (
        "list data: arrays in one item have different sample counts {'state': 3, 'x': 2}; "
        "the batch axis (state: 1) must count samples in every array."
    )


def test_per_sample_items_get_the_sample_axis_where_it_belongs(recurrent):
    state, x = recurrent_data(3)
    items = [{"state": state[:, i], "x": x[i], "sr": np.float32(0.5)} for i in range(3)]
    reader = open_samples(items, recurrent, batch_size=3, batch_axes={"state": 1})
    assert reader.batched is False
    reader.validate(recurrent)
    (batch,) = list(reader)
    np.testing.assert_array_equal(batch["state"], state)
    np.testing.assert_array_equal(batch["x"], x)
    assert batch["sr"].shape == ()
    np.testing.assert_array_equal(run(recurrent, batch), state + x * 0.5)


# -- constants -----------------------------------------------------------------------------------
def test_scalar_in_npz_is_repeated_for_every_sample_and_explicit_constants(tmp_path, recurrent):
    state, x = recurrent_data(4)
    np.savez(tmp_path / "d.npz", state=state, x=x, sr=np.float32(3.0))
    reader = NpzReader(tmp_path / "d.npz", batch_size=2, batch_axes={"state": 1})
    reader.validate(recurrent)  # no model at construction: the scalar is known to be one here
    assert [float(b["sr"]) for b in reader] == [3.0, 3.0]
    np.savez(tmp_path / "d.npz", state=state, x=x)
    given = open_samples(
        tmp_path / "d.npz", recurrent, batch_axes={"state": 1}, constants={"sr": np.float32(4.0)}
    )
    given.validate(recurrent)
    assert [float(b["sr"]) for b in given] == [4.0] * 4
    assert (
        given.fingerprint()
        != open_samples(
            tmp_path / "d.npz", recurrent, batch_axes={"state": 1}, constants={"sr": np.float32(5)}
        ).fingerprint()
    )
    with pytest.raises(InputDataError, match=r"no data for input 'sr' \(given: state, x\)"):
        open_samples(tmp_path / "d.npz", recurrent, batch_axes={"state": 1}).validate(recurrent)


def test_array_without_the_sample_axis_is_repeated_along_it(tmp_path):
    model = parse("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 3] x, float[N, 3] gain) => (float[N, 3] y) { y = Mul (x, gain) }
    """)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    gain = np.array([1.0, 2.0, 3.0], np.float32)
    np.savez(tmp_path / "d.npz", x=x, gain=gain)
    reader = open_samples(tmp_path / "d.npz", model, batch_size=3)
    reader.validate(model)
    batches = list(reader)
    assert [b["gain"].shape for b in batches] == [(3, 3), (1, 3)]
    np.testing.assert_array_equal(np.concatenate([run(model, b) for b in batches]), x * gain)
    # alone, an array one dim short is not a constant: it is refused as a wrong shape
    np.savez(tmp_path / "d.npz", x=x[0], gain=gain)
    with pytest.raises(
        InputDataError, match=r"input 'x' expected float32 \[Nx3\], given float32 \[1\]"
    ):
        open_samples(tmp_path / "d.npz", model).validate(model)


def test_a_scalar_for_a_batched_input_is_still_refused(tmp_path):
    model = parse(IMAGE)
    np.savez(tmp_path / "s.npz", x=np.float32(1.0))
    with pytest.raises(InputDataError) as error:
        open_samples(tmp_path / "s.npz", model).validate(model)
    assert str(error.value) == (
        f"{tmp_path / 's.npz'}: input 'x' is a scalar; calibration arrays need the sample axis first."
    )


def test_constants_that_differ_inside_one_batch_are_refused(recurrent):
    state, x = recurrent_data(2)
    items = [{"state": state[:, i], "x": x[i], "sr": np.float32(i)} for i in range(2)]
    one_by_one = open_samples(items, recurrent, batch_axes={"state": 1})
    assert [float(b["sr"]) for b in one_by_one] == [0.0, 1.0]
    with pytest.raises(InputDataError) as error:
        list(open_samples(items, recurrent, batch_size=2, batch_axes={"state": 1}))
    assert str(error.value) == (
        "list data: input 'sr' has no batch axis and differs between samples of one batch; "
        "give batch_size=1 or one value for all samples."
    )


def test_random_reader_takes_constants(recurrent):
    reader = open_samples("random:2", recurrent, constants={"sr": np.float32(16000)})
    assert isinstance(reader, RandomReader)
    batches = list(reader)
    assert [float(b["sr"]) for b in batches] == [16000.0, 16000.0]
    assert batches[0]["x"].shape == (1, 4)


# -- whole feeds as given ------------------------------------------------------------------------
def test_whole_feeds_are_used_exactly(recurrent):
    state, x = recurrent_data(3)
    given = [
        {"state": state[:, :2], "x": x[:2], "sr": np.array(1, np.float32)},
        {"state": state[:, 2:], "x": x[2:], "sr": np.array(2, np.float32)},
    ]
    reader = open_samples(feeds=given, model=recurrent)
    assert isinstance(reader, FeedsReader) and not reader.rebatches
    reader.validate(recurrent)
    batches = list(reader)
    assert len(batches) == 2 and all(b[k] is g[k] for b, g in zip(batches, given) for k in g)
    assert open_samples(feeds=given, limit=1).sample_count == 2  # limit counts feeds
    with pytest.raises(InputDataError, match="give either a data source or feeds"):
        open_samples("random", recurrent, feeds=given)


# -- samples() and the benchmark ------------------------------------------------------------------
def test_samples_takes_items_as_given(tmp_path, recurrent):
    # what the removed _pipeline.collect_samples returned: the items as given
    state, x = recurrent_data(5)
    items = [{"state": state[:, :3], "x": x[:3], "sr": np.float32(1)}]
    pipeline_reader = open_samples(items, recurrent, batch_size=None)
    for data in (items, open_samples(feeds=items), pipeline_reader):
        ours, theirs = samples(data, recurrent, 4), items
        assert len(ours) == len(theirs) == 1
        assert all(np.array_equal(ours[0][k], theirs[0][k]) for k in theirs[0])
    np.savez(tmp_path / "d.npz", state=state, x=x, sr=np.float32(1))
    reader = open_samples(tmp_path / "d.npz", recurrent, batch_size=2, batch_axes={"state": 1})
    assert [f["x"].shape[0] for f in samples(reader, recurrent, 2)] == [2, 2]
    assert [f["x"].shape[0] for f in samples(reader, recurrent, 9)] == [2, 2, 1]
    with pytest.raises(InputDataError) as error:
        samples([{"state": state}], recurrent, 4)
    assert str(error.value) == "data lacks model input(s) ['sr', 'x']; provide every input."
    with pytest.raises(InputDataError) as error:
        samples([{"state": state[:, :, :3]}], recurrent, 4)
    assert str(error.value) == "input 'state': model expects shape [2, 'N', 4], data has [2, 5, 3]."
    with pytest.raises(InputDataError) as error:
        samples([], recurrent, 4)
    assert str(error.value) == "the data reader yielded no samples; check the data source."


def test_benchmark_feeds_from_the_same_stack(tmp_path):
    model = parse(IMAGE)
    data = np.arange(7 * 48, dtype=np.float32).reshape(7, 3, 4, 4)
    np.savez(tmp_path / "d.npz", x=data)
    feeds = benchmark_feeds(tmp_path / "d.npz", model, batch_size=3, count=4)
    assert [f["x"].shape for f in feeds] == [(3, 3, 4, 4), (3, 3, 4, 4)]  # the partial one dropped
    np.testing.assert_array_equal(feeds[1]["x"], data[3:6])
    assert len(benchmark_feeds(tmp_path / "d.npz", model, batch_size=1, count=4)) == 4
    reader = open_samples(tmp_path / "d.npz", model, batch_size=1)
    assert [f["x"].shape[0] for f in benchmark_feeds(reader, model, batch_size=2, count=9)] == [
        2
    ] * 3
    assert reader.batch_size == 1  # the given reader is not changed
    whole = [{"x": data[:5]}]
    assert (
        benchmark_feeds(open_samples(feeds=whole), model, batch_size=2, count=3)[0]["x"].shape[0]
        == 5
    )
    with pytest.raises(InputDataError) as error:
        benchmark_feeds(tmp_path / "d.npz", model, batch_size=8, count=1)
    assert str(error.value) == (
        f"{tmp_path / 'd.npz'}: holds 7 samples, fewer than the batch size 8; "
        "give more samples or a smaller batch size."
    )
    with pytest.raises(
        InputDataError, match=r"input 'x' expected float32 \[Nx3x4x4\], given float64"
    ):
        benchmark_feeds([{"x": np.zeros((3, 4, 4))}], model, batch_size=1, count=1)


def test_fixed_batch_reads_the_graph_and_calls_symbolic_or_minus_one_unfixed() -> None:
    import onnx_ir as ir

    from onnxslim.inputs import fixed_batch

    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[4, 3] a, float[N, 3] b) => (float[4, 3] y) { y = Identity (a) }
        """
    )
    assert (fixed_batch(model), fixed_batch(model, "a"), fixed_batch(model, "b")) == (4, 4, 0)
    assert fixed_batch(model, "missing") == 0


def test_variable_length_batches_are_not_joined_across_shapes():
    # text padded per batch: 3 samples of 10 tokens, then 2 of 7; batch_size 2 never mixes them
    ids = [np.ones((3, 10), np.int64), np.full((2, 7), 2, np.int64)]
    items = [{"input_ids": a, "attention_mask": np.ones_like(a)} for a in ids]
    inputs = [
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask")
    ]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["input_ids", "attention_mask"], ["y"])],
        "text",
        inputs,
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["batch", "sequence"])],
    )
    model = ir.from_proto(onnx.helper.make_model(graph))
    reader = open_samples(items, model, batch_size=2)
    shapes = [batch["input_ids"].shape for batch in reader]
    assert shapes == [(2, 10), (1, 10), (2, 7)]
    assert [int(b["input_ids"][0, 0]) for b in reader] == [1, 1, 2]
    # one batch of everything: one batch per shape, all 5 samples kept
    wide = open_samples(items, model, batch_size=8)
    assert [b["input_ids"].shape for b in wide] == [(3, 10), (2, 7)]
