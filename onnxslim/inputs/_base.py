"""The sample-reader protocol and the batching base every reader shares.

A reader yields feed dicts (input name -> array) batch by batch, and also speaks ONNX Runtime's
``CalibrationDataReader`` protocol (``get_next()`` / ``rewind()``), so the same object can be
handed to ``onnxruntime.quantization.quantize_static``.

Samples are stacked on each input's batch axis (axis 0 unless ``batch_axes`` says otherwise, e.g.
``{"state": 1}`` for recurrent state ``[layers, batch, hidden]``). An input without a batch axis
(a scalar sample rate) is a constant: it is fed unchanged, or repeated along the batch axis when
the model's input has one that the stored array lacks. An input whose model shape has no batch
axis at all (torchvision detection's ``[3, 320, 320]``) takes samples stacked on a new axis 0,
fed one sample per run without it.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnx_ir as ir

from onnxslim._errors import InputDataError
from onnxslim.inputs._specs import InputSpec, input_specs

__all__ = ["Feeds", "BatchAxes", "SampleReader", "BatchedReader", "validate_feeds"]

Feeds = dict[str, np.ndarray]
# Input name -> its batch axis; None: the input has no batch axis (constant across samples).
BatchAxes = Mapping[str, "int | None"]


@runtime_checkable
class SampleReader(Protocol):
    """What every pass takes as user data: re-iterable batches, validated before any work."""

    batch_size: int

    def __iter__(self) -> Iterator[Feeds]: ...

    def get_next(self) -> Feeds | None: ...

    def rewind(self) -> None: ...

    def describe(self) -> str: ...

    def fingerprint(self) -> str: ...

    @property
    def sample_count(self) -> int: ...

    @property
    def is_smoke(self) -> bool: ...

    def validate(self, model: ir.Model) -> list[InputSpec]: ...


def _describe(dtype: Any, shape: Sequence[Any]) -> str:
    dims = "x".join("?" if d is None else str(d) for d in shape)
    return f"{np.dtype(dtype)} [{dims}]"


def validate_feeds(
    feeds: Mapping[str, np.ndarray], specs: Sequence[InputSpec], origin: str
) -> None:
    """Raises InputDataError naming the input when names, ranks, static dims or dtypes differ."""
    expected = {spec.name: spec for spec in specs}
    unknown = sorted(set(feeds) - set(expected))
    if unknown:
        raise InputDataError(
            f"{origin}: input '{unknown[0]}' is not an input of the model (expected inputs: "
            f"{', '.join(expected)}); rename the data keys to the model's input names."
        )
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise InputDataError(
            f"{origin}: no data for input '{missing[0]}' (given: {', '.join(feeds) or 'nothing'}); "
            f"provide arrays for all of {', '.join(expected)}."
        )
    for name, spec in expected.items():
        array = np.asarray(feeds[name])
        given = _describe(array.dtype, array.shape)
        wanted = spec.describe().split(": ", 1)[1]
        if array.dtype != spec.dtype:
            raise InputDataError(
                f"{origin}: input '{name}' expected {wanted}, given {given}; convert the data to "
                f"{spec.dtype} (a wrong dtype)."
            )
        if spec.shape and (
            array.ndim != len(spec.shape)
            or any(isinstance(d, int) and d != g for d, g in zip(spec.shape, array.shape))
        ):
            raise InputDataError(
                f"{origin}: input '{name}' expected {wanted}, given {given}; reshape the data to "
                "the model's input shape (a wrong shape)."
            )


def _check_batch(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec], origin: str) -> None:
    """One batch against the model's inputs; NaN is never calibration data (Inf may be: masks)."""
    validate_feeds(batch, specs, origin)
    for name, array in batch.items():
        if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
            raise InputDataError(
                f"{origin}: input '{name}' contains NaN; remove or replace those samples."
            )


def _on_axis(array: np.ndarray, axis: int, start: int | None, stop: int | None) -> np.ndarray:
    """``array[start:stop]`` along ``axis`` (a view)."""
    return array[(slice(None),) * axis + (slice(start, stop),)]


