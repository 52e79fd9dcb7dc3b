"""Families, the unit a handler returns: slots of one node tied by index maps, or a reason it cannot.

A slot is ``(value, axis)``. A handler turns one node into *families*: sets of slots whose
elements are tied by index maps (identity, offset, repeat, block). A slot that enters a node
through an axis no family of that node covers blocks its group; unknown ops block everything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

if TYPE_CHECKING:
    from onnxslim.passes.pruning._view import GraphView

# Roles of constant slots: a producer cuts the output axis of a weight, a consumer its input
# axis; a param is a per-channel parameter cut along (BN, bias, depthwise weight).
PRODUCER, CONSUMER, PARAM, STAT, ACTIVATION = "producer", "consumer", "param", "stat", "activation"

SlotKey = tuple[ir.Value, int]
Link = tuple[int, int, np.ndarray, np.ndarray]


@dataclasses.dataclass
class Family:
    """Slots of one node tied together: ``links`` are (member i, member j, indices i, indices j)."""

    members: list[tuple[ir.Value, int, str]]
    links: list[Link]
    blocked: str | None = None
    rewrite: Callable[[Any], None] | None = None
    lossy: str | None = None

    def index_of(self, value: ir.Value, axis: int) -> int | None:
        for index, (member, member_axis, _) in enumerate(self.members):
            if member is value and member_axis == axis:
                return index
        return None


@dataclasses.dataclass(frozen=True)
class Blocked:
    """A handler's answer when it cannot follow a node at all: the reason, as a value."""

    reason: str

    def __str__(self) -> str:
        return self.reason


HandlerResult = list[Family] | Blocked
Handler = Callable[["GraphView", ir.Node], HandlerResult]


def identity(n: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.arange(n)
    return indices, indices
