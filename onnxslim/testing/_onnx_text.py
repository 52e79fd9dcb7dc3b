"""Models written as ONNX text, for tests and examples."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_ir as ir

__all__ = ["with_random_weights"]


def with_random_weights(text: str, seed: int = 0) -> ir.Model:
    """Parses ONNX text; the typed names in ``<...>`` without a value become random float
    initializers (standard normal, drawn in declaration order from ``seed``)."""
    proto = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    for info in list(proto.graph.value_info):
        shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
        array = rng.standard_normal(shape).astype(np.float32)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, info.name))
        proto.graph.value_info.remove(info)
    return ir.from_proto(proto)
