"""Calibration statistics on disk: one ``.npz`` per model, data and tensor-set fingerprint."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.calibration._collector import StatisticsCollector

__all__ = ["StatisticsCache", "model_fingerprint"]

logger = logging.getLogger(__name__)


def model_fingerprint(model: ir.Model) -> str:
    """A digest of the graph and its weights."""
    return hashlib.sha256(ir.to_proto(model).SerializeToString(deterministic=True)).hexdigest()


class StatisticsCache:
    """Statistics on disk, keyed by model, data and tensor-set fingerprints (``.npz`` per key)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        default = (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "onnxslim"
            / "calibration"
        )
        self.directory = Path(directory) if directory is not None else default

    def key(self, model_digest: str, data_digest: str, names: Sequence[str], bins: int) -> str:
        payload = json.dumps([model_digest, data_digest, sorted(names), bins])
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def load(self, key: str) -> StatisticsCollector | None:
        path = self.directory / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return StatisticsCollector.from_arrays({k: archive[k] for k in archive.files})
        except (OSError, ValueError, KeyError) as error:
            logger.warning("ignoring unreadable statistics cache %s (%s)", path, error)
            return None

    def store(self, key: str, collector: StatisticsCollector) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npz"
        staging = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = collector.to_arrays()
        np.savez(staging, **arrays)
        os.replace(staging, path)
        return path
