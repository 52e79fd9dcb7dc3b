"""ONNX Runtime sessions: provider resolution (never a silent fallback), options, ORT's log."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx_ir as ir
import onnxruntime as ort

from onnxslim._errors import ProviderError
from onnxslim._io import temporary_model_file

__all__ = [
    "PROVIDER_ALIASES",
    "OPTIMIZATION_LEVELS",
    "resolve_providers",
    "session_options",
    "create_session",
    "ort_log_to_python",
    "set_log_severity",
]

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

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# ORT severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
ERROR_SEVERITY = 3
# ORT's warnings judge the graph it was given (unused initializers, ...): INFO, not the user's warning.
_PYTHON_LEVELS = (logging.DEBUG, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
_ORT_LOGGER = logging.getLogger("onnxslim.ort")
_severity = ERROR_SEVERITY  # session_options' default threshold (--debug lowers it)


def set_log_severity(severity: int) -> int:
    """The default log threshold of :func:`session_options` (3: errors only; the CLI's
    ``--debug`` sets 2, warnings too); returns the previous one. ORT's environment log is
    set by :func:`ort_log_to_python`."""
    global _severity
    previous, _severity = _severity, severity
    return previous


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
    optimized_external_data: str | None = None,
    optimized_external_min_bytes: int = 1 << 20,
    external_initializers_folder: str | os.PathLike | None = None,
    log_severity_level: int | None = None,
    config: Mapping[str, str] | None = None,
) -> ort.SessionOptions:
    """SessionOptions; pass ``allow_spinning=False`` whenever two sessions are timed side by side.

    Args:
        intra_op_threads, inter_op_threads: Thread pool sizes (ORT's default when None or 0).
        allow_spinning: Let idle pool threads spin (off: they cannot steal a timed session's cores).
        optimization_level: ``disable``, ``basic``, ``extended`` or ``all``.
        optimized_model_path: Where ORT writes the graph it runs after its optimizations.
        optimized_external_data: File name (beside ``optimized_model_path``) for the written
            model's weights of at least ``optimized_external_min_bytes``: keeps big models under
            protobuf's 2 GiB limit.
        external_initializers_folder: Folder of the external weights of a model given as bytes.
        log_severity_level: The session's log threshold; default 3 (errors only), see
            :func:`set_log_severity`.
        config: Further session config entries (``add_session_config_entry``).
    """
    options = ort.SessionOptions()
    options.log_severity_level = _severity if log_severity_level is None else log_severity_level
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization_level]
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    if optimized_external_data is not None:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", optimized_external_data
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes",
            str(optimized_external_min_bytes),
        )
    if external_initializers_folder is not None:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path",
            str(external_initializers_folder),
        )
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


def create_session(
    model: ir.Model | str | os.PathLike | bytes,
    providers: str | Sequence[str] | None = None,
    options: ort.SessionOptions | None = None,
    provider_options: Sequence[dict] | None = None,
    *,
    disabled_optimizers: Sequence[str] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on exactly the providers asked for (checked after creation).

    ``model`` is an IR model (written to a temporary file), a path, or serialized bytes (with
    ``session_options(external_initializers_folder=...)`` where its weights are external).
    """
    resolved = resolve_providers(providers)
    options = options or session_options()
    extra = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    if isinstance(model, ir.Model):
        with temporary_model_file(model) as path:
            session = ort.InferenceSession(
                str(path), options, providers=resolved, provider_options=provider_options, **extra
            )
    else:
        source = model if isinstance(model, bytes) else str(Path(model))
        session = ort.InferenceSession(
            source, options, providers=resolved, provider_options=provider_options, **extra
        )
    missing = [p for p in resolved if p not in session.get_providers()]
    if missing:
        raise ProviderError(
            f"execution provider(s) {', '.join(missing)} failed to initialise (ORT fell back to "
            f"{', '.join(session.get_providers())}); check the driver/library installation."
        )
    return session


def _forward(severity: int, category: str, logid: str, location: str, message: str) -> None:
    level = _PYTHON_LEVELS[min(max(severity, 0), len(_PYTHON_LEVELS) - 1)]
    _ORT_LOGGER.log(level, "%s (%s)", message, location)


_log_lock = threading.Lock()
_log_depth = 0


@contextlib.contextmanager
def ort_log_to_python(severity: int = 2) -> Iterator[logging.Logger]:
    """While inside, ORT's environment log (severity >= ``severity``) goes to the Python logger
    ``onnxslim.ort`` instead of the terminal; on exit ORT's own sink and warning level return.

    Sessions still filter by their own ``log_severity_level`` (3 from :func:`session_options`).
    ORT's worker threads, unknown to Python, keep writing to ORT's sink (ORT's rule).
    """
    global _log_depth
    with _log_lock:
        if _log_depth == 0:
            ort.set_default_logger_callback(_forward, severity)
        _log_depth += 1
    try:
        yield _ORT_LOGGER
    finally:
        with _log_lock:
            _log_depth -= 1
            if _log_depth == 0:
                ort.set_default_logger_callback(None)
                ort.set_default_logger_severity(2)  # ORT's default threshold: warnings
