"""Decoders with a KV cache (Llama-style GQA, GPT-2 from transformers configs, random weights):
cleanup exact, default sizes a decode step, heads per KV group and MLP units pruned with the
cache resized (oracle: == the original with the removed slices zeroed, on prefill AND on a
decode step fed the cache of prefill), dynamic int8 verified."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

import onnxslim
from onnxslim.inputs import DefaultSizeError, runnable_sizes
from onnxslim.passes import Cleanup, QuantizeStatic
from onnxslim.passes.pruning import StructuredPrune, analyze, plan_pruning, score_groups
from onnxslim.passes.pruning._apply import zero_consumers

pytest.importorskip("torch")
pytest.importorskip("transformers")
from onnxslim.testing import decoder_feeds, export_decoder, gpt2_decoder, llama_style_decoder  # noqa: E402

DECODE_STEP = {"batch": 1, "sequence": 1, "total_sequence": 16, "past_sequence": 15}


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def decoder(request, tmp_path_factory):
    torch_model = llama_style_decoder() if request.param == "llama" else gpt2_decoder()
    folder = tmp_path_factory.mktemp(request.param)
    raw = export_decoder(torch_model, folder / "raw.onnx")
    model = onnxslim.load(raw)
    Cleanup()(model)
    clean = folder / "clean.onnx"
    onnxslim.save(model, clean)
    return request.param, torch_model, raw, clean


def _steps(session_or_path, torch_model, prompt: int = 5):
    """Prefill ``prompt`` tokens on an empty cache, then one decode step fed the present."""
    session = onnxslim.create_session(session_or_path)
    names = [o.name for o in session.get_outputs()]
    empty = {  # the cache as this model declares it (a pruned model has fewer KV heads)
        i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past")
    }
    prefill = session.run(None, decoder_feeds(torch_model, prompt, empty, seed=0))
    cache = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], prefill[1:])}
    decode = session.run(None, decoder_feeds(torch_model, 1, cache, seed=1))
    return prefill, decode


def test_cleanup_is_exact_on_prefill_and_decode(decoder):
    name, torch_model, raw, clean = decoder
    for want, got in zip(_steps(raw, torch_model), _steps(clean, torch_model)):
        for a, b in zip(want, got):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    assert onnxslim.load(clean).graph.num_nodes() < onnxslim.load(raw).graph.num_nodes()


def test_default_sizes_are_a_decode_step(decoder):
    assert runnable_sizes(onnxslim.load(decoder[3])) == DECODE_STEP


def test_a_cache_model_no_default_runs_names_the_decode_step_shapes():
    # The cache must hold 7 tokens: no default size fits; the message shows a decode step's.
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, past_sequence] past_key, int64[1, sequence] ids, int64[1, total_sequence] mask)
        => (float[1, 7] y) {
        target = Constant <value = int64[2] {1, 7}> ()
        y = Reshape (past_key, target)
    }""")
    with pytest.raises(DefaultSizeError) as error:
        runnable_sizes(_ir(model))
    assert "--shape past_sequence=15 --shape sequence=1 --shape total_sequence=16" in str(
        error.value
    )


def _ir(proto):
    import onnx_ir as ir

    return ir.from_proto(proto)


EXPECTED = {  # (group sizes: KV groups per layer, MLP units per layer; kept after ratio 0.5)
    "llama": ([2, 128, 2, 128], {"past_key_values.0.key": [1, 1, "past_sequence", 16]}),
    "gpt2": ([4, 256, 4, 256], {"past_key_values.0.key": [1, 2, "past_sequence", 16]}),
}


def test_heads_and_mlp_pruned_match_the_zeroed_oracle_with_the_cache(decoder, tmp_path):
    name, torch_model, _, clean = decoder
    sizes, declared = EXPECTED[name]
    analysis = analyze(onnxslim.load(clean))
    prunable = [g for g in analysis.groups if g.prunable]
    assert [g.num_units for g in prunable] == sizes
    result = StructuredPrune(ratio=0.5)(pruned := onnxslim.load(clean))
    assert result.modified
    path = tmp_path / "pruned.onnx"
    onnxslim.save(pruned, path)
    onnx.checker.check_model(str(path), full_check=True)
    inputs = {
        v.name: [d if isinstance(d, int) else str(d) for d in v.shape] for v in pruned.graph.inputs
    }
    for key, shape in declared.items():
        assert inputs[key][1:] == shape[1:]

    zeroed = onnxslim.load(clean)
    analysis = analyze(zeroed)
    scores = score_groups(analysis.view, analysis.groups, "l2")
    plan = plan_pruning(
        analysis,
        scores,
        ratio=0.5,
        target_macs=None,
        global_ranking=False,
        max_ratio=0.9,
        min_kept=1,
    )
    zero_consumers(analysis.groups, plan)
    (pre_p, dec_p), (pre_z, dec_z) = _steps(path, torch_model), _steps(zeroed, torch_model)
    np.testing.assert_allclose(pre_p[0], pre_z[0], atol=1e-4, rtol=1e-4)  # prefill logits
    np.testing.assert_allclose(dec_p[0], dec_z[0], atol=1e-4, rtol=1e-4)  # decode-step logits
    kv = declared["past_key_values.0.key"][1]
    assert dec_p[1].shape == (1, kv, 6, 16)  # present: the pruned heads, 5 + 1 tokens


def test_dynamic_int8_is_verified_on_the_decoder(decoder, tmp_path):
    name, torch_model, _, clean = decoder
    model = onnxslim.load(clean)
    data = [
        decoder_feeds(torch_model, 1, _random_cache(torch_model, seed), seed) for seed in range(4)
    ]
    result = QuantizeStatic(data, mode="dynamic", latency_guard=False).apply(
        model, onnxslim.PassContext(workdir=tmp_path)
    )
    assert result.modified and result.summary["chosen"] == "dynamic MatMul/Gemm"
    _, float_decode = _steps(clean, torch_model)
    _, int8_decode = _steps(model, torch_model)
    assert onnxslim.sqnr_db(float_decode[0], int8_decode[0]) > 15.0


def _random_cache(torch_model, seed):
    feeds = decoder_feeds(torch_model, 15, seed=seed)
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal((1, v.shape[1], 15, v.shape[3])).astype(np.float32)
        for k, v in feeds.items()
        if k.startswith("past")
    }


def test_pipeline_prunes_a_decoder_and_verifies_it_with_the_narrower_cache(tmp_path):
    """--prune on GPT-2 with a KV cache: the pass narrows the cache inputs and the present
    outputs; verification feeds the cut cache and compares the logits only (it used to stop
    with "Got invalid dimensions for input: past_key_values.1.key")."""
    from onnxslim.passes import Cleanup, StructuredPrune

    path = export_decoder(gpt2_decoder(), tmp_path / "gpt2.onnx")
    result = onnxslim.Pipeline([Cleanup(), StructuredPrune(ratio=0.5)]).run(path)
    prune = result.report.stages[-1]
    assert prune.modified and prune.parameters < result.report.stages[0].parameters
    assert prune.notes and prune.notes[0].startswith("output(s) present.0.key")
    assert prune.notes[0].endswith("resized by the pass: not compared")
    assert prune.fidelity is not None and prune.fidelity["samples"] > 0
    assert any(
        line.strip().startswith("Verification: output(s) present.0.key")
        for line in result.report.story()
    )
