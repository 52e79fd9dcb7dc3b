"""Calibration sharded over ``torch.distributed`` ranks, merged exactly.

Batch ``i`` of the data goes to rank ``i % world``. Three collectives: the tensor names are
checked alike (before any work), rank 0 broadcasts the histograms' anchors after batch 0 (so
every rank bins on one lattice), and at the end one MAX all-reduce of per-tensor extremes and
widths fixes the common grid, on which one SUM all-reduce of integer counts gives every rank
the one-process statistics bit for bit. Moving-average min/max depends on the batch order
and is refused. Launched by ``torchrun`` (``WORLD_SIZE``/``RANK``), the process group is
initialised here (gloo on CPU, nccl with CUDA) unless the caller did it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from onnxslim._errors import RecipeError
from onnxslim.calibration._histogram import bin_of

__all__ = [
    "Shard",
    "join_launch",
    "join_process_group",
    "launched_rank",
    "leave_if_worker",
    "refuse_moving_average",
    "writes_outputs",
]

# Collectives wait this long for a slow rank before failing (not forever).
TIMEOUT = timedelta(minutes=30)

_exit_after_calibration = False


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's part of the data: batches ``i`` with ``i % world == rank``."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.world == self.rank

    def threads(self) -> int | None:
        """ORT threads per rank: ORT's default (as one process) when the rank has its machine,
        else the machine's cores shared by the ranks launched on it."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        if not self.sharded or local <= 1:
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // max(local, 1))


def launched_rank() -> tuple[int, int]:
    """(rank, world size) as a launcher (``torchrun``) set them in the environment, else (0, 1)."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def writes_outputs() -> bool:
    """Whether this process writes files and prints: rank 0 of a launch, or no launch."""
    return launched_rank()[0] == 0


def join_launch() -> None:
    """For the CLI under ``torchrun``: ranks other than 0 print nothing and exit 0 once
    their statistics are merged (rank 0 writes every output)."""
    global _exit_after_calibration
    rank, world = launched_rank()
    if world > 1 and rank != 0:
        _exit_after_calibration = True
        logging.getLogger().setLevel(logging.ERROR)  # rank 0 tells the warnings
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def leave_if_worker(shard: Shard) -> None:
    """Ends a CLI worker rank after the merge (see :func:`join_launch`)."""
    if _exit_after_calibration and shard.rank != 0:
        raise SystemExit(0)


def join_process_group(distributed: bool | None = None) -> Shard:
    """This process's shard: ``distributed`` False: none; None: shard when launched with more
    than one rank or inside an initialised group; True: shard or fail with a clear message."""
    if distributed is False:
        return Shard()
    rank, world = launched_rank()
    if distributed is None and world <= 1 and "torch.distributed" not in sys.modules:
        return Shard()  # no launch and no group (none without torch imported): no torch import
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        if distributed:
            raise RecipeError(
                "distributed calibration needs torch: install onnxslim[torch]."
            ) from None
        return Shard()
    if not dist.is_available():
        return Shard()
    if not dist.is_initialized():
        if world <= 1:
            if distributed:
                raise RecipeError(
                    "distributed calibration needs a launcher: run under torchrun "
                    "(WORLD_SIZE and RANK are unset) or initialise torch.distributed first."
                )
            return Shard()
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    device = "cpu"
    if dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Shard(dist.get_rank(), dist.get_world_size(), device)


def refuse_moving_average(shard: Shard, moving_average: bool) -> None:
    """Moving-average min/max has no order-free meaning: refused on a sharded run."""
    if shard.sharded and moving_average:
        raise RecipeError(
            "moving-average min/max depends on the order of the batches, so it cannot be "
            "sharded: use method 'minmax' without moving_average, or calibrate in one process."
        )


def _tensor(array: np.ndarray, shard: Shard) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(shard.device)


def check_same_tensors(names: Sequence[str], shard: Shard) -> None:
    """Every rank must calibrate the same tensors; refused on all ranks at once if not."""
    import torch.distributed as dist

    digest = int(hashlib.sha256("\0".join(names).encode()).hexdigest()[:15], 16)
    mine = _tensor(np.array([digest, len(names)], np.int64), shard)
    reference = mine.clone()
    dist.broadcast(reference, 0)
    differs = _tensor(np.array([int(bool((mine != reference).any()))], np.int64), shard)
    dist.all_reduce(differs, op=dist.ReduceOp.MAX)
    if int(differs.item()):
        raise RecipeError(
            "the ranks calibrate different tensors: run the same model, options and data on "
            "every rank."
        )


def share_anchors(collector: Any, shard: Shard) -> None:
    """After batch 0 (rank 0's): every rank bins each tensor on rank 0's lattice."""
    import torch.distributed as dist

    anchors = _tensor(collector.anchors(), shard)
    dist.broadcast(anchors, 0)
    collector.set_anchors(anchors.cpu().numpy())


def all_reduce_statistics(collector: Any, shard: Shard) -> None:
    """Replaces this rank's statistics by those of all ranks' data (identical on every rank)."""
    import torch.distributed as dist

    stats = list(collector.tensors.values())
    columns = [
        [-s.minimum, s.maximum, -s.histogram.low, s.histogram.high, s.histogram.width]
        for s in stats
    ]
    extremes = _tensor(np.array(columns, np.float64).reshape(len(stats), 5), shard)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    extreme_rows = extremes.cpu().numpy()
    bins = collector.bins
    # Columns: counts on the common grid, then batches, elements; one more row for samples.
    table = np.zeros((len(stats) + 1, bins + 2), np.int64)
    grids: list[tuple[float, int] | None] = []
    for row, (s, (_, _, low, high, widest)) in enumerate(zip(stats, extreme_rows)):
        low = -low
        grid = None
        if collector.histograms and np.isfinite(low) and np.isfinite(high) and widest > 0:
            width = s.histogram.target_width(low, high, widest)
            grid = (width, bin_of(low, width))
            table[row, :bins] = s.histogram.coarsened(*grid)
        grids.append(grid)
        table[row, bins : bins + 2] = (s.batches, s.elements)
    table[-1, 0] = collector.samples
    summed = _tensor(table, shard)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    totals = summed.cpu().numpy()
    for row, (s, extreme, grid) in enumerate(zip(stats, extreme_rows, grids)):
        s.minimum, s.maximum = float(-extreme[0]), float(extreme[1])
        s.batches, s.elements = int(totals[row, bins]), int(totals[row, bins + 1])
        s.average_minimum = s.average_maximum = None  # order-dependent: not merged
        if grid is not None:
            histogram = s.histogram
            histogram.width, histogram.offset = grid
            histogram.counts = totals[row, :bins].copy()
            histogram.low, histogram.high = float(-extreme[2]), float(extreme[3])
    collector.samples = int(totals[-1, 0])
