"""The public corpus beyond the onnx package's models: what installed wheels ship with their
weights (PP-OCR in rapidocr, Silero VAD, openWakeWord), and architectures exported here from
torch (torchvision when importable, else hand-written equivalents) and ``transformers`` configs
(small, random weights: structure coverage). Nothing is downloaded."""

# mypy: disable-error-code="name-defined"
# (the builders subclass nn.Module from a torch imported at call time, so torch stays optional)
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CorpusModel", "EXPORTED", "wheel_models", "exported_models"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CorpusModel:
    """One model of the corpus and where it comes from."""

    name: str
    path: Path
    source: str  # "wheel rapidocr_onnxruntime", "torch (torchvision-like)", "transformers config"


# package -> folder inside it holding shipped .onnx files
_WHEELS = {
    "rapidocr_onnxruntime": "models",
    "silero_vad": "data",
    "openwakeword": "resources/models",
}


def wheel_models() -> list[CorpusModel]:
    """The .onnx models installed wheels ship (none when a wheel is absent)."""
    found = []
    for package, folder in _WHEELS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations))) / folder
        for path in sorted(root.glob("*.onnx")):
            found.append(CorpusModel(f"{package}/{path.stem}", path, f"wheel {package}"))
    return found


# -- torch-exported architectures ----------------------------------------------------------------
# module, inputs, input names, dynamic axes[, output names (then the axes cover the outputs)]
Built = tuple[Any, ...]


def _torch() -> Any:
    import torch

    return torch


def _image(module: Any, size: int = 64) -> Built:
    torch = _torch()
    return module, (torch.randn(1, 3, size, size),), ["image"], {"image": {0: "batch"}}


def _resnet18() -> Built:
    from onnxslim.testing import resnet18_style

    return _image(resnet18_style(num_classes=100))


def _mobilenetv2() -> Built:
    from onnxslim.testing import mobilenetv2_style

    return _image(mobilenetv2_style(num_classes=100, width=0.5))


def _densenet() -> Built:
    """DenseNet dense blocks: BN -> ReLU -> Conv on a growing concat, then a transition."""
    nn = _torch().nn

    class Layer(nn.Module):
        def __init__(self, cin: int, growth: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                nn.BatchNorm2d(4 * growth), nn.ReLU(),
                nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
            )  # fmt: skip

        def forward(self, x):
            return _torch().cat([x, self.body(x)], 1)

    layers: list[Any] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False)]
    channels = 32
    for block in range(2):
        for _ in range(3):
            layers.append(Layer(channels, 16))
            channels += 16
        if block == 0:
            layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels // 2, 1)]
            layers.append(nn.AvgPool2d(2))
            channels //= 2
    layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return _image(nn.Sequential(*layers, nn.Linear(channels, 100)))


def _crepe() -> Built:
    """A CREPE-like pitch CNN on raw audio: F.pad before each Conv1d (computed pads)."""
    torch = _torch()
    nn, functional = torch.nn, torch.nn.functional

    class Pitch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(
                [nn.Conv1d(1, 64, 64, 4), nn.Conv1d(64, 64, 16), nn.Conv1d(64, 64, 16)]
            )
            self.norms = nn.ModuleList([nn.BatchNorm1d(64) for _ in range(3)])
            self.head = nn.Linear(64, 60)

        def forward(self, x):
            x = x.unsqueeze(1)
            for conv, norm, pads in zip(self.convs, self.norms, ((31, 32), (7, 8), (7, 8))):
                x = functional.max_pool1d(torch.relu(norm(conv(functional.pad(x, pads)))), 2)
            return torch.sigmoid(self.head(x.mean(-1)))

    return Pitch(), (torch.randn(1, 1024),), ["audio"], {"audio": {0: "batch"}}


def _lstm_vad() -> Built:
    """An LSTM voice-activity detector on frame features (openWakeWord/Silero-like)."""
    torch = _torch()
    nn = torch.nn

    class Vad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(40, 64), nn.ReLU())
            self.lstm = nn.LSTM(64, 64, batch_first=True)
            self.head = nn.Linear(64, 1)

        def forward(self, x):
            return torch.sigmoid(self.head(self.lstm(self.encoder(x))[0]))

    axes = {"frames": {0: "batch", 1: "time"}}
    return Vad(), (torch.randn(1, 32, 40),), ["frames"], axes


