"""Reference models for tests and benchmarks: torch modules of common shapes, their ONNX export,
and the real third-party models that installed wheels ship. Needs the ``torch`` extra for the
torch builders. Nothing here downloads anything."""

# mypy: disable-error-code="name-defined"
# (the builders subclass nn.Module from a torch imported at call time, so torch stays optional)
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "resnet_style",
    "resnet18_style",
    "mobilenetv2_style",
    "bert_style_encoder",
    "export_torch",
    "ppocr_model_path",
    "minilm_encoder",
    "WordPieceTokenizer",
]


def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("these builders need torch: pip install 'onnxslim[torch]'") from error
    return torch


def resnet_style(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 2,
    bottleneck: bool = False,
):
    """A compact ResNet (basic or bottleneck blocks) for small images such as digits 32x32."""
    torch = _torch()
    nn = torch.nn

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            mid = max(cout // 4, 1)
            self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid)
            self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    block = Bottleneck if bottleneck else Basic

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
            )
            layers, cin = [], widths[0]
            for stage, width in enumerate(widths):
                for index in range(blocks_per_stage):
                    stride = 2 if (stage > 0 and index == 0) else 1
                    layers.append(block(cin, width, stride))
                    cin = width
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    return ResNet()


def resnet18_style(num_classes: int = 1000):
    """ResNet-18 geometry (widths 64-512, two basic blocks per stage, 7x7 stem + max-pool)."""
    torch = _torch()
    nn = torch.nn
    model = resnet_style(in_channels=3, num_classes=num_classes, widths=(64, 128, 256, 512))
    model.stem = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
    )
    return model


def mobilenetv2_style(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3):
    """MobileNetV2 geometry: inverted residuals with depthwise convs and ReLU6."""
    torch = _torch()
    nn = torch.nn

    def channels(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers: list[Any] = []
            if expand != 1:
                layers += [
                    nn.Conv2d(cin, hidden, 1, bias=False),
                    nn.BatchNorm2d(hidden),
                    nn.ReLU6(),
                ]
            layers += [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(),
                nn.Conv2d(hidden, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    cin = channels(32)
    features: list[Any] = [
        nn.Conv2d(in_channels, cin, 3, 2, 1, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
    ]
    for expand, c, repeats, stride in settings:
        cout = channels(c)
        for index in range(repeats):
            features.append(Inverted(cin, cout, stride if index == 0 else 1, expand))
            cin = cout
    last = channels(1280) if width > 1.0 else 1280
    features += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*features)
            self.classifier = nn.Linear(last, num_classes)

        def forward(self, x):
            x = self.features(x).mean((2, 3))
            return self.classifier(x)

    return MobileNetV2()


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


def export_torch(
    module,
    example_inputs: tuple,
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: dict | None = None,
    opset: int = 13,
    do_constant_folding: bool = True,
) -> Path:
    """Exports with the TorchScript-based exporter (fast, deterministic), batch axis dynamic."""
    torch = _torch()
    path = Path(path)
    input_names = list(input_names or [f"input{i}" for i in range(len(example_inputs))])
    output_names = list(output_names or ["output"])
    if dynamic_axes is None and dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in input_names + output_names}
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(example_inputs),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=do_constant_folding,
        )
    return path


_RAPIDOCR_MODELS = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
}


def ppocr_model_path(kind: str = "det") -> Path | None:
    """Path of a Paddle-exported PP-OCR model shipped by the rapidocr-onnxruntime wheel, or None."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / _RAPIDOCR_MODELS[kind]
    return path if path.is_file() else None


def _read_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a .safetensors file as torch tensors (the ``safetensors`` package if installed)."""
    torch = _torch()
    if importlib.util.find_spec("safetensors") is not None:
        from safetensors.torch import load_file

        return load_file(str(path))
    import json
    import struct

    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = Path(path).read_bytes()
    # Format: 8-byte little-endian header length, JSON header, then the raw tensor bytes.
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    body = raw[8 + header_size :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors


def minilm_encoder(model_dir: str | Path, *, pooled: bool = True):
    """The BERT encoder of a sentence-transformers checkpoint (e.g. all-MiniLM-L6-v2) in torch.

    Reads ``config.json`` and ``model.safetensors`` from ``model_dir`` (no transformers needed):
    post-LN BERT with erf GELU; inputs ``input_ids`` and ``attention_mask`` [batch, seq] int64.
    ``pooled``: return the mean of the token states over the mask, L2-normalised (the sentence
    embedding, as sentence-transformers' Pooling + Normalize); else the token states.
    """
    import json

    torch = _torch()
    nn = torch.nn
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config.get("layer_norm_eps", 1e-12)
    head_dim = hidden // heads

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)

        def forward(self, x, bias):
            batch, seq, _ = x.shape
            q, k, v = (
                t.reshape(batch, seq, heads, head_dim).transpose(1, 2)
                for t in (self.query(x), self.key(x), self.value(x))
            )
            scores = q @ k.transpose(-1, -2) / (head_dim**0.5) + bias
            return (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, hidden)

    class DenseNorm(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.dense = nn.Linear(width, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseNorm(hidden)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, config["intermediate_size"])

        def forward(self, x):
            return nn.functional.gelu(self.dense(x))  # erf GELU, as BERT's "gelu"

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseNorm(config["intermediate_size"])

        def forward(self, x, bias):
            x = self.attention.output(self.attention.self(x, bias), x)
            return self.output(self.intermediate(x), x)

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
            self.token_type_embeddings = nn.Embedding(config.get("type_vocab_size", 2), hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

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
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids, attention_mask):
            x = self.embeddings(input_ids)
            mask = attention_mask.to(x.dtype)
            bias = (1.0 - mask[:, None, None, :]) * -10000.0
            for layer in self.encoder.layer:
                x = layer(x, bias)
            if not pooled:
                return x
            summed = (x * mask.unsqueeze(-1)).sum(1)
            mean = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return nn.functional.normalize(mean, p=2.0, dim=1)

    module = Bert()
    tensors = _read_safetensors(model_dir / "model.safetensors")
    state = module.state_dict()
    missing = sorted(set(state) - set(tensors))
    if missing:
        raise ValueError(
            f"{model_dir / 'model.safetensors'} lacks {missing[:3]}; is it a BERT checkpoint?"
        )
    module.load_state_dict({name: tensors[name] for name in state})
    return module.eval()


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
