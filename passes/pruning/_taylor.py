"""Taylor importance: |activation x gradient| per unit, from a label-free distillation loss.

The model being pruned runs as a torch student (``onnxslim.torch_bridge.OnnxModule``) and is
compared with the ORT teacher's outputs; a unit's score is the first-order estimate of how much
the loss moves when it is removed, ``|sum over its elements of a * dL/da|`` per sample, summed
over samples and batches. Loaded only for ``criterion="taylor"`` (it imports torch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from onnxslim import SlimError
from onnxslim.fidelity import looks_like_scores
from onnxslim.model import ValueProbe
from onnxslim.passes.pruning._groups import Group
from onnxslim.passes.pruning._view import GraphView
from onnxslim.torch_bridge import OnnxModule

__all__ = ["taylor_importance", "taylor_loss"]


def taylor_loss(
    student: Mapping[str, torch.Tensor], teacher: Mapping[str, np.ndarray], seed: int = 0
) -> torch.Tensor:
    """The label-free loss summed over samples (so ``dL/da`` of a sample is its own gradient).

    Class scores: KL to the teacher plus cross-entropy to the teacher's top-1 (at student ==
    teacher the KL's gradient is zero; the top-1 target keeps it informative). Other float
    outputs: squared error plus a fixed random projection of the output (its gradient is J^T r,
    so |a * g| estimates how far removing a unit moves the output).
    """
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64)
    for name, target_array in teacher.items():
        if name not in student or not np.issubdtype(target_array.dtype, np.floating):
            continue
        s = student[name]
        t = torch.from_numpy(np.ascontiguousarray(target_array)).to(s.dtype)
        if looks_like_scores(target_array):
            classes = s.shape[-1]
            flat_s, flat_t = s.reshape(-1, classes), t.reshape(-1, classes)
            log_s = F.log_softmax(flat_s, dim=-1)
            kl = F.kl_div(log_s, F.log_softmax(flat_t, dim=-1), reduction="sum", log_target=True)
            total = total + kl + F.nll_loss(log_s, flat_t.argmax(-1), reduction="sum")
        else:
            projection = torch.randn(s.shape, generator=generator, dtype=s.dtype)
            total = total + 0.5 * F.mse_loss(s, t, reduction="sum") + (projection * s).sum()
    return total


def taylor_importance(
    view: GraphView,
    groups: Sequence[Group],
    wanted: Mapping[str, tuple[Group, int]],
    batches: Iterable[Mapping[str, np.ndarray]],
    teacher: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Taylor scores per unit of every group at the activations ``wanted`` (value name ->
    (group, slot index)); ``teacher``: the reference ONNX file (None: the model itself)."""
    student = OnnxModule(view.model, outputs=list(wanted))
    student.eval()  # BatchNorm on running statistics: samples stay independent
    reference = ValueProbe(teacher if teacher is not None else view.model, [])
    output_names = [str(name) for name in student.output_names]
    sums = {group.index: np.zeros(group.num_units) for group in groups}
    seen = 0
    for batch in batches:
        feeds = {n: np.ascontiguousarray(batch[n]) for n in student.input_names}
        targets = reference.run(feeds, output_names)
        outputs = student(**{n: torch.from_numpy(a) for n, a in feeds.items()})
        activations = [outputs[name] for name in wanted]
        for tensor in activations:
            tensor.retain_grad()
        student.zero_grad(set_to_none=True)
        taylor_loss(outputs, targets, seed + seen).backward()
        seen += 1
        for name, tensor in zip(wanted, activations):
            if tensor.grad is None:
                continue  # the loss does not depend on it: every unit scores 0
            group, slot_index = wanted[name]
            slot = group.slots[slot_index]
            product = (tensor.detach() * tensor.grad).double().movedim(slot.axis, 1)
            per_sample = product.reshape(product.shape[0], slot.size, -1).sum(dim=2).abs()
            np.add.at(sums[group.index], group.unit_of[slot_index], per_sample.sum(0).numpy())
    if not seen:
        raise SlimError("prune: criterion 'taylor' needs data; pass --data (or use 'l2').")
    return sums
