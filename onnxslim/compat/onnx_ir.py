"""onnx-ir imports sympy when it is imported, for the arithmetic of symbolic dims only.

onnx-ir 1.1's ``_core`` and ``_symbolic_shapes`` import sympy at module level (0.4 s and about
30 MB of a process that quantizes a small model in 1-3 s); loading, editing and saving a model
never calls it. :func:`defer_sympy` makes both modules load on first attribute access instead:
a symbolic dim's arithmetic (``SymbolicDim("N") + 1``) still works and loads sympy then.
Importing this module does it (``onnxslim`` imports it first).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["DEFERRED", "defer_sympy"]

# the modules whose import onnx-ir runs at its own import and that only symbolic-dim
# arithmetic uses (``_symbolic_shapes`` reads sympy's names at module level)
DEFERRED = ("sympy", "onnx_ir._symbolic_shapes")


class _DeferredFinder(importlib.abc.MetaPathFinder):
    """Finds the DEFERRED modules as the path finder does, with a loader that runs them lazily."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in DEFERRED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def defer_sympy() -> None:
    """Imports onnx_ir with sympy deferred (nothing changes when onnx_ir is already imported)."""
    if "onnx_ir" in sys.modules:
        return
    finder = _DeferredFinder()
    sys.meta_path.insert(0, finder)
    try:
        import onnx_ir  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


defer_sympy()
