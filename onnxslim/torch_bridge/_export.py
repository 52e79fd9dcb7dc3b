"""Write an ``OnnxModule``'s trained tensors back into the graph, by initializer name."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.torch_bridge._kernels_control import all_initializers
from onnxslim.torch_bridge._module import OnnxModule

__all__ = ["write_back"]


def write_back(
    module: OnnxModule, model: ir.Model, *, include_statistics: bool = True
) -> list[str]:
    """Replaces the values of the model's initializers with the module's parameters.

    Nodes, names, opset and dynamic axes are left as they are; only initializer data changes,
    in each initializer's original dtype. BatchNorm running statistics are written too when
    ``include_statistics`` (they change only if the module was built with ``train_bn_stats``).

    Returns:
        Names of the initializers whose values changed.
    """
    changed = []
    initializers = dict(all_initializers(model.graph))  # subgraph initializers are trained too
    containers = ("weights", "statistics") if include_statistics else ("weights",)
    for name, (container, _) in module.tensor_keys.items():
        if container not in containers:
            continue
        value = initializers.get(name)
        if value is None or value.const_value is None:
            continue
        array = (
            module.onnx_tensor(name)
            .detach()
            .cpu()
            .numpy()
            .astype(module.initializer_dtypes[name], copy=False)
        )
        old = value.const_value.numpy()
        if old.shape == array.shape and np.array_equal(old, array):
            continue
        if old.shape != array.shape:
            raise ValueError(
                f"initializer '{name}' changed shape {old.shape} -> {array.shape} in the student"
            )
        value.const_value = ir.Tensor(np.ascontiguousarray(array), name=name)
        changed.append(name)
    return changed