class BatchedReader(abc.ABC):
    """Base of all readers: batches of ``batch_size`` samples, at most ``limit`` samples.

    Subclasses implement :meth:`_samples`, yielding dicts of arrays whose batch axis counts
    samples (one or more per dict); the base class re-batches them by slicing, not copying.
    """

    kind: str = "data"
    smoke: bool = False  # random data: valid for smoke runs only, never for real calibration
    rebatches: bool = True  # False: batches come shaped like the model's inputs already

    def __init__(
        self,
        *,
        batch_size: int = 1,
        limit: int | None = None,
        batch_axes: BatchAxes | None = None,
        constants: Mapping[str, Any] | None = None,
        specs: Sequence[InputSpec] | None = None,
    ):
        if batch_size < 1:
            raise InputDataError(f"batch_size must be >= 1, got {batch_size}.")
        if limit is not None and limit < 1:
            raise InputDataError(f"limit must be >= 1 sample, got {limit}.")
        for name, axis in (batch_axes or {}).items():
            if axis is not None and (not isinstance(axis, int) or axis < 0):
                raise InputDataError(
                    f"batch axis of input '{name}' must be an integer >= 0 or None, got {axis!r}."
                )
        self.batch_size = batch_size
        self.limit = limit
        self.batch_axes: dict[str, int | None] = dict(batch_axes or {})
        self.constants: Feeds = {name: np.asarray(v) for name, v in (constants or {}).items()}
        self._specs: list[InputSpec] | None = list(specs) if specs is not None else None
        self._validated_specs: list[InputSpec] | None = None
        self._iterator: Iterator[Feeds] | None = None
        self._unbatched: set[str] = set()  # inputs without a batch axis: one sample per run

    @abc.abstractmethod
    def _samples(self) -> Iterator[Feeds]:
        """Dicts of arrays with samples on their batch axis, in a deterministic order."""

    def describe(self) -> str:
        return self.kind

    @property
    def is_smoke(self) -> bool:
        return self.smoke

    def _layout_key(self) -> str:
        """Batch axes and constants for the fingerprint; empty when neither is set."""
        if not self.batch_axes and not self.constants:
            return ""
        digest = hashlib.sha256(repr(sorted(self.batch_axes.items())).encode())
        for name in sorted(self.constants):
            array = np.ascontiguousarray(self.constants[name])
            digest.update(name.encode() + str(array.dtype).encode() + str(array.shape).encode())
            digest.update(array.tobytes())
        return "|layout=" + digest.hexdigest()

    def fingerprint(self) -> str:
        """A digest of the data (and preprocessing) for the statistics cache key."""
        digest = hashlib.sha256(self.kind.encode())
        for batch in self:
            for name in sorted(batch):
                array = np.ascontiguousarray(batch[name])
                digest.update(name.encode())
                digest.update(str(array.dtype).encode() + str(array.shape).encode())
                digest.update(array.tobytes())
        return digest.hexdigest()

    # -- batch axes and constants ---------------------------------------------------------------
    def _axis(self, name: str) -> int:
        axis = self.batch_axes.get(name, 0)
        return 0 if axis is None else axis

    def _ranks(self) -> dict[str, int]:
        return {spec.name: len(spec.shape) for spec in self._specs or []}

    def _is_constant_sample(self, name: str, array: np.ndarray) -> bool:
        """Inputs that never get a sample axis: no batch axis, a 0-d model input, a constant."""
        if name in self.constants or (name in self.batch_axes and self.batch_axes[name] is None):
            return True
        return self._ranks().get(name) == 0 and np.ndim(array) == 0

    def _stack_one(self, sample: Mapping[str, np.ndarray]) -> Feeds:
        """One sample (no batch axis) -> a chunk of one sample; constants stay as they are."""
        return {
            name: array
            if self._is_constant_sample(name, array)
            else np.expand_dims(array, self._axis(name))
            for name, array in sample.items()
        }

    def _lacks_batch_axis(self, name: str, array: np.ndarray) -> bool:
        """Samples stacked on a new axis 0 for a model input without a batch axis: one dim more
        than the model's input, the rest fitting its shape."""
        spec = next((s for s in self._specs or [] if s.name == name), None)
        if spec is None or not spec.shape or name in self.batch_axes or name in self.constants:
            return False
        return np.ndim(array) == len(spec.shape) + 1 and all(
            not isinstance(d, int) or d == g for d, g in zip(spec.shape, np.shape(array)[1:])
        )

    def _split(self, chunk: Mapping[str, np.ndarray]) -> tuple[Feeds, Feeds]:
        """A stacked chunk -> (arrays with samples on their batch axis, constants)."""
        ranks = self._ranks()
        self._unbatched |= {n for n, a in chunk.items() if self._lacks_batch_axis(n, a)}
        stacked: Feeds = {}
        constants: Feeds = {}
        lacking: Feeds = {}  # one dim short of the model's input (or 0-d): constant beside samples
        for name, array in chunk.items():
            if name in self.constants:
                continue  # the user's constant replaces the stored one
            if self._is_constant_sample(name, array):
                constants[name] = array
            elif np.ndim(array) == (ranks[name] - 1 if name in ranks else 0):
                lacking[name] = array
            else:
                stacked[name] = array
        if stacked:
            constants.update(lacking)
        else:
            stacked = lacking
        return stacked, constants

    def _counts(self, stacked: Mapping[str, np.ndarray], origin: str) -> dict[str, int]:
        counts = {}
        for name, array in stacked.items():
            axis = self._axis(name)
            if np.ndim(array) == 0:
                raise InputDataError(
                    f"{origin}: input '{name}' is a scalar; calibration arrays need the sample axis first."
                )
            if np.ndim(array) <= axis:
                raise InputDataError(
                    f"{origin}: input '{name}' has {np.ndim(array)} dims, so no batch axis {axis}; "
                    f"stack its samples on axis {axis}."
                )
            counts[name] = int(np.shape(array)[axis])
        return counts

    def _axes_text(self) -> str:
        if not any(self.batch_axes.values()):
            return "axis 0"
        return "the batch axis (" + ", ".join(f"{n}: {a}" for n, a in self.batch_axes.items()) + ")"

    def _sample_count(self, stacked: Mapping[str, np.ndarray], origin: str) -> int:
        """Samples in one chunk; refuses scalars and unequal counts."""
        counts = self._counts(stacked, origin)
        if len(set(counts.values())) > 1:
            raise InputDataError(
                f"{origin}: arrays in one item have different sample counts {counts}; "
                f"{self._axes_text()} must count samples in every array."
            )
        return next(iter(counts.values()), 1)

    def _with_constants(
        self, batch: Feeds, constants: Mapping[str, np.ndarray], size: int
    ) -> Feeds:
        """Adds the constants; one lacking the model's batch axis is repeated ``size`` times."""
        ranks = self._ranks()
        for name, value in {**constants, **self.constants}.items():
            axis = self.batch_axes.get(name, 0)
            if axis is not None and name in ranks and value.ndim == ranks[name] - 1:
                value = np.repeat(np.expand_dims(value, axis), size, axis=axis)
            batch[name] = value
        return batch

    def batch_samples(self, batch: Mapping[str, np.ndarray]) -> int:
        """How many samples one batch of this reader holds."""
        ranks = self._ranks()
        for name, array in batch.items():
            axis = self.batch_axes.get(name, 0)
            if name in self.constants or axis is None or np.ndim(array) <= axis:
                continue
            if ranks.get(name) == 0:
                continue
            return 1 if name in self._unbatched else int(np.shape(array)[axis])
        return 1

    def _unstacked(self, batch: Feeds) -> Feeds:
        """The one sample of a batch without its stacking axis, for inputs that have none."""
        for name in self._unbatched & batch.keys():
            batch[name] = batch[name][0]
        return batch

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Feeds]:
        # After validate(), every batch is checked, not just the first one.
        specs = self._validated_specs
        for index, batch in enumerate(self._batches()):
            if specs is not None:
                _check_batch(batch, specs, f"{self.describe()} (batch {index})")
            yield batch

    def _batches(self) -> Iterator[Feeds]:
        pending: list[Feeds] = []
        pending_count = 0
        pending_constants: Feeds = {}
        emitted = 0
        step = self.batch_size
        for raw in self._samples():
            if not raw:
                continue
            chunk, constants = self._split(raw)
            step = 1 if self._unbatched else step  # no batch axis: one sample per run
            count = self._sample_count(chunk, self.describe())
            if count == 0:  # an empty item: skip it, not end the data
                continue
            if pending and not self._joinable(pending[0], chunk):
                # variable-length data (text padded per batch, audio clips): a batch never
                # joins samples of different shapes, so the pending ones go out as they are
                batch, _, _ = self._take(pending, pending_count, size=pending_count)
                emitted += pending_count
                yield self._unstacked(self._with_constants(batch, pending_constants, pending_count))
                pending, pending_count = [], 0
            if pending and not _same(pending_constants, constants):
                raise InputDataError(
                    f"{self.describe()}: input '{_first_difference(pending_constants, constants)}' "
                    "has no batch axis and differs between samples of one batch; give "
                    "batch_size=1 or one value for all samples."
                )
            pending_constants = constants
            if self.limit is not None:
                count = min(count, self.limit - emitted - pending_count)
                chunk = {n: _on_axis(a, self._axis(n), None, count) for n, a in chunk.items()}
            if count <= 0:
                break
            pending.append(chunk)
            pending_count += count
            while pending_count >= step:
                batch, pending, pending_count = self._take(pending, pending_count, size=step)
                emitted += step
                yield self._unstacked(self._with_constants(batch, pending_constants, step))
            if self.limit is not None and emitted + pending_count >= self.limit:
                break
        if pending_count:
            batch, _, _ = self._take(pending, pending_count, size=pending_count)
            yield self._unstacked(self._with_constants(batch, pending_constants, pending_count))

    def _joinable(self, left: Feeds, right: Feeds) -> bool:
        """Whether samples of two chunks can share a batch: the same shapes off the batch axis."""

        def sample_shape(name: str, array: np.ndarray) -> tuple[int, ...]:
            axis = self._axis(name)
            return array.shape[:axis] + array.shape[axis + 1 :]

        return left.keys() == right.keys() and all(
            sample_shape(n, left[n]) == sample_shape(n, right[n]) for n in left
        )

    def _take(
        self, pending: list[Feeds], count: int, size: int | None = None
    ) -> tuple[Feeds, list[Feeds], int]:
        """The first ``size`` pending samples as one batch, and the pending rest. Chunks are
        sliced, not re-concatenated: a batch inside one chunk is a view of it (a 64-sample
        ``.npz`` at batch 1 used to be copied 64 times)."""
        size = size or self.batch_size
        parts: list[Feeds] = []
        rest: list[Feeds] = []
        need = size
        for chunk in pending:
            if need == 0:
                rest.append(chunk)
                continue
            available = self._sample_count(chunk, self.describe())
            if available <= need:
                parts.append(chunk)
                need -= available
            else:
                parts.append({n: _on_axis(a, self._axis(n), None, need) for n, a in chunk.items()})
                rest.append({n: _on_axis(a, self._axis(n), need, None) for n, a in chunk.items()})
                need = 0
        batch = {
            name: np.ascontiguousarray(parts[0][name])
            if len(parts) == 1
            else np.concatenate([part[name] for part in parts], axis=self._axis(name))
            for name in parts[0]
        }
        return batch, rest, count - size

    # -- ONNX Runtime's CalibrationDataReader protocol ---------------------------------------------
    def get_next(self) -> Feeds | None:
        if self._iterator is None:
            self._iterator = iter(self)
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = None

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def sample_count(self) -> int:
        return sum(self.batch_samples(batch) for batch in self)

    def validate(self, model: ir.Model) -> list[InputSpec]:
        """Checks the first batch against the model's inputs; raises InputDataError naming the input."""
        specs = input_specs(model)
        self._specs = specs  # before reading: which arrays are constants depends on the model
        first = next(iter(self), None)
        if first is None:
            raise InputDataError(
                f"{self.describe()}: no samples; give at least one calibration sample."
            )
        for spec in specs if self.rebatches else []:
            axis = self.batch_axes.get(spec.name, 0)
            if axis is None or spec.name in self.constants or len(spec.shape) <= axis:
                continue
            if spec.name in self._unbatched:
                continue  # no batch axis: one sample per run whatever the batch size
            fixed = spec.shape[axis]
            if isinstance(fixed, int) and self.batch_size != fixed and fixed != 1:
                raise InputDataError(
                    f"{self.describe()}: input '{spec.name}' has a fixed batch of {fixed}, "
                    f"batch_size is {self.batch_size}; set batch_size={fixed}."
                )
        validate_feeds(first, specs, self.describe())
        self._validated_specs = specs
        return specs


def _same(left: Mapping[str, np.ndarray], right: Mapping[str, np.ndarray]) -> bool:
    return left.keys() == right.keys() and all(
        np.array_equal(left[name], right[name]) for name in left
    )


def _first_difference(left: Mapping[str, np.ndarray], right: Mapping[str, np.ndarray]) -> str:
    for name in sorted(set(left) | set(right)):
        if name not in left or name not in right or not np.array_equal(left[name], right[name]):
            return name
    return ""


def samples_in(batch: Mapping[str, np.ndarray], reader: object = None) -> int:
    """How many samples ``batch`` holds: the reader's count when it is one of ours (it knows
    which inputs have no batch axis, a ``[3, H, W]`` image is one sample), else axis 0."""
    if isinstance(reader, BatchedReader):
        return reader.batch_samples(batch)
    first = next(iter(batch.values()), None)
    return 1 if first is None or np.ndim(first) == 0 else len(first)
