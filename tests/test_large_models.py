"""Large models: external weights stay on disk (linked, mapped, never copied) through load, the
probe, quantization's prepare and save; saved offsets are aligned so ORT can map them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim._io import EXTERNAL_DATA_ALIGNMENT
from onnxslim.model import ValueProbe
from onnxslim.passes import QuantizeStatic, StructuredPrune
from onnxslim.passes.quantization._prepare import prepare
from onnxslim.runtime import create_session, session_options

WIDTH = 600  # 600 x 600 float32 = 1.44 MB per weight: above the 1 MiB alignment threshold


def _chain(folder: Path, layers: int = 3) -> Path:
    """MatMul+Relu layers, weights in ``weights.bin`` beside the model (dense, as exporters write)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(
            (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), f"w{i}"
        )
        for i in range(layers)
    ]
    nodes = []
    for i in range(layers):
        source = "x" if i == 0 else f"h{i - 1}"
        nodes.append(helper.make_node("MatMul", [source, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], ["y" if i == layers - 1 else f"h{i}"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "chain.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


def _feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((2, WIDTH)).astype(np.float32)}


def _run(path: Path) -> np.ndarray:
    return onnxslim.create_session(path).run(None, _feeds())[0]


def _offsets(path: Path) -> dict[str, int]:
    proto = onnx.load(path, load_external_data=False)
    return {
        t.name: int({e.key: e.value for e in t.external_data}.get("offset", 0))
        for t in proto.graph.initializer
        if t.data_location == TensorProto.EXTERNAL
    }


def _external(model: ir.Model) -> list[str]:
    return [
        v.name or ""
        for v in model.graph.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    ]


def test_saved_external_offsets_are_aligned_for_ort_mmap(tmp_path: Path) -> None:
    model = onnxslim.load(_chain(tmp_path))
    for value in model.graph.initializers.values():  # in memory: save writes them anew
        value.const_value = ir.tensor(value.const_value.numpy().copy(), name=value.name)
    (tmp_path / "out").mkdir()
    out = onnxslim.save(model, tmp_path / "out" / "aligned.onnx", external_data=True)
    offsets = _offsets(out)
    assert sorted(offsets) == ["w0", "w1", "w2"]
    assert all(offset % EXTERNAL_DATA_ALIGNMENT == 0 for offset in offsets.values())
    assert offsets["w1"] == 22 * 65536  # 1,440,000 bytes rounded up to 64 KiB blocks
    assert np.array_equal(_run(out), _run(tmp_path / "chain.onnx"))


def test_linked_save_keeps_weights_in_place_and_writes_only_new_ones(tmp_path: Path) -> None:
    source = _chain(tmp_path)
    model = onnxslim.load(source)
    bias = np.arange(WIDTH * 512, dtype=np.float32)  # 1.3 MB in memory: goes to <name>.data
    model.graph.register_initializer(
        ir.Value(name="extra", const_value=ir.tensor(bias, name="extra"))
    )
    before = {v.name: v.const_value for v in model.graph.initializers.values()}
    (tmp_path / "scratch").mkdir()
    out = onnxslim.save(model, tmp_path / "scratch" / "copy.onnx", link_external_data=True)
    linked = tmp_path / "scratch" / "weights.bin"
    assert os.path.samefile(linked, tmp_path / "weights.bin")
    assert linked.stat().st_nlink == 2
    assert _offsets(out)["extra"] == 0
    assert (tmp_path / "scratch" / "copy.onnx.data").stat().st_size == bias.nbytes
    # the model is untouched: same tensor objects, the weights still mapped from the source
    assert {v.name: v.const_value for v in model.graph.initializers.values()} == before
    assert _external(model) == ["w0", "w1", "w2"]
    assert np.array_equal(_run(out), _run(source))
    reloaded = onnxslim.load(out, check=False)
    assert np.array_equal(reloaded.graph.initializers["extra"].const_value.numpy(), bias)


def test_linked_save_refuses_to_replace_another_file_and_copies(tmp_path: Path) -> None:
    model = onnxslim.load(_chain(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "weights.bin").write_bytes(b"not these weights")
    out = onnxslim.save(model, tmp_path / "other" / "copy.onnx", link_external_data=True)
    assert (tmp_path / "other" / "weights.bin").read_bytes() == b"not these weights"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "copy.onnx",
        "copy.onnx.data",
        "weights.bin",
    ]
    assert np.array_equal(_run(out), _run(tmp_path / "chain.onnx"))


def test_probe_reads_external_weights_in_place_without_prepacking(tmp_path: Path) -> None:
    source = _chain(tmp_path)
    model = onnxslim.load(source)
    probe = ValueProbe(model, ["m0", "y"], external_data=True)
    options = probe.session.get_session_options()
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    values = probe.run(_feeds())
    same = session_options(optimization_level="disable", config={"session.disable_prepacking": "1"})
    assert np.array_equal(values["y"], create_session(source, None, same).run(None, _feeds())[0])
    assert _external(model) == ["w0", "w1", "w2"]  # nothing was loaded into the model


def test_prepare_links_the_weights_instead_of_copying_them(tmp_path: Path) -> None:
    model = onnxslim.load(_chain(tmp_path))
    (tmp_path / "work").mkdir()
    prepared = prepare(model, tmp_path / "work")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["prepared.onnx", "weights.bin"]
    assert os.path.samefile(tmp_path / "work" / "weights.bin", tmp_path / "weights.bin")
    assert _external(prepared.model) == ["w0", "w1", "w2"]
    assert all(not t.HasField("raw_data") for t in prepared.proto.graph.initializer)


def test_quantize_and_prune_an_external_model_round_trip(tmp_path: Path) -> None:
    source = _chain(tmp_path)
    quantized = QuantizeStatic(
        calibration="random:2", latency_guard=False, accuracy_guard=False, op_types=["MatMul"]
    )(onnxslim.load(source))
    ops = sorted({n.op_type for n in quantized.model.graph})
    assert ops == ["DequantizeLinear", "MatMul", "QuantizeLinear", "Relu"]
    out = onnxslim.save(quantized.model, tmp_path / "q.onnx", external_data=True)
    assert _run(out).shape == (2, WIDTH)
    # prune: the same cut of the same weights whether they are mapped or in memory
    mapped = StructuredPrune(ratio=0.25, round_to=16)(onnxslim.load(source)).model
    inline = onnxslim.load(source)
    for value in inline.graph.initializers.values():
        value.const_value = ir.tensor(value.const_value.numpy().copy(), name=value.name)
    inline = StructuredPrune(ratio=0.25, round_to=16)(inline).model
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = onnxslim.save(mapped, tmp_path / "a" / "p.onnx", external_data=True)
    b = onnxslim.save(inline, tmp_path / "b" / "p.onnx", external_data=True)
    # cuts of mapped weights over 1 MiB went to a mapped scratch file, not to memory (w1,
    # cut on both axes to 464 x 464, is 0.86 MB: in memory)
    assert _external(mapped) == ["w0", "w2"]
    assert Path(mapped.graph.initializers["w0"].const_value.base_dir).name.startswith(
        "onnxslim-pruned-"
    )
    assert _external(inline) == []
    assert onnx.load(a).graph.initializer[0].dims == [
        WIDTH,
        464,
    ]  # 25% of 600 removed, kept in blocks of 16
    assert np.array_equal(_run(a), _run(b))


@pytest.mark.parametrize("mode", ["dynamic"])
def test_dynamic_candidate_reads_linked_weights(tmp_path: Path, mode: str) -> None:
    result = QuantizeStatic(
        calibration="random:2", latency_guard=False, accuracy_guard=False, mode=mode
    )(onnxslim.load(_chain(tmp_path)))
    assert "MatMulInteger" in {n.op_type for n in result.model.graph}


def _quantized_chain(tmp_path: Path, segment_bytes: int | None) -> Path:
    from onnxslim.passes.quantization._emit import Emitter
    from onnxslim.passes.quantization._tensors import tensors_to_calibrate

    source = tmp_path / "chain.onnx"
    if not source.exists():
        _chain(tmp_path, layers=4)
    work = tmp_path / f"work-{segment_bytes}"
    work.mkdir()
    prepared = prepare(onnxslim.load(source), work)
    names = tensors_to_calibrate(prepared.proto, ["MatMul", "Relu"])
    ranges = {name: (-2.0 - i / 8, 2.0 + i / 8) for i, name in enumerate(sorted(names))}
    profile = QuantizeStatic().resolved_profile()
    emitter = Emitter(prepared.path, work, profile, ranges, segment_bytes=segment_bytes)
    return emitter.emit("int8", ["MatMul", "Relu"], [])


def test_segmented_emission_equals_the_whole_graph_emission(tmp_path: Path) -> None:
    whole = _quantized_chain(tmp_path, None)
    parts = _quantized_chain(tmp_path, 2_000_000)  # one 1.44 MB weight per part: 4 parts
    assert sorted(p.name for p in parts.parent.glob("*.data")) == [
        f"candidate-0-int8.part{i}.onnx.data" for i in range(4)
    ]
    whole_ops = [n.op_type for n in onnx.load(whole).graph.node]
    parts_ops = [n.op_type for n in onnx.load(parts).graph.node]
    # each of the 3 boundaries is quantized on both sides: one more Q/DQ pair (Q(DQ(Q(x))) is
    # Q(x) at the same scale, and ORT removes such pairs when it optimizes)
    assert len(parts_ops) == len(whole_ops) + 6
    assert parts_ops.count("QuantizeLinear") == whole_ops.count("QuantizeLinear") + 3
    onnx.checker.check_model(str(parts))
    assert np.array_equal(_run(parts), _run(whole))


def test_segmented_probe_gives_the_values_of_one_session(tmp_path: Path) -> None:
    source = _chain(tmp_path, layers=4)
    whole = ValueProbe(onnxslim.load(source), ["m1", "h2"])
    parts = ValueProbe(onnxslim.load(source), ["m1", "h2"], segment_bytes=2_000_000)
    assert (whole.segments, parts.segments) == (1, 4)
    assert parts.input_names == ("x",) and parts.outputs == ("m1", "h2", "y")
    one, other = whole.run(_feeds(), whole.outputs), parts.run(_feeds(), parts.outputs)
    assert all(np.array_equal(one[name], other[name]) for name in ("m1", "h2", "y"))
    assert np.array_equal(parts.session.run(["y"], _feeds())[0], one["y"])  # built on first use


def test_optimize_leaves_the_input_and_its_linked_weights_untouched(tmp_path: Path) -> None:
    """Scratch copies hard-link the user's weight file: no pass may write through the link.
    After cleanup + prune + int8 (guards on) the input's files are byte-identical."""
    import hashlib

    from onnxslim.passes import Cleanup

    source = _chain(tmp_path)
    files = sorted(p for p in source.parent.iterdir() if p.is_file())
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    result = onnxslim.Pipeline(
        [Cleanup(), StructuredPrune(ratio=0.25), QuantizeStatic(calibration="random:4")]
    ).run(source)
    (tmp_path / "out").mkdir()
    onnxslim.save(result.model, tmp_path / "out" / "m.onnx", external_data=True)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert after == before and all(os.stat(p).st_nlink == 1 for p in files)
