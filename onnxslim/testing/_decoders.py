"""Decoder reference models with a KV cache: a Llama-style GQA decoder and GPT-2, built from
``transformers`` config classes with random weights and exported by ``torch.onnx`` (no download).

Inputs: ``input_ids [batch, sequence]``, ``attention_mask [batch, total_sequence]`` and per layer
``past_key_values.{i}.key|value [batch, kv_heads, past_sequence, head_dim]``; outputs ``logits``
and ``present.{i}.key|value [batch, kv_heads, total_sequence, head_dim]``.
"""

# mypy: disable-error-code="name-defined,call-arg,arg-type"
from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxslim.testing._export import export_torch
from onnxslim.testing._requires import _torch

__all__ = [
    "llama_style_decoder",
    "gpt2_decoder",
    "export_decoder",
    "decoder_export_args",
    "decoder_feeds",
]


def llama_style_decoder(
    vocab_size: int = 128,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    intermediate: int = 128,
    family: str = "llama",
    seed: int = 0,
) -> Any:
    """A Llama (or Qwen2: ``family="qwen2"``, q/k/v biases) causal LM with grouped-query
    attention (``kv_heads < heads``), rotary embeddings and a SwiGLU MLP; random weights."""
    torch = _torch()
    import transformers

    config_class = transformers.Qwen2Config if family == "qwen2" else transformers.LlamaConfig
    model_class = (
        transformers.Qwen2ForCausalLM if family == "qwen2" else transformers.LlamaForCausalLM
    )
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return model_class(config).eval()


def gpt2_decoder(
    vocab_size: int = 128, hidden: int = 64, heads: int = 4, layers: int = 2, seed: int = 0
) -> Any:
    """A GPT-2 causal LM (fused QKV ``Conv1D``, GELU MLP, learned positions); random weights."""
    torch = _torch()
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_embd=hidden,
        n_head=heads,
        n_layer=layers,
        n_positions=256,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval()


def _cache_shape(model: Any) -> tuple[int, int, int]:
    config = model.config
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    return layers, kv_heads, hidden // heads


def export_decoder(model: Any, path: str | Path, past_length: int = 3, opset: int = 17) -> Path:
    """Exports ``model`` with its cache as inputs/outputs (names in the module docstring)."""
    module, example, input_names, output_names, dynamic = decoder_export_args(model, past_length)
    return export_torch(
        module,
        example,
        path,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic,
        opset=opset,
    )


def decoder_export_args(model: Any, past_length: int = 3) -> tuple[Any, tuple, list, list, dict]:
    """What ``torch.onnx.export`` takes to export ``model`` with its cache: the wrapping module,
    example inputs, input names, output names and dynamic axes (of inputs and outputs)."""
    torch = _torch()
    from transformers import DynamicCache

    layers, kv_heads, head_dim = _cache_shape(model)

    class WithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache()
            for layer in range(layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                past_key_values=cache,
                use_cache=True,
            )
            present = out.past_key_values
            flat = []
            for layer in range(layers):
                flat += [present.layers[layer].keys, present.layers[layer].values]
            return (out.logits, *flat)

    past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    dynamic = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "logits": {0: "batch", 1: "sequence"},
        **{name: {0: "batch", 2: "past_sequence"} for name in past_names},
        **{name: {0: "batch", 2: "total_sequence"} for name in present_names},
    }
    sequence = 2
    example = (
        torch.randint(0, model.config.vocab_size, (1, sequence)),
        torch.ones(1, past_length + sequence, dtype=torch.int64),
        *(torch.randn(1, kv_heads, past_length, head_dim) for _ in past_names),
    )
    names = ["input_ids", "attention_mask", *past_names]
    return WithCache(), example, names, ["logits", *present_names], dynamic


def decoder_feeds(
    model: Any, tokens: int, past: dict[str, Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """ORT feeds of a step of ``tokens`` new tokens after ``past`` (present arrays by input name;
    ``None``: an empty cache, i.e. prefill)."""
    import numpy as np

    layers, kv_heads, head_dim = _cache_shape(model)
    rng = np.random.default_rng(seed)
    names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    cache = past or {n: np.zeros((1, kv_heads, 0, head_dim), np.float32) for n in names}
    past_length = next(iter(cache.values())).shape[2]
    return {
        "input_ids": rng.integers(0, model.config.vocab_size, (1, tokens)).astype(np.int64),
        "attention_mask": np.ones((1, past_length + tokens), np.int64),
        **cache,
    }
