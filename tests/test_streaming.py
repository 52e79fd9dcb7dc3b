"""Streaming audio models with state carried across calls (``onnxslim.testing._audio.stream``):
a torch GRU VAD exported with a ``state`` input and a ``state_out`` output, run chunk by chunk
on log-mel frames of speech-like audio, each call fed the previous call's state. The float and
the optimized models (int8; pruned, its state narrower) are streamed and compared chunk by
chunk; the pipeline verifies on feed dicts that hold real carried states (``FeedsReader``:
the state's batch is on axis 1). Silero VAD (``silero-vad`` wheel, when installed) likewise."""

from __future__ import annotations

import warnings

import numpy as np
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim.inputs import FeedsReader
from onnxslim.passes import Cleanup, QuantizeStatic, StructuredPrune
from onnxslim.passes.pruning import analyze, plan_pruning, score_groups
from onnxslim.passes.pruning._apply import zero_consumers
from onnxslim.testing import export_torch, frame_agreement, log_mel, speech_like_audio
from onnxslim.testing._audio import stream

torch = pytest.importorskip("torch")

CARRY = {"state_out": "state"}
CHUNK = 10  # frames per call
SOURCE = "the given data"  # verification: the float stream's calls (real states), not random


class GruVad(torch.nn.Module):
    """Log-mel frames -> Linear+ReLU -> GRU (state in, state out) -> per-frame speech probability."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU())
        self.gru = torch.nn.GRU(48, 64, batch_first=True)
        self.head = torch.nn.Linear(64, 1)

    def forward(self, frames, state):
        y, state_out = self.gru(self.encoder(frames), state)
        return torch.sigmoid(self.head(y)), state_out


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stream") / "gru_vad.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on GRU batch sizes: the batch is dynamic
        export_torch(
            GruVad(),
            (torch.randn(1, CHUNK, 32), torch.zeros(1, 1, 64)),
            path,
            input_names=["frames", "state"],
            output_names=["prob", "state_out"],
            dynamic_axes={
                "frames": {0: "batch", 1: "time"},
                "state": {1: "batch"},
                "prob": {0: "batch", 1: "time"},
                "state_out": {1: "batch"},
            },
            opset=17,
        )
    features = log_mel(speech_like_audio(4.0, seed=1).audio, n_mels=32)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    chunks = [features[None, i : i + CHUNK] for i in range(0, 400, CHUNK)]
    return path, chunks, stream(path, chunks, CARRY)


def _probs(calls) -> np.ndarray:
    return np.concatenate([outputs["prob"] for _, outputs in calls], axis=1)


def test_streaming_carries_the_state_like_one_shot(vad):
    path, chunks, calls = vad
    assert len(calls) == 40
    whole = onnxslim.create_session(path).run(
        ["prob"], {"frames": np.concatenate(chunks, 1), "state": np.zeros((1, 1, 64), np.float32)}
    )[0]
    np.testing.assert_allclose(_probs(calls), whole, atol=1e-6)
    np.testing.assert_array_equal(calls[1][0]["state"], calls[0][1]["state_out"])
    # each call restarting from zeros is another model: the carry is what makes them equal
    reset = stream(path, chunks, {}, fixed={"state": np.zeros((1, 1, 64), np.float32)})
    assert np.abs(_probs(reset) - whole).max() > 1e-3


def test_stream_names_the_chunk_input_when_it_is_ambiguous(vad):
    path, chunks, _ = vad
    with pytest.raises(ValueError, match=r"name the chunk input among \['frames', 'state'\]"):
        stream(path, chunks, {})


def test_int8_streamed_chunk_by_chunk_matches_float(vad, tmp_path):
    path, chunks, calls = vad
    data = FeedsReader([feeds for feeds, _ in calls])
    quantize = QuantizeStatic(data, mode="dynamic", latency_guard=False)
    result = onnxslim.Pipeline([Cleanup(), quantize]).run(path, data=data)
    stage = result.report.stages[-1]
    assert stage.modified and stage.summary["chosen"] == "dynamic MatMul/Gemm"
    assert stage.fidelity is not None and stage.fidelity["samples"] == 4  # the pipeline's count
    assert result.report.sample_source == SOURCE
    float_probs, int8_probs = _probs(calls), _probs(stream(result.model, chunks, CARRY))
    assert onnxslim.sqnr_db(float_probs, int8_probs) > 40.0
    assert np.abs(float_probs - int8_probs).max() < 5e-3
    # every frame the int8 error bound cannot carry across 0.5 keeps its decision (frames
    # closer to 0.5 than the bound may flip: on AVX2 the 7-bit weights flip 1 of 400)
    clear = np.abs(float_probs - 0.5) > 5e-3
    assert clear.sum() > 300
    assert frame_agreement(float_probs[clear], int8_probs[clear]) == 1.0


def test_pruned_state_streamed_matches_the_zeroed_oracle(vad):
    # 'state' / 'state_out' are carried: the GRU's hidden units prune, the state narrows
    path, chunks, _ = vad
    groups = analyze(_clean(path), round_to=1).groups
    assert [(g.num_units, g.prunable) for g in groups] == [(48, True), (64, True), (1, False)]
    pruned = _clean(path)
    assert StructuredPrune(ratio=0.5, round_to=1)(pruned).modified
    shapes = {v.name: list(v.shape) for v in [*pruned.graph.inputs, *pruned.graph.outputs]}
    assert shapes["state"][::2] == shapes["state_out"][::2] == [1, 32]

    zeroed = _clean(path)
    analysis = analyze(zeroed, round_to=1)
    plan = plan_pruning(
        analysis,
        score_groups(analysis.view, analysis.groups, "l2"),
        ratio=0.5,
        target_macs=None,
        global_ranking=False,
        max_ratio=0.9,
        min_kept=1,
    )
    zero_consumers(analysis.groups, plan)
    cut, oracle = stream(pruned, chunks, CARRY), stream(zeroed, chunks, CARRY)
    assert cut[-1][1]["state_out"].shape == (1, 1, 32)
    assert oracle[-1][1]["state_out"].shape == (1, 1, 64)
    np.testing.assert_allclose(_probs(cut), _probs(oracle), atol=1e-5)  # all 400 frames


def test_pipeline_prunes_the_state_and_verifies_on_carried_states(vad):
    path, _, calls = vad
    data = FeedsReader([feeds for feeds, _ in calls])
    result = onnxslim.Pipeline([Cleanup(), StructuredPrune(ratio=0.5)]).run(path, data=data)
    prune = result.report.stages[-1]
    assert prune.modified and prune.parameters < result.report.stages[1].parameters
    assert prune.notes == ["output(s) state_out resized by the pass: not compared"]
    assert prune.fidelity is not None and prune.fidelity["samples"] == 4
    assert result.report.sample_source == SOURCE


def _clean(path):
    model = onnxslim.load(path)
    Cleanup()(model)
    return model


def test_silero_vad_streamed_on_speech_like_audio_float_and_optimized():
    from onnxslim._sweep_corpus import wheel_models

    path = next((m.path for m in wheel_models() if m.name == "silero_vad/silero_vad"), None)
    if path is None:
        pytest.skip("silero-vad is not installed")
    clip = speech_like_audio(6.0, seed=3, hop=512)
    audio, count = clip.audio, len(clip.audio) // 512
    # Silero's 16 kHz calls: 512 new samples after the previous call's last 64
    chunks = [
        np.concatenate(
            [
                audio[max(0, i * 512 - 64) : i * 512] if i else np.zeros(64),
                audio[i * 512 : (i + 1) * 512],
            ]
        )[None].astype(np.float32)
        for i in range(count)
    ]
    fixed = {"sr": np.array(16000, np.int64)}  # a 0-d input, the same in every call
    calls = stream(path, chunks, {"stateN": "state"}, fixed=fixed, chunk_input="input")
    speech = np.array([outputs["output"][0, 0] for _, outputs in calls])
    labels = clip.labels[:count].astype(np.float32)
    assert frame_agreement(labels, speech) > 0.8  # the float model on the synthetic speech

    data = FeedsReader([feeds for feeds, _ in calls])  # state [2, batch, 128], sr 0-d
    quantize = QuantizeStatic(data, mode="dynamic", latency_guard=False, eval_samples=4)
    result = onnxslim.Pipeline([Cleanup(), quantize]).run(path, data=data)
    assert result.report.stages[-1].fidelity["samples"] == 4
    assert result.report.sample_source == "the given data"
    optimized = stream(result.model, chunks, {"stateN": "state"}, fixed=fixed, chunk_input="input")
    again = np.array([outputs["output"][0, 0] for _, outputs in optimized])
    assert frame_agreement(speech, again) == 1.0


def test_a_state_input_no_recurrent_op_reads_still_blocks():
    # 'state' added to an activation (not an LSTM/GRU/RNN state): its width is the caller's
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "state"], ["s"]),
            helper.make_node("Relu", ["s"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "added_state",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 32]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2"),
        ],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    [group] = [g for g in analyze(model).groups if g.num_units == 32]
    assert not group.prunable and group.reasons == ["'state' is a graph input"]


def _stateful_with_rate() -> ir.Model:
    """x [b, 16] -> MatMul -> + state[0] -> * float(sr) / 16000 -> MatMul; state [2, b, 32] in
    and out (its batch on axis 1), sr a 0-d int64: Silero VAD's inputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Gather", ["state", "zero"], ["first"], axis=0),
            helper.make_node("Add", ["h", "first"], ["s"]),
            helper.make_node("Cast", ["sr"], ["rate"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["rate", "nominal"], ["scale"]),
            helper.make_node("Mul", ["s", "scale"], ["t"]),
            helper.make_node("Tanh", ["t"], ["u"]),
            helper.make_node("MatMul", ["u", "w2"], ["y"]),
            helper.make_node("Unsqueeze", ["u", "zero1"], ["u1"]),
            helper.make_node("Concat", ["u1", "u1"], ["stateN"], axis=0),
        ],
        "stateful_with_rate",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 32]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 32]),
        ],
        [
            numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
            numpy_helper.from_array(np.array([0], np.int64), "zero1"),
            numpy_helper.from_array(np.array(16000.0, np.float32), "nominal"),
        ],
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("calibration", ["random", "streamed"])
def test_int8_of_a_model_with_a_0d_rate_and_a_state_batched_on_axis_1(calibration, tmp_path):
    # it stopped with "IndexError: too many indices for array: array is 0-dimensional" (the
    # guard split every input on axis 0; the first-sample check indexed the 0-d sr)
    model = _stateful_with_rate()
    path = tmp_path / "stateful.onnx"
    onnxslim.save(model, path)
    rng = np.random.default_rng(1)
    chunks = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(12)]
    fixed = {"sr": np.array(16000, np.int64)}
    calls = stream(path, chunks, {"stateN": "state"}, fixed=fixed, chunk_input="x")
    data = None if calibration == "random" else FeedsReader([feeds for feeds, _ in calls])
    quantize = QuantizeStatic(
        calibration="random" if data is None else data, latency_guard=False, eval_samples=2
    )
    result = onnxslim.Pipeline([Cleanup(), quantize]).run(path, data=data)
    stage = result.report.stages[-1]
    assert stage.modified and stage.fidelity is not None
    if data is None:
        return  # random sr and state: smoke ranges, only the run is checked
    optimized = stream(result.model, chunks, {"stateN": "state"}, fixed=fixed, chunk_input="x")
    want = np.concatenate([outputs["y"] for _, outputs in calls])
    got = np.concatenate([outputs["y"] for _, outputs in optimized])
    assert onnxslim.sqnr_db(want, got) > 20.0
