"""Model I/O: loading errors name the file and the fix; saves are atomic and never hit the input."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import ModelLoadError, SlimError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_round_trip_keeps_graph(conv_bn_path: Path, tmp_path: Path) -> None:
    model = onnxslim.load(conv_bn_path)
    assert [n.op_type for n in model.graph] == ["Conv", "Identity", "BatchNormalization", "Relu"]
    out = onnxslim.save(model, tmp_path / "copy.onnx")
    assert onnx.load(out).graph.node[0].op_type == "Conv"
    assert onnxslim.model_file_size(out) == out.stat().st_size


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"missing\.onnx: no such file"):
        onnxslim.load(tmp_path / "missing.onnx")


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a directory"):
        onnxslim.load(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not a model\n", b"\x00" * 64, b"\xff\xfe\xfd" * 100],
    ids=["text", "zeros", "garbage"],
)
def test_not_an_onnx_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    before = digest(path)
    with pytest.raises(ModelLoadError, match=r"bad\.onnx: not (a valid ONNX model|an ONNX model)"):
        onnxslim.load(path)
    assert digest(path) == before


def test_truncated_model(conv_bn_path: Path) -> None:
    data = conv_bn_path.read_bytes()
    conv_bn_path.write_bytes(data[: len(data) // 2])
    before = digest(conv_bn_path)
    with pytest.raises(ModelLoadError, match="corrupt, truncated"):
        onnxslim.load(conv_bn_path)
    assert digest(conv_bn_path) == before


def test_future_ir_version(conv_bn_path: Path) -> None:
    proto = onnx.load(conv_bn_path)
    proto.ir_version = onnx.IR_VERSION + 5
    onnx.save(proto, conv_bn_path)
    with pytest.raises(ModelLoadError, match=f"IR version {onnx.IR_VERSION + 5} is newer"):
        onnxslim.load(conv_bn_path)


def test_future_opset(conv_bn_path: Path) -> None:
    proto = onnx.load(conv_bn_path)
    proto.opset_import[0].version = 99
    onnx.save(proto, conv_bn_path)
    with pytest.raises(ModelLoadError, match="opset 99 is newer"):
        onnxslim.load(conv_bn_path)


def _save_external(proto: onnx.ModelProto, path: Path) -> None:
    # onnx only externalises raw_data tensors; the text parser writes float_data
    for index, tensor in enumerate(proto.graph.initializer):
        raw = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name)
        proto.graph.initializer[index].CopyFrom(raw)
    onnx.save(proto, path, save_as_external_data=True, location="weights.bin", size_threshold=0)


def test_missing_external_data(conv_bn_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    _save_external(onnx.load(conv_bn_path), path)
    (path.parent / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="external data file 'weights.bin'.*was not found"):
        onnxslim.load(path)


def test_truncated_external_data(conv_bn_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    _save_external(onnx.load(conv_bn_path), path)
    data = path.parent / "weights.bin"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(ModelLoadError, match="is shorter than initializer"):
        onnxslim.load(path)


def test_external_data_is_memory_mapped_and_saved(conv_bn_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    _save_external(onnx.load(conv_bn_path), path)
    model = onnxslim.load(path)
    weight = model.graph.initializers["w"].const_value
    assert isinstance(weight, ir.ExternalTensor)
    (tmp_path / "out").mkdir()
    out = onnxslim.save(model, tmp_path / "out" / "model.onnx")
    assert (out.parent / "model.onnx.data").is_file()  # stays external: it was external
    reloaded = onnx.load(out)
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(reloaded.graph.initializer[0]), weight.numpy()
    )


def test_save_refuses_to_overwrite_input(conv_bn_path: Path) -> None:
    model = onnxslim.load(conv_bn_path)
    before = digest(conv_bn_path)
    with pytest.raises(SlimError, match="refusing to overwrite the input model"):
        onnxslim.save(model, conv_bn_path)
    assert digest(conv_bn_path) == before
    onnxslim.save(model, conv_bn_path, overwrite_input=True)  # explicit request works
    assert onnx.load(conv_bn_path).graph.node[0].op_type == "Conv"


def test_save_to_missing_folder(conv_bn_path: Path, tmp_path: Path) -> None:
    model = onnxslim.load(conv_bn_path)
    with pytest.raises(SlimError, match="output folder .* does not exist"):
        onnxslim.save(model, tmp_path / "nope" / "out.onnx")


def test_failed_save_leaves_no_partial_file(
    conv_bn_path: Path, tmp_path: Path, monkeypatch
) -> None:
    model = onnxslim.load(conv_bn_path)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous content")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived mid-write

    monkeypatch.setattr(ir, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        onnxslim.save(model, target)
    assert target.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["conv_bn.onnx", "out.onnx"]


def test_large_weights_go_external(conv_bn_path: Path, tmp_path: Path, monkeypatch) -> None:
    import onnxslim._io as io_module

    monkeypatch.setattr(io_module, "EXTERNAL_DATA_THRESHOLD_BYTES", 100)
    out = onnxslim.save(onnxslim.load(conv_bn_path), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").is_file()
    assert (
        onnxslim.model_file_size(out)
        == out.stat().st_size + (tmp_path / "big.onnx.data").stat().st_size
    )


def test_save_is_deterministic(conv_bn_path: Path, tmp_path: Path) -> None:
    first = onnxslim.save(onnxslim.load(conv_bn_path), tmp_path / "a.onnx")
    second = onnxslim.save(onnxslim.load(conv_bn_path), tmp_path / "b.onnx")
    assert first.read_bytes() == second.read_bytes()
