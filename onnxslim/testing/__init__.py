"""Reference models for tests and benchmarks: torch modules of common shapes, their ONNX export,
the real third-party models that installed wheels ship, and speech-like audio with frame labels.
Needs the ``torch`` extra for the torch builders. Nothing here downloads anything."""

from onnxslim.testing._audio import (
    SpeechLikeClip,
    frame_agreement,
    log_mel,
    speech_like_audio,
    stream,
)
from onnxslim.testing._decoders import (
    decoder_feeds,
    export_decoder,
    gpt2_decoder,
    llama_style_decoder,
)
from onnxslim.testing._export import export_torch
from onnxslim.testing._onnx_text import with_random_weights
from onnxslim.testing._real_models import minilm_encoder, ppocr_model_path
from onnxslim.testing._text import WordPieceTokenizer, bert_style_encoder
from onnxslim.testing._vision import mobilenetv2_style, resnet18_style, resnet_style

__all__ = [
    "with_random_weights",
    "resnet_style",
    "resnet18_style",
    "mobilenetv2_style",
    "bert_style_encoder",
    "export_torch",
    "ppocr_model_path",
    "minilm_encoder",
    "WordPieceTokenizer",
    "llama_style_decoder",
    "gpt2_decoder",
    "export_decoder",
    "decoder_feeds",
    "SpeechLikeClip",
    "speech_like_audio",
    "stream",
    "log_mel",
    "frame_agreement",
]