def _text(module_factory: Callable[[Any], Any], config: Any) -> Built:
    torch = _torch()

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module_factory(config)

        def forward(self, ids, mask):
            # transformers 5 needs the mask given: building it exports aten::diff
            out = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
            return out.logits if hasattr(out, "logits") else out.last_hidden_state

    ids = torch.randint(0, config.vocab_size, (1, 16))
    axes = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask")}
    mask = torch.ones(1, 16, dtype=torch.long)
    return Wrapped(), (ids, mask), ["input_ids", "attention_mask"], axes


def _bert() -> Built:
    import transformers

    config = transformers.BertConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=64,
    )  # fmt: skip
    return _text(transformers.BertModel, config)


def _gpt2_config() -> Any:
    import transformers

    return transformers.GPT2Config(  # type: ignore[call-arg]
        vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64,
        attn_implementation="eager",
    )  # fmt: skip


def _gpt2() -> Built:
    import transformers

    return _text(transformers.GPT2LMHeadModel, _gpt2_config())


def _gpt2_kv_cache() -> Built:
    """The same GPT-2 with its KV cache as inputs/outputs (``past_key_values.*``, ``present.*``:
    names and axes of ``onnxslim.testing.export_decoder``)."""
    import transformers

    from onnxslim.testing._decoders import decoder_export_args

    model = transformers.GPT2LMHeadModel(_gpt2_config()).eval()
    module, example, names, outputs, axes = decoder_export_args(model)
    return module, example, names, axes, outputs


def _wav2vec2() -> Built:
    import transformers

    torch = _torch()
    config = transformers.Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )  # fmt: skip

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = transformers.Wav2Vec2Model(config)

        def forward(self, audio):
            return self.model(audio).last_hidden_state

    return Wrapped(), (torch.randn(1, 4000),), ["audio"], {"audio": {0: "batch", 1: "samples"}}


def _torchvision(name: str) -> Callable[[], Built]:
    def build() -> Built:
        import torchvision

        return _image(getattr(torchvision.models, name)(weights=None, num_classes=100), 96)

    return build


# name -> (builder, source, the package it needs)
EXPORTED: dict[str, tuple[Callable[[], Built], str, str]] = {
    "resnet18-style": (_resnet18, "torch (torchvision-like)", "torch"),
    "mobilenetv2-style": (_mobilenetv2, "torch (torchvision-like)", "torch"),
    "densenet-style": (_densenet, "torch (torchvision-like)", "torch"),
    "crepe-style": (_crepe, "torch (audio)", "torch"),
    "lstm-vad-style": (_lstm_vad, "torch (audio)", "torch"),
    "bert": (_bert, "transformers config", "transformers"),
    "gpt2": (_gpt2, "transformers config", "transformers"),
    "gpt2-kv-cache": (_gpt2_kv_cache, "transformers config", "transformers"),
    "wav2vec2": (_wav2vec2, "transformers config", "transformers"),
    "torchvision-resnet18": (_torchvision("resnet18"), "torchvision", "torchvision"),
    "torchvision-mobilenet_v3_small": (
        _torchvision("mobilenet_v3_small"),
        "torchvision",
        "torchvision",
    ),
    "torchvision-densenet121": (_torchvision("densenet121"), "torchvision", "torchvision"),
}


def exported_models(folder: str | Path, names: Sequence[str] | None = None) -> list[CorpusModel]:
    """Exports the architectures ``names`` (None: all whose package is importable) into
    ``folder`` (kept: a second call reuses the files); torch's exporter, opset 17, seed 0."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = []
    for name in names or list(EXPORTED):
        builder, source, package = EXPORTED[name]
        if importlib.util.find_spec(package) is None:
            logger.info("corpus: %s skipped (%s is not installed)", name, package)
            continue
        path = folder / f"{name}.onnx"
        if not path.is_file():
            _export(builder, path)
        models.append(CorpusModel(name, path, source))
    return models


def _export(builder: Callable[[], Built], path: Path) -> None:
    torch = _torch()
    torch.manual_seed(0)
    module, inputs, names, axes, *outputs = builder()
    # a builder naming its outputs gives their dynamic axes too; else one output, batch on axis 0
    output_names = outputs[0] if outputs else ["output"]
    dynamic_axes = axes if outputs else {**axes, "output": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are not the user's
        torch.onnx.export(
            module.eval(),
            inputs,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
        )
