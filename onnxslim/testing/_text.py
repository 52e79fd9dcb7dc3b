"""Text reference pieces: a BERT-style encoder builder and BERT's WordPiece tokenizer."""

# mypy: disable-error-code="name-defined"
# (the builders subclass nn.Module from a torch imported at call time, so torch stays optional)
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxslim.testing._requires import _torch


def bert_style_encoder(
    vocab_size: int = 1000,
    hidden: int = 128,
    heads: int = 4,
    layers: int = 2,
    intermediate: int = 512,
    max_positions: int = 128,
    num_classes: int | None = None,
    fused_qkv: bool = False,
):
    """A BERT-style encoder (post-LN, GELU MLP, separate or fused QKV) taking input_ids and attention_mask."""
    torch = _torch()
    nn = torch.nn
    head_dim = hidden // heads

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            if fused_qkv:
                self.qkv = nn.Linear(hidden, 3 * hidden)
            else:
                self.q = nn.Linear(hidden, hidden)
                self.k = nn.Linear(hidden, hidden)
                self.v = nn.Linear(hidden, hidden)
            self.out = nn.Linear(hidden, hidden)

        def forward(self, x, bias):
            batch, seq, _ = x.shape
            if fused_qkv:
                q, k, v = self.qkv(x).split(hidden, dim=-1)
            else:
                q, k, v = self.q(x), self.k(x), self.v(x)
            q, k, v = (t.reshape(batch, seq, heads, head_dim).transpose(1, 2) for t in (q, k, v))
            scores = q @ k.transpose(-1, -2) / (head_dim**0.5) + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, hidden)
            return self.out(context)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.norm1 = nn.LayerNorm(hidden)
            self.mlp_in = nn.Linear(hidden, intermediate)
            self.mlp_out = nn.Linear(intermediate, hidden)
            self.norm2 = nn.LayerNorm(hidden)

        def forward(self, x, bias):
            x = self.norm1(x + self.attention(x, bias))
            return self.norm2(x + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(vocab_size, hidden)
            self.positions = nn.Embedding(max_positions, hidden)
            self.norm = nn.LayerNorm(hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))
            self.head = nn.Linear(hidden, num_classes) if num_classes else None

        def forward(self, input_ids, attention_mask):
            seq = input_ids.shape[1]
            positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
            x = self.norm(self.tokens(input_ids) + self.positions(positions))
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, bias)
            if self.head is not None:
                return self.head(x[:, 0])
            return x

    return Encoder()


class WordPieceTokenizer:
    """BERT's uncased tokenizer from a ``vocab.txt``: lowercase, strip accents, split on
    whitespace and punctuation, then greedy longest-match-first word pieces."""

    def __init__(self, vocab_path: str | Path, max_length: int = 128):
        tokens = Path(vocab_path).read_text(encoding="utf-8").splitlines()
        self.vocab = {token: index for index, token in enumerate(tokens)}
        self.max_length = max_length
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk, self.pad = self.vocab["[UNK]"], self.vocab["[PAD]"]

    @staticmethod
    def _is_punctuation(char: str) -> bool:
        import unicodedata

        code = ord(char)
        # BERT counts all non-alphanumeric ASCII as punctuation, plus Unicode P* categories.
        if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
            return True
        return unicodedata.category(char).startswith("P")

    def _basic(self, text: str) -> list[str]:
        import unicodedata

        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words: list[str] = []
        for chunk in text.split():
            current = ""
            for char in chunk:
                if self._is_punctuation(char):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def _word_pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return pieces

    def encode(self, text: str) -> list[int]:
        """[CLS] word pieces [SEP], truncated to ``max_length``."""
        ids = [piece for word in self._basic(text) for piece in self._word_pieces(word)]
        return [self.cls, *ids[: self.max_length - 2], self.sep]

    def __call__(self, texts: Sequence[str]) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` (int64, padded to the longest text)."""
        import numpy as np

        encoded = [self.encode(text) for text in texts]
        length = max(len(ids) for ids in encoded)
        input_ids = np.full((len(texts), length), self.pad, dtype=np.int64)
        attention_mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}
