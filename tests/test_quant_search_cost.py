"""The per-tensor search and the candidate evaluations cost less and decide the same: a chunk's
evaluation stops once its release cannot beat the best chunk so far, a candidate's session is
built on its own file (no onnx-ir round trip), and the search keeps the same tensors float."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.test_quant_det_search import _spread_outlier_net


def spread_map_net() -> onnx.ModelProto:
    """The spread-outlier chain (five tensors each break the bound alone) read out as a map in
    [0, 1] through a Sigmoid, like PP-OCR det: the guard judges it on map IoU, per sample."""
    proto = _spread_outlier_net()
    graph = proto.graph
    graph.node[-1].output[0] = "logits"
    graph.node.append(helper.make_node("Sigmoid", ["logits"], ["y"], name="sigmoid"))
    return proto


def _data(count: int = 40) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(count)]


class _FullEvaluator:
    """The search's evaluations as they were: every chunk scored on every batch."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator

    def evaluate(self, path, stop_early=False, stop_below=None):
        return self.evaluator.evaluate(path, stop_early=stop_early)


def _search_setup(tmp_path):
    import onnx_ir as ir

    from onnxslim.fidelity import FidelityBounds, TaskMetric
    from onnxslim.passes.quantization._accuracy_guard import Evaluator
    from onnxslim.passes.quantization._calibrate import CalibrationSettings, collect_ranges
    from onnxslim.passes.quantization._emit import Emitter
    from onnxslim.passes.quantization._prepare import prepare
    from onnxslim.passes.quantization._profiles import target_profile
    from onnxslim.passes.quantization._tensors import tensors_to_calibrate

    proto = spread_map_net()
    input_path = tmp_path / "input.onnx"
    onnx.save(proto, str(input_path))
    prepared = prepare(ir.from_proto(proto), tmp_path)
    data = _data()
    names = tensors_to_calibrate(prepared.proto, ["Conv", "Sigmoid"])
    ranges = collect_ranges(prepared.model, names, data[:32], CalibrationSettings("minmax")).ranges
    # cosine per sample on y: a bounded metric, so evaluations can stop early
    metric = TaskMetric("cosine", 0.9999, outputs=("y",))
    evaluator = Evaluator(input_path, prepared, data[32:], FidelityBounds.off(), metric)
    emitter = Emitter(prepared.path, tmp_path, target_profile("cpu"), ranges)
    path = emitter.emit("all", ["Conv"], [])
    return evaluator, path


def test_the_bisection_goes_into_the_same_chunks_with_fewer_batches_run(tmp_path):
    from onnxslim.passes.quantization._node_search import task_score, tensor_gains

    evaluator, path = _search_setup(tmp_path)
    base = task_score(evaluator.evaluate(path))
    assert base < 0.9999  # the candidate fails: the search has something to find
    full_descent: list = []
    started = evaluator.evaluations
    full = tensor_gains(path, _FullEvaluator(evaluator), base, tmp_path, full_descent)
    assert evaluator.stopped_early == 0
    full_runs = evaluator.evaluations - started
    descent: list = []
    gains = tensor_gains(path, evaluator, base, tmp_path, descent)
    assert evaluator.evaluations - started - full_runs == full_runs == 14  # 8 chunks, then 6
    assert evaluator.stopped_early > 0  # some of them on fewer batches
    assert descent == full_descent  # the same chunks, with the same (exact) gains

    def ranked(values):
        return [t for t, g in sorted(values.items(), key=lambda kv: -kv[1]) if g > 0][:4]

    assert ranked(gains) == ranked(full)
    assert all(gains[t] == full[t] for t in ranked(full))  # the kept tensors' gains are exact


def test_a_candidate_session_on_its_own_file_gives_the_probes_outputs(tmp_path):
    """The guard reads a candidate's file through the probe's protobuf door; the same values
    as the probe over the loaded model (the onnx-ir copy's door), logits as QDQ sees them."""
    import onnxslim
    from onnxslim.model import ValueProbe
    from onnxslim.passes.quantization._accuracy_guard import _iter_outputs_and_logits
    from onnxslim.passes.quantization._sensitivity import _seen_as
    from onnxslim.runtime import session_options
    from tests.test_quant_cost import _chain

    _, quantized, batches = _chain(tmp_path, layers=4)
    model = onnxslim.load(quantized)
    for logits in ({"y": "logits"}, {}):
        direct = list(_iter_outputs_and_logits(quantized, batches, logits))
        seen = _seen_as(model, logits.values())
        assert seen == ({"logits": "logits_DequantizeLinear_Output"} if logits else {})
        probe = ValueProbe(model, list(seen.values()), options=session_options())
        assert len(direct) == len(batches)
        for (plain, replaced), batch in zip(direct, batches):
            want = probe.run(batch, ["y", *seen.values()])
            assert list(plain) == list(replaced) == ["y"]
            np.testing.assert_array_equal(plain["y"], want["y"])
            np.testing.assert_array_equal(replaced["y"], want[seen.get("logits", "y")])
    assert float(direct[0][1]["y"].min()) < 0.0 or logits == {}


def test_the_bisection_stops_at_the_first_split_where_no_chunk_fixes_the_bound(
    tmp_path, monkeypatch
):
    """With ``until_unfixed`` (the per-tensor search) the bisection goes no deeper than the
    first split none of whose chunks meets the bound alone: the chunk above it is the smallest
    on the path that can, and the search keeps the same tensors float with fewer evaluations."""
    from onnxslim.passes.quantization import _node_search
    from onnxslim.passes.quantization._node_search import task_score, tensor_gains

    monkeypatch.setattr(_node_search, "GROUPS", 2)  # halves: a deep path to the 5 outliers
    evaluator, path = _search_setup(tmp_path)
    base = task_score(evaluator.evaluate(path))
    full_descent: list = []
    started = evaluator.evaluations
    full = tensor_gains(path, evaluator, base, tmp_path, full_descent)
    full_runs = evaluator.evaluations - started
    descent: list = []
    started = evaluator.evaluations
    gains = tensor_gains(path, evaluator, base, tmp_path, descent, until_unfixed=True)
    runs = evaluator.evaluations - started
    assert gains == {} and len(full) == 2  # stopped above the single tensors
    assert descent == full_descent[: len(descent)] and len(descent) < len(full_descent)
    # two chunks per split, down to the one that fixed nothing (one split below the last kept)
    assert runs == 2 * (len(descent) + 1) < full_runs
    # the deepest chunk kept: the five outliers and the input, as the full search's chunk
    assert descent[-1][0] == ["x", "h1", "h2", "h3", "h4", "h5"]
