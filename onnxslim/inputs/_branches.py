"""Values for a 0-d integer input that take each side of the tests the graph makes on it."""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["branch_values"]

# Ops that pass a scalar's value on unchanged (as far as an equality test can tell).
_PASS_THROUGH = frozenset({"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"})
_DEPTH = 4


def branch_values(model: ir.Model, name: str) -> list[int]:
    """The constants input ``name`` is tested against by ``Equal`` (directly or through Cast and
    reshapes, in the main graph or a body capturing it), then one value none of them equals.

    Silero VAD tests ``Equal(sr, 16000)`` to choose its 16 kHz or 8 kHz branch: smoke samples
    cycle through these values so that every branch the test selects runs. The rejected value is
    half the first constant when that is none of them (a sample rate's usual other value), else
    one more than the largest. Empty when the input is compared with no constant.
    """
    value = next((v for v in model.graph.inputs if v.name == name), None)
    constants: list[int] = []
    frontier = [] if value is None else [value]
    for _ in range(_DEPTH):
        following: list[ir.Value] = []
        for current in frontier:
            for node, index in current.uses():
                if node.domain not in ("", "ai.onnx"):
                    continue
                if node.op_type == "Equal" and len(node.inputs) == 2:
                    other = node.inputs[1 - index]
                    tensor = None if other is None else ir.convenience.get_const_tensor(other)
                    if tensor is not None and tensor.numpy().size == 1:
                        constant = int(tensor.numpy().reshape(-1)[0])
                        if constant not in constants:
                            constants.append(constant)
                elif node.op_type in _PASS_THROUGH and index == 0:
                    following += list(node.outputs)
        frontier = following
    if not constants:
        return []
    half = constants[0] // 2
    rejected = half if constants[0] > 1 and half not in constants else max(constants) + 1
    return [*constants, rejected]
