"""Re-exports of :mod:`onnxslim.runtime` for the modules that still import ``onnxslim._runtime``."""

# shim: removed in wave 2
from onnxslim.runtime import PROVIDER_ALIASES, create_session, resolve_providers, session_options

__all__ = ["PROVIDER_ALIASES", "resolve_providers", "session_options", "create_session"]
