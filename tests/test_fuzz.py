"""Property-based fuzzing of the loader, recipes, shape flags and data checks.

Every case must end in a clean result or a SlimError with a message; never another exception,
never a changed input file, never a partial output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnxslim
from onnxslim import SlimError
from onnxslim._recipe import parse_recipe
from onnxslim.inputs import parse_size_argument
from tests.conftest import conv_bn_model

FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
VALID_BYTES = conv_bn_model().SerializeToString()


def _load_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(data)
    before = hashlib.sha256(data).hexdigest()
    try:
        model = onnxslim.load(path)
    except SlimError as error:
        assert str(error).startswith(str(path)), error
    else:
        # a mutation that still parses must give a model we can at least describe or reject cleanly
        try:
            onnxslim.model_stats(model)
        except SlimError:
            pass
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(VALID_BYTES) - 1))
def test_truncated_models(tmp_path: Path, cut: int) -> None:
    _load_bytes(tmp_path, VALID_BYTES[:cut])


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(VALID_BYTES) - 1), st.integers(0, 7)), min_size=1, max_size=8
    )
)
def test_bit_flipped_models(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_BYTES)
    for position, bit in flips:
        data[position] ^= 1 << bit
    _load_bytes(tmp_path, bytes(data))


@FUZZ
@given(data=st.binary(min_size=0, max_size=512))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    _load_bytes(tmp_path, data)


@FUZZ
@given(dims=st.lists(st.integers(min_value=-5, max_value=1 << 40), min_size=1, max_size=6))
def test_absurd_declared_shapes(tmp_path: Path, dims: list[int]) -> None:
    proto = conv_bn_model()
    shape = proto.graph.input[0].type.tensor_type.shape
    shape.ClearField("dim")
    for dim in dims:
        shape.dim.add().dim_value = dim
    _load_bytes(tmp_path, proto.SerializeToString())


@FUZZ
@given(location=st.text(min_size=1, max_size=40))
def test_wrong_external_data_paths(tmp_path: Path, location: str) -> None:
    proto = conv_bn_model()
    tensor = proto.graph.initializer[0]
    raw = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name)
    raw.ClearField("raw_data")
    raw.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "432")):
        entry = raw.external_data.add()
        entry.key, entry.value = key, value
    proto.graph.initializer[0].CopyFrom(raw)
    _load_bytes(tmp_path, proto.SerializeToString())


_toml_scalars = st.one_of(
    st.integers(-3, 100), st.floats(allow_nan=False, width=32), st.booleans(), st.text(max_size=8)
)


@FUZZ
@given(
    document=st.dictionaries(
        st.sampled_from(
            ["passes", "bounds", "sizes", "verify", "num_samples", "providers", "junk"]
        ),
        st.one_of(
            _toml_scalars,
            st.lists(
                st.dictionaries(
                    st.sampled_from(
                        ["name", "target_opset", "fold_constants", "iterations", "bogus"]
                    ),
                    st.one_of(_toml_scalars, st.sampled_from(["cleanup", "prunee"])),
                    max_size=4,
                ),
                max_size=3,
            ),
            st.dictionaries(
                st.sampled_from(["min_sqnr_db", "x", "batch"]), _toml_scalars, max_size=2
            ),
        ),
        max_size=5,
    )
)
def test_recipes_parse_or_fail_cleanly(document: dict) -> None:
    try:
        parse_recipe(document)
    except SlimError as error:
        assert str(error)


@FUZZ
@given(items=st.lists(st.text(max_size=20), max_size=4))
def test_shape_flags_parse_or_fail_cleanly(items: list[str]) -> None:
    try:
        sizes = dict(parse_size_argument(item) for item in items)
    except SlimError as error:
        assert "--shape" in str(error)
    else:
        assert all(isinstance(v, (int, list)) for v in sizes.values())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.float16, np.uint8]),
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
    special=st.sampled_from([None, np.nan, np.inf]),
)
def test_verification_data_checked_or_used(
    conv_bn_path: Path, dtype, shape: list[int], special
) -> None:
    array = np.zeros(shape, dtype=dtype)
    if special is not None and array.size and np.issubdtype(dtype, np.floating):
        array.flat[0] = special
    try:
        result = onnxslim.Pipeline([], num_samples=1).run(conv_bn_path, data=[{"x": array}])
    except SlimError as error:
        assert "input 'x'" in str(error) or "data" in str(error)
    else:
        assert result.report.samples == 1


def test_empty_pipeline_reports_input_only(conv_bn_path: Path) -> None:
    result = onnxslim.Pipeline([]).run(conv_bn_path)
    assert [s.stage for s in result.report.stages] == ["input"]


@pytest.mark.parametrize(
    "bad", [[{"x": np.zeros((2, 3, 8, 8), np.float32)}, {"x": np.zeros((3, 3, 8, 8), np.float32)}]]
)
def test_mismatched_batch_sizes_between_samples_are_fine(conv_bn_path: Path, bad) -> None:
    # each sample is its own batch: different batch sizes are legal for a dynamic batch axis
    result = onnxslim.Pipeline([], num_samples=2).run(conv_bn_path, data=bad)
    assert result.report.samples == 2
