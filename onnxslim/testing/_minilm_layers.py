"""The BERT layers of a sentence-transformers checkpoint in torch, named as its state dict.

Imported only by ``minilm_encoder`` (at call time), so ``onnxslim.testing`` imports without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` the layers need."""

    hidden: int
    heads: int
    intermediate: int
    layers: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> BertConfig:
        return cls(
            hidden=config["hidden_size"],
            heads=config["num_attention_heads"],
            intermediate=config["intermediate_size"],
            layers=config["num_hidden_layers"],
            vocab_size=config["vocab_size"],
            max_positions=config["max_position_embeddings"],
            type_vocab_size=config.get("type_vocab_size", 2),
            eps=config.get("layer_norm_eps", 1e-12),
        )


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        hidden = config.hidden
        self.heads, self.head_dim, self.hidden = config.heads, hidden // config.heads, hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, bias):
        batch, seq, _ = x.shape
        q, k, v = (
            t.reshape(batch, seq, self.heads, self.head_dim).transpose(1, 2)
            for t in (self.query(x), self.key(x), self.value(x))
        )
        scores = q @ k.transpose(-1, -2) / (self.head_dim**0.5) + bias
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, self.hidden)


class DenseNorm(nn.Module):
    def __init__(self, config: BertConfig, width: int):
        super().__init__()
        self.dense = nn.Linear(width, config.hidden)
        self.LayerNorm = nn.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseNorm(config, config.hidden)


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.intermediate)

    def forward(self, x):
        return nn.functional.gelu(self.dense(x))  # erf GELU, as BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config, config.intermediate)

    def forward(self, x, bias):
        x = self.attention.output(self.attention.self(x, bias), x)
        return self.output(self.intermediate(x), x)


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        hidden = config.hidden
        self.word_embeddings = nn.Embedding(config.vocab_size, hidden)
        self.position_embeddings = nn.Embedding(config.max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.eps)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        # single-segment input: token type 0 everywhere
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        return self.LayerNorm(x)


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.layers))


class Bert(nn.Module):
    """Token states, or with ``pooled`` the masked mean L2-normalised (the sentence embedding)."""

    def __init__(self, config: BertConfig, pooled: bool):
        super().__init__()
        self.pooled = pooled
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids, attention_mask):
        x = self.embeddings(input_ids)
        mask = attention_mask.to(x.dtype)
        bias = (1.0 - mask[:, None, None, :]) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, bias)
        if not self.pooled:
            return x
        summed = (x * mask.unsqueeze(-1)).sum(1)
        mean = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2.0, dim=1)
