"""ONNX Runtime sessions: provider resolution (never a silent fallback) and sessions from IR models."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnx_ir as ir
import onnxruntime as ort

from onnxslim._errors import ProviderError
from onnxslim._io import temporary_model_file

__all__ = ["PROVIDER_ALIASES", "resolve_providers", "session_options", "create_session"]

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}


def resolve_providers(names: str | Sequence[str] | None) -> list[str]:
    """Full ORT provider names for short or full names; unavailable ones are an error."""
    if names is None:
        return ["CPUExecutionProvider"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    available = ort.get_available_providers()
    resolved = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ProviderError(
                f"execution provider '{name}' is not available in this onnxruntime build; "
                f"available: {', '.join(available)} (install e.g. onnxruntime-gpu for CUDA)."
            )
        resolved.append(full)
    return resolved


def session_options(
    *,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    allow_spinning: bool = True,
    optimization_level: str = "all",
    optimized_model_path: str | os.PathLike | None = None,
) -> ort.SessionOptions:
    """SessionOptions; pass ``allow_spinning=False`` whenever two sessions are timed side by side."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[optimization_level]
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


def create_session(
    model: ir.Model | str | os.PathLike,
    providers: str | Sequence[str] | None = None,
    options: ort.SessionOptions | None = None,
    provider_options: Sequence[dict] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on exactly the providers asked for (checked after creation)."""
    resolved = resolve_providers(providers)
    options = options or session_options()
    if isinstance(model, ir.Model):
        with temporary_model_file(model) as path:
            session = ort.InferenceSession(
                str(path), options, providers=resolved, provider_options=provider_options
            )
    else:
        session = ort.InferenceSession(
            str(Path(model)), options, providers=resolved, provider_options=provider_options
        )
    missing = [p for p in resolved if p not in session.get_providers()]
    if missing:
        raise ProviderError(
            f"execution provider(s) {', '.join(missing)} failed to initialise (ORT fell back to "
            f"{', '.join(session.get_providers())}); check the driver/library installation."
        )
    return session
