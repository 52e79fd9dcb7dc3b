"""Today's messages of the data doors, pinned before they move behind ``onnxslim.inputs``."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxslim import InputDataError
from onnxslim.inputs import IterableReader, NpzReader, open_reader, samples, validate_feeds

TWO_INPUTS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3] a, int64[N, 3] b) => (float[N, 3] y) {
    c = Cast <to = 1> (b)
    y = Add (a, c)
}
"""


@pytest.fixture
def model() -> ir.Model:
    return ir.from_proto(onnx.parser.parse_model(TWO_INPUTS))


def feeds(count: int = 2) -> dict[str, np.ndarray]:
    return {"a": np.ones((count, 3), np.float32), "b": np.ones((count, 3), np.int64)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            [np.ones((2, 3), np.float32)],
            "data items must be dicts keyed by input name for a model with inputs ['a', 'b']; "
            "got ndarray.",
        ),
        (
            [{**feeds(), "z": np.ones(1)}],
            "data has input 'z' which the model does not have; model inputs: ['a', 'b'].",
        ),
        (
            [{**feeds(), "b": np.ones((2, 3), np.int32)}],
            "input 'b': model expects int64, data has int32; convert the data.",
        ),
        (
            [{**feeds(), "a": np.ones((2, 4), np.float32)}],
            "input 'a': model expects shape ['N', 3], data has [2, 4].",
        ),
        ([{"a": feeds()["a"]}], "data lacks model input(s) ['b']; provide every input."),
        ([], "the data reader yielded no samples; check the data source."),
    ],
)
def test_samples_messages(model, data, message):
    with pytest.raises(InputDataError) as error:
        samples(data, model, 4)
    assert str(error.value) == message


def test_samples_takes_items_as_given_and_reader_batches(model):
    items = [feeds(2), feeds(5), feeds(1)]
    got = samples(items, model, 2)
    assert [len(f["a"]) for f in got] == [2, 5]
    assert got[0]["a"] is items[0]["a"]  # used as given, no copy
    reader = IterableReader([feeds(5)], batched=True, batch_size=2)
    assert [len(f["a"]) for f in samples(reader, model, 10)] == [2, 2, 1]
    # the reader is rewound: a second call reads the same feeds
    assert [len(f["a"]) for f in samples(reader, model, 10)] == [2, 2, 1]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {**feeds(), "z": np.ones(1)},
            "src: input 'z' is not an input of the model (expected inputs: a, b); rename the "
            "data keys to the model's input names.",
        ),
        (
            {"a": feeds()["a"]},
            "src: no data for input 'b' (given: a); provide arrays for all of a, b.",
        ),
        (
            {},
            "src: no data for input 'a' (given: nothing); provide arrays for all of a, b.",
        ),
        (
            {**feeds(), "b": np.ones((2, 3), np.int32)},
            "src: input 'b' expected int64 [Nx3], given int32 [2x3]; convert the data to int64 "
            "(a wrong dtype).",
        ),
        (
            {**feeds(), "a": np.ones((2, 3, 1), np.float32)},
            "src: input 'a' expected float32 [Nx3], given float32 [2x3x1]; reshape the data to "
            "the model's input shape (a wrong shape).",
        ),
    ],
)
def test_validate_feeds_messages(model, given, message):
    from onnxslim.inputs import input_specs

    with pytest.raises(InputDataError) as error:
        validate_feeds(given, input_specs(model), "src")
    assert str(error.value) == message


def test_reader_messages(tmp_path, model):
    path = tmp_path / "d.npz"
    np.savez(path, a=np.full((2, 3), np.nan, np.float32), b=np.ones((2, 3), np.int64))
    reader = NpzReader(path)
    reader.validate(model)
    with pytest.raises(InputDataError) as error:
        list(reader)
    assert str(error.value) == (
        f"{path} (batch 0): input 'a' contains NaN; remove or replace those samples."
    )
    np.savez(path, a=np.float32(1.0), b=np.ones((2, 3), np.int64))
    with pytest.raises(InputDataError) as error:
        NpzReader(path).validate(model)
    assert str(error.value) == (
        f"{path}: input 'a' is a scalar; calibration arrays need the sample axis first."
    )
    np.savez(path, a=np.ones((3, 3), np.float32), b=np.ones((2, 3), np.int64))
    with pytest.raises(InputDataError) as error:
        NpzReader(path).validate(model)
    assert str(error.value) == (
        f"{path}: arrays have different sample counts {{'a': 3, 'b': 2}}; axis 0 must count "
        "samples in every array."
    )
    with pytest.raises(InputDataError) as error:
        IterableReader([]).validate(model)
    assert str(error.value) == "list data: no samples; give at least one calibration sample."
    with pytest.raises(InputDataError) as error:
        open_reader("random:x", model)
    assert str(error.value) == (
        "calibration data 'random:x' is not understood; write 'random' or 'random:N' (N samples)."
    )
    with pytest.raises(InputDataError) as error:
        open_reader(tmp_path / "d.txt", model)
    assert str(error.value) == (
        f"{tmp_path / 'd.txt'}: calibration data not found; give an .npz file or a folder."
    )
    (tmp_path / "d.txt").write_text("")
    with pytest.raises(InputDataError) as error:
        open_reader(tmp_path / "d.txt", model)
    assert str(error.value) == (
        f"{tmp_path / 'd.txt'}: unsupported calibration file type '.txt'; give an .npz file "
        "(arrays keyed by input name) or a folder of .npy/.npz files or images."
    )
    with pytest.raises(InputDataError) as error:
        open_reader(np.ones((2, 3), np.float32), model)
    assert str(error.value) == (
        "calibration arrays: the model has 2 inputs (a, b); arrays not keyed by input name "
        "fit only single-input models: key them by input name."
    )
    with pytest.raises(InputDataError) as error:
        open_reader(3.5, model)
    assert str(error.value) == (
        "calibration data of type float is not supported; give an .npz file, a folder, "
        "'random', or an iterable of dicts/arrays."
    )
