"""The teacher: the reference ONNX model in an ONNX Runtime session, and its cached outputs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onnxslim import SlimError
from onnxslim.formatting import human_bytes
from onnxslim.model import ValueProbe
from onnxslim.passes.distillation._batches import Batches
from onnxslim.runtime import session_options

__all__ = ["OrtTeacher", "TeacherTargets", "TEACHER_CACHE_BYTES"]

# Auto-caching keeps teacher outputs of in-memory data up to this size (all samples together).
TEACHER_CACHE_BYTES = 2 << 30


class OrtTeacher:
    """The reference ONNX model in an ONNX Runtime session, run on the student's inputs.

    Args:
        path: The teacher model file.
        providers: ORT execution providers (any EP).
        extra_outputs: Intermediate value names to return as well (hint losses).
        cache: Keep outputs per batch (keyed by the batch's bytes) so repeated batches skip ORT.
        workdir: Unused (kept for callers): the probe writes its copy to a temporary folder.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        extra_outputs: Sequence[str] = (),
        cache: bool = False,
        workdir: str | os.PathLike | None = None,
    ) -> None:
        del workdir  # kept for callers: the probe writes its copy to a temporary folder
        self.path = Path(path)
        self.extra_outputs = list(extra_outputs)
        self.cache: dict[str, dict[str, np.ndarray]] | None = {} if cache else None
        # One session through the engine's probe (hinted values exposed as outputs).
        self.probe = ValueProbe(
            self.path,
            self.extra_outputs,
            providers=providers,
            options=session_options(allow_spinning=False),
        )
        if self.probe.skipped:
            raise SlimError(
                f"distill: teacher has no value(s) {', '.join(map(repr, self.probe.skipped))} for hint losses; name values of the teacher graph."
            )
        self.session = self.probe.session
        self.input_names = list(self.probe.input_names)
        # the model's own outputs, then the hinted values (as the augmented session had them)
        own = [name for name in self.probe.outputs if name not in self.probe.names]
        self.output_names = own + list(self.probe.names)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: feeds[name] for name in self.input_names}
        key = None
        if self.cache is not None:
            digest = hashlib.sha1()
            for name in self.input_names:
                digest.update(np.ascontiguousarray(feeds[name]).tobytes())
                digest.update(str(feeds[name].shape).encode())
            key = digest.hexdigest()
            if key in self.cache:
                return self.cache[key]
        outputs = self.probe.run(feeds, self.output_names)
        if key is not None and self.cache is not None:
            self.cache[key] = outputs
        return outputs


class TeacherTargets:
    """Teacher outputs of a fixed in-memory data set, computed once and reused every epoch.

    Stacked samples are run through the teacher in order, batch by batch, and kept per sample,
    so shuffled batches look their targets up by index; items used as given are kept per item.
    Use :meth:`build`, which declines (with the reason) when outputs are not per sample or would
    exceed the memory budget.
    """

    def __init__(
        self, stacked: dict[str, torch.Tensor] | None, per_item: list[dict[str, torch.Tensor]]
    ):
        self.stacked = stacked
        self.per_item = per_item

    @classmethod
    def build(
        cls, teacher: OrtTeacher, batches: Batches, max_bytes: int | None
    ) -> tuple[TeacherTargets | None, str]:
        """(targets, description) or (None, why not) for the teacher on ``batches``."""
        if not batches.in_memory:
            return None, "off (streamed data: the teacher runs on every batch)"
        stacked = batches.arrays is not None
        expected = batches.sample_count if stacked else len(batches.items)
        chunks: list[dict[str, np.ndarray]] = []
        for feeds, _ in batches.in_order():
            outputs = teacher(feeds)
            count = len(next(iter(feeds.values())))
            if stacked and any(
                array.ndim == 0 or array.shape[0] != count for array in outputs.values()
            ):
                return (
                    None,
                    "off (teacher outputs are not per sample: the teacher runs on every batch)",
                )
            chunks.append(outputs)
            if len(chunks) == 1 and max_bytes is not None:
                estimate = (
                    sum(a.nbytes for a in outputs.values()) * expected / (count if stacked else 1)
                )
                if estimate > max_bytes:
                    return None, (
                        f"off (teacher outputs would take {human_bytes(estimate)} > "
                        f"{human_bytes(max_bytes)}: the teacher runs on every batch)"
                    )
        names = list(chunks[0])
        if stacked:
            merged = {
                name: torch.from_numpy(np.concatenate([chunk[name] for chunk in chunks]))
                for name in names
            }
            return cls(merged, []), f"in memory ({expected} samples, computed once)"
        items = [{name: torch.from_numpy(chunk[name]) for name in names} for chunk in chunks]
        return cls(None, items), f"in memory ({expected} items, computed once)"

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        if self.stacked is not None:
            if isinstance(key, np.ndarray):
                key = torch.from_numpy(key)
            return {name: tensor[key] for name, tensor in self.stacked.items()}
        return self.per_item[key]
