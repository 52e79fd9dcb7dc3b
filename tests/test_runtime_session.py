"""The one session factory: providers checked, options for every caller's needs, ORT's log kept quiet."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

import onnxslim
from onnxslim.runtime import (
    PROVIDER_ALIASES,
    cpu_features,
    create_session,
    ort_log_to_python,
    resolve_providers,
    session_options,
)

_UNUSED = (
    '<ir_version: 8, opset_import: ["" : 13]> g (float[2] x) => (float[2] y) '
    "<float[2] unused = {1.0, 2.0}> { y = Relu(x) }"
)


def _matmul_model(rows: int = 64) -> onnx.ModelProto:
    """x[1, rows] @ W[rows, 4]; W is arange/100 so the expected output is exact."""
    weight = (np.arange(rows * 4, dtype=np.float32) / 100).reshape(rows, 4)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_providers_resolve_from_short_names_and_refuse_missing_ones():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers(" cpu , CPUExecutionProvider") == ["CPUExecutionProvider"] * 2
    assert PROVIDER_ALIASES["trt"] == "TensorrtExecutionProvider"
    with pytest.raises(
        onnxslim.ProviderError, match="execution provider 'nosuch' is not available"
    ):
        resolve_providers("nosuch")


def test_session_options_carry_threads_spinning_level_and_log():
    options = session_options(
        intra_op_threads=2, inter_op_threads=1, allow_spinning=False, optimization_level="disable"
    )
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.graph_optimization_level.name == "ORT_DISABLE_ALL"
    assert options.log_severity_level == 3  # errors only: nothing of ORT's on a terminal
    assert session_options(log_severity_level=2).log_severity_level == 2
    defaults = session_options()
    assert defaults.intra_op_num_threads == 0 and defaults.graph_optimization_level.name == (
        "ORT_ENABLE_ALL"
    )
    custom = session_options(config={"session.use_env_allocators": "1"})
    assert custom.get_session_config_entry("session.use_env_allocators") == "1"


def test_sessions_from_ir_model_path_and_bytes_give_the_same_outputs(tmp_path):
    proto = _matmul_model()
    path = tmp_path / "mm.onnx"
    onnx.save(proto, path)
    x = {"x": np.ones((1, 64), np.float32)}
    expected = np.ones((1, 64), np.float32) @ numpy_helper.to_array(proto.graph.initializer[0])
    for source in (ir.serde.deserialize_model(proto), path, str(path), proto.SerializeToString()):
        (y,) = create_session(source, "cpu").run(None, x)
        np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_bytes_with_external_weights_read_from_their_folder(tmp_path):
    """What pruning's shape probe needs: a serialized graph whose weights stay where they are."""
    folder = tmp_path / "weights"
    folder.mkdir()
    onnx.save(
        _matmul_model(),
        folder / "mm.onnx",
        save_as_external_data=True,
        location="mm.bin",
        size_threshold=0,
    )
    proto = onnx.load(str(folder / "mm.onnx"), load_external_data=False)
    options = session_options(optimization_level="disable", external_initializers_folder=folder)
    session = create_session(proto.SerializeToString(), "cpu", options)
    (y,) = session.run(None, {"x": np.ones((1, 64), np.float32)})
    weight = (np.arange(64 * 4, dtype=np.float32) / 100).reshape(64, 4)
    np.testing.assert_allclose(y, weight.sum(axis=0, keepdims=True), rtol=1e-6)


def test_optimized_model_written_with_its_weights_beside_it(tmp_path):
    """What the int8 coverage figure needs: ORT's optimized graph, big weights in a side file."""
    source = tmp_path / "mm.onnx"
    onnx.save(_matmul_model(rows=256), source)  # W: 256 x 4 floats = 4096 bytes
    target = tmp_path / "optimized.onnx"
    options = session_options(
        optimization_level="all",
        optimized_model_path=target,
        optimized_external_data="optimized.onnx.data",
        optimized_external_min_bytes=1024,
    )
    create_session(source, "cpu", options)
    assert (tmp_path / "optimized.onnx.data").stat().st_size >= 4096
    written = onnx.load(str(target), load_external_data=False)
    assert [i.data_location for i in written.graph.initializer] == [onnx.TensorProto.EXTERNAL]


def _nchwc_nodes(path: Path) -> int:
    return sum(node.domain == "com.microsoft.nchwc" for node in onnx.load(str(path)).graph.node)


def test_disabled_optimizers_reach_ort(tmp_path):
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 8, 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "conv.onnx")
    counts = []
    for name, disabled in (("default", None), ("off", ["NchwcTransformer"])):
        target = tmp_path / f"{name}.onnx"
        options = session_options(optimized_model_path=target)
        create_session(tmp_path / "conv.onnx", "cpu", options, disabled_optimizers=disabled)
        counts.append(_nchwc_nodes(target))
    assert counts[1] == 0
    if cpu_features().avx2:  # MLAS has NCHWc kernels from AVX2 up
        assert counts[0] > 0


def test_ort_log_goes_to_python_logging_not_the_terminal(caplog, capfd):
    model = onnx.parser.parse_model(_UNUSED).SerializeToString()
    with caplog.at_level(logging.DEBUG, logger="onnxslim.ort"):
        with ort_log_to_python() as ort_logger:
            create_session(model, "cpu", session_options(log_severity_level=2))
    assert ort_logger.name == "onnxslim.ort"
    messages = [r.getMessage() for r in caplog.records if r.name == "onnxslim.ort"]
    assert any("Removing initializer 'unused'" in message for message in messages)
    assert {r.levelno for r in caplog.records if r.name == "onnxslim.ort"} == {logging.INFO}
    assert "Removing initializer" not in capfd.readouterr().err


def test_default_session_log_level_prints_nothing(capfd):
    create_session(onnx.parser.parse_model(_UNUSED).SerializeToString(), "cpu")
    assert capfd.readouterr().err == ""
