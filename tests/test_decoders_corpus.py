"""The corpus's own GPT-2 exports (``onnxslim/_sweep_corpus.py``: ``gpt2`` without a cache and
``gpt2-kv-cache`` with ``past_key_values``/``present``): heads and MLP units prunable after
cleanup; the cache model pruned with the cache resized matches the zeroed-slice oracle on a
prefill and on a decode step fed the prefill's cache, and the pipeline verifies it on decode
steps whose cache is a real one (the float model's prefill)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxslim
from onnxslim.passes import Cleanup, StructuredPrune
from onnxslim.passes.pruning import analyze, plan_pruning, score_groups
from onnxslim.passes.pruning._apply import zero_consumers

pytest.importorskip("torch")
pytest.importorskip("transformers")
from onnxslim._sweep_corpus import exported_models  # noqa: E402

VOCAB = 512  # the corpus GPT-2 config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return {m.name: m.path for m in exported_models(folder, ["gpt2", "gpt2-kv-cache"])}


def _clean(path):
    model = onnxslim.load(path)
    Cleanup()(model)
    return model


def _feeds(session, tokens: int, cache: dict | None, seed: int) -> dict:
    """A step of ``tokens`` new tokens after ``cache`` (None: empty, as the model declares it)."""
    rng = np.random.default_rng(seed)
    cache = cache or {
        i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past")
    }
    past = next(iter(cache.values())).shape[2]
    return {
        "input_ids": rng.integers(0, VOCAB, (1, tokens)).astype(np.int64),
        "attention_mask": np.ones((1, past + tokens), np.int64),
        **cache,
    }


def _steps(model_or_path, prompt: int = 5, seed: int = 0):
    """Prefill ``prompt`` tokens on an empty cache; one decode step fed the present."""
    session = onnxslim.create_session(model_or_path)
    names = [o.name for o in session.get_outputs()]
    prefill = session.run(None, _feeds(session, prompt, None, seed))
    cache = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], prefill[1:])}
    decode = session.run(None, _feeds(session, 1, cache, seed + 1))
    return prefill, decode, _feeds(session, 1, cache, seed + 1)


@pytest.mark.parametrize("name", ["gpt2", "gpt2-kv-cache"])
def test_corpus_gpt2_heads_and_mlp_units_are_prunable(corpus, name):
    groups = analyze(_clean(corpus[name])).groups
    assert len(groups) == 6
    assert [g.num_units for g in groups if g.prunable] == [4, 256, 4, 256]
    blocked = [g for g in groups if not g.prunable]
    assert not any("Shape reads" in r for g in blocked for r in g.reasons)


def test_corpus_gpt2_cache_pruned_matches_the_zeroed_oracle_on_prefill_and_decode(corpus, tmp_path):
    pruned = _clean(corpus["gpt2-kv-cache"])
    assert StructuredPrune(ratio=0.5)(pruned).modified
    path = tmp_path / "pruned.onnx"
    onnxslim.save(pruned, path)
    onnx.checker.check_model(str(path), full_check=True)
    declared = {v.name: list(v.shape) for v in pruned.graph.inputs}
    for layer in (0, 1):
        for kind in ("key", "value"):
            assert declared[f"past_key_values.{layer}.{kind}"][1:] == [2, "past_sequence", 16]
    assert [p.shape[1] for p in pruned.graph.outputs[1:]] == [2, 2, 2, 2]

    zeroed = _clean(corpus["gpt2-kv-cache"])
    analysis = analyze(zeroed)
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
    (pre_p, dec_p, _), (pre_z, dec_z, _) = _steps(path), _steps(zeroed)
    np.testing.assert_allclose(pre_p[0], pre_z[0], atol=1e-4, rtol=1e-4)  # prefill logits
    np.testing.assert_allclose(dec_p[0], dec_z[0], atol=1e-4, rtol=1e-4)  # decode-step logits
    assert dec_p[1].shape == (1, 2, 6, 16)  # present: 2 of 4 heads, 5 + 1 tokens
    assert dec_z[1].shape == (1, 4, 6, 16)


def test_pipeline_verifies_the_pruned_corpus_gpt2_on_decode_steps_with_a_real_cache(corpus):
    path = corpus["gpt2-kv-cache"]
    # each sample: one decode step whose cache is the float model's prefill of a prompt
    data = [_steps(path, prompt, seed)[2] for prompt, seed in ((3, 0), (5, 2), (7, 4), (9, 6))]
    assert [d["past_key_values.0.key"].shape for d in data] == [(1, 4, n, 16) for n in (3, 5, 7, 9)]
    result = onnxslim.Pipeline([Cleanup(), StructuredPrune(ratio=0.5)]).run(path, data=data)
    cleanup, prune = result.report.stages[1], result.report.stages[-1]
    assert cleanup.fidelity is not None and cleanup.fidelity["samples"] == 4
    assert prune.modified and prune.parameters < cleanup.parameters
    assert prune.fidelity is not None and prune.fidelity["samples"] == 4
    assert prune.notes[0].startswith("output(s) present.0.key")
    assert "random" not in result.report.sample_source
    heads = {v.name: v.shape[1] for v in result.model.graph.inputs}
    assert heads["past_key_values.1.value"] == 2
