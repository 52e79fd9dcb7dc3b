"""Model I/O on onnx-ir: memory-mapped external weights, atomic writes, clear errors."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxslim._errors import ModelLoadError, SlimError

__all__ = [
    "load",
    "save",
    "model_file_size",
    "temporary_model_file",
    "source_path",
    "EXTERNAL_DATA_THRESHOLD_BYTES",
    "EXTERNAL_DATA_ALIGNMENT",
]

logger = logging.getLogger(__name__)

# Above this much initializer data a model is saved with its weights in a side file:
# a protobuf cannot exceed 2 GiB, and keeping headroom avoids late failures.
EXTERNAL_DATA_THRESHOLD_BYTES = 1 << 30
_SOURCE_KEY = "onnxslim.source_path"
# ORT memory-maps external weights only at offsets aligned to the allocation granularity
# (64 KiB on Windows, 4 KiB elsewhere); tensors above 1 MiB start at a multiple of this.
EXTERNAL_DATA_ALIGNMENT = 1 << 16
_INLINE_LIMIT_BYTES = 1024  # smaller tensors stay in the .onnx file


def _check_versions(proto: onnx.ModelProto, path: Path) -> None:
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{path}: IR version {proto.ir_version} is newer than this onnx package supports "
            f"({onnx.IR_VERSION}); upgrade onnx or re-export the model with an older IR version."
        )
    max_opset = onnx.defs.onnx_opset_version()
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > max_opset:
            raise ModelLoadError(
                f"{path}: opset {opset.version} is newer than this onnx package supports "
                f"({max_opset}); upgrade onnx or re-export the model at opset {max_opset} or lower."
            )


def _check_external_data(model: ir.Model, path: Path) -> None:
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        data_path = Path(tensor.base_dir) / tensor.location
        if not data_path.is_file():
            raise ModelLoadError(
                f"{path}: external data file '{tensor.location}' for initializer "
                f"'{value.name}' was not found next to the model; copy it to {data_path.parent}."
            )
        end = (tensor.offset or 0) + (tensor.length or 0)
        if tensor.length is not None and end > data_path.stat().st_size:
            raise ModelLoadError(
                f"{path}: external data file '{tensor.location}' is shorter than initializer "
                f"'{value.name}' needs ({end} bytes); the file is truncated, copy it again."
            )


def _check_text_fields(model: ir.Model, path: Path) -> None:
    """Protobuf lets invalid UTF-8 through in names; such a model cannot be written back."""

    def bad(text: object) -> bool:
        return text is not None and not isinstance(text, str)

    subgraphs = [
        attribute.value
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        for attribute in node.attributes.values()
        if isinstance(attribute.value, ir.Graph)
    ]
    graphs = [model.graph, *subgraphs]
    for graph in graphs:
        if bad(graph.name):
            raise ModelLoadError(f"{path}: the graph name is not valid UTF-8; the file is corrupt.")
        for value in [*graph.inputs, *graph.outputs, *graph.initializers.values()]:
            if bad(value.name):
                raise ModelLoadError(
                    f"{path}: a graph input/output/initializer name is not valid UTF-8; the file is corrupt."
                )
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if (
            any(bad(text) for text in (node.name, node.op_type, node.domain, node.doc_string))
            or any(bad(value.name) for value in [*node.inputs, *node.outputs] if value is not None)
            or any(bad(name) for name in node.attributes)
        ):
            raise ModelLoadError(
                f"{path}: node {node.name!r} has a name or type that is not valid UTF-8; the file is corrupt."
            )


def _check_structure(path: Path, proto: onnx.ModelProto) -> None:
    """The ONNX checker; by path, so it resolves external data beside the model (> 2 GB too).

    onnx refuses hard-linked data files, and onnxslim's scratch copies hard-link the weights
    while a pass runs: then the structure is checked on a copy whose external tensors are
    empty (the files themselves were checked by ``_check_external_data``).
    """
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        if "hard link" not in str(error):
            raise
        weightless = onnx.ModelProto()
        weightless.CopyFrom(proto)
        for tensor in weightless.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                del tensor.external_data[:], tensor.dims[:]
                tensor.data_location = onnx.TensorProto.DEFAULT
                tensor.dims.append(0)
        onnx.checker.check_model(weightless)


def load(path: str | os.PathLike, *, check: bool = True) -> ir.Model:
    """Loads an ONNX model; external weights stay on disk, memory-mapped on first use.

    Args:
        path: The ``.onnx`` file.
        check: Run the ONNX checker (structure only, weights are not read) and refuse an
            invalid graph here, before any pass sees it.

    Raises:
        ModelLoadError: the file is missing, not ONNX, corrupt, references missing
            external data, or has an IR/opset version this onnx cannot handle.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; check the path.")
    if not path.is_file():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX model file.")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError, OSError) as error:
        raise ModelLoadError(
            f"{path}: not a valid ONNX model (the protobuf could not be parsed: "
            f"{type(error).__name__}); the file is corrupt, truncated or of another format."
        ) from None
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelLoadError(
            f"{path}: not an ONNX model (no IR version or graph found); "
            "pass the .onnx file exported by your framework."
        )
    _check_versions(proto, path)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as error:  # deserialization of a syntactically valid but broken proto
        raise ModelLoadError(
            f"{path}: the ONNX graph is malformed ({error}); re-export the model."
        ) from None
    _check_text_fields(model, path)
    ir.external_data.set_base_dir(model.graph, str(path.parent.resolve()))
    _check_external_data(model, path)
    if check:
        try:
            _check_structure(path, proto)
        except Exception as error:  # ValidationError, or a decode error inside the checker
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise ModelLoadError(
                f"{path}: the ONNX checker rejects the model ({reason}); re-export or repair it."
            ) from None
    model.meta[_SOURCE_KEY] = str(path.resolve())
    return model


def source_path(model: ir.Model) -> Path | None:
    """The file a model was loaded from, if it was loaded with :func:`load`."""
    source = model.meta.get(_SOURCE_KEY)
    return Path(source) if source else None


def _initializer_bytes(model: ir.Model) -> int:
    total = 0
    for value in model.graph.initializers.values():
        if value.const_value is not None:
            total += value.const_value.nbytes
    return total


def _has_external_tensors(model: ir.Model) -> bool:
    return any(
        isinstance(value.const_value, ir.ExternalTensor)
        for value in model.graph.initializers.values()
    )


def _files_of(path: Path) -> list[Path]:
    """The model file and the external-data files it references (if it loads)."""
    files = [path]
    with contextlib.suppress(Exception):
        proto = onnx.load_model(str(path), load_external_data=False)
        locations = set()
        for tensor in proto.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        locations.add(entry.value)
        files += [path.parent / location for location in sorted(locations)]
    return files


def model_file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a model file plus its external-data files."""
    return sum(f.stat().st_size for f in _files_of(Path(path)) if f.is_file())


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on a folder (flock on its descriptor; no lock file is left)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; each rename on its own stays atomic
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    overwrite_input: bool = False,
    link_external_data: bool = False,
) -> Path:
    """Saves a model atomically: temp files in the target folder, then renamed into place.

    Args:
        model: The model to save.
        path: Destination ``.onnx`` path.
        external_data: Write initializers to ``<name>.data`` beside the model. ``None``
            decides: yes when the weights exceed 1 GiB or already live in external files.
        overwrite_input: Allow ``path`` to be the file the model was loaded from.
        link_external_data: Weights already in external files stay there: the files are
            hard-linked beside ``path`` (no copy, no read); only in-memory weights are
            written. For scratch copies handed to ORT; falls back to a copy where a link
            cannot be made (another filesystem) or would replace a different file.

    Returns:
        The resolved destination path.
    """
    path = Path(path)
    destination = path.resolve()
    loaded_from = source_path(model)
    if not overwrite_input and loaded_from is not None and loaded_from == destination:
        raise SlimError(
            f"{path}: refusing to overwrite the input model; choose another output path "
            "or pass overwrite_input=True."
        )
    if not destination.parent.is_dir():
        raise SlimError(
            f"{path}: the output folder {destination.parent} does not exist; create it first."
        )
    if external_data is None:
        external_data = _initializer_bytes(
            model
        ) > EXTERNAL_DATA_THRESHOLD_BYTES or _has_external_tensors(model)
    data_name = destination.name + ".data"
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        staged_model = staging / destination.name
        linked = None
        if link_external_data:
            linked = _save_linked(model, staged_model, data_name if external_data else None)
        if linked is not None:
            with _folder_lock(destination.parent):
                for name in linked:
                    _move_beside(staging / name, destination.parent / name)
                os.replace(staged_model, destination)
        elif external_data:
            written: list[ir.TensorProtocol] = []
            ir.save(
                model,
                staged_model,
                external_data=data_name,
                size_threshold_bytes=_INLINE_LIMIT_BYTES,
                alignment=EXTERNAL_DATA_ALIGNMENT,
                callback=lambda tensor, _: _release_previous(written, tensor),
            )
            _release_previous(written, None)
            # two renames: a concurrent save must not pair its model with our weights
            with _folder_lock(destination.parent):
                os.replace(staging / data_name, destination.parent / data_name)
                os.replace(staged_model, destination)
        else:
            ir.save(model, staged_model)
            os.replace(staged_model, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.debug("saved %s (external data: %s)", destination, external_data)
    return destination


def _external_files(model: ir.Model) -> set[tuple[Path, Path]] | None:
    """(base folder, relative location) of every external weight file; None if one escapes."""
    files = {
        (Path(tensor.base_dir), Path(tensor.location))
        for graph in model.graphs()
        for value in graph.initializers.values()
        if isinstance(tensor := value.const_value, ir.ExternalTensor)
    }
    if any(location.is_absolute() or ".." in location.parts for _, location in files):
        return None  # ORT refuses data paths outside the model's folder
    return files


def _save_linked(model: ir.Model, staged: Path, data_name: str | None) -> list[str] | None:
    """Writes ``staged`` with external weights hard-linked beside it and in-memory weights
    (when ``data_name``) appended to ``data_name``, tensor by tensor; the names to move, or None
    when a link cannot be made. ``model`` is left as it was."""
    files = _external_files(model)
    if files is None or data_name in {str(location) for _, location in files}:
        return None
    target_folder = staged.parent.parent  # the destination's folder (staging is inside it)
    try:
        for base, location in files:
            existing = target_folder / location
            if existing.exists() and not os.path.samefile(existing, base / location):
                return None  # a different file of that name is already there
            (staged.parent / location).parent.mkdir(parents=True, exist_ok=True)
            os.link(base / location, staged.parent / location)
    except OSError:
        return None
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        if data_name is not None:
            swapped = _spill_in_memory_tensors(model, staged.parent, data_name)
        ir.save(model, staged)
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
    names = sorted({str(location) for _, location in files})
    return names + ([data_name] if swapped and data_name is not None else [])


def _spill_in_memory_tensors(
    model: ir.Model, folder: Path, data_name: str
) -> list[tuple[ir.Value, ir.TensorProtocol]]:
    """Writes in-memory initializers to ``folder/data_name`` one at a time and points their
    values at the file; returns (value, original tensor) to put back."""
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    with open(folder / data_name, "wb") as file:
        for graph in model.graphs():
            for value in graph.initializers.values():
                tensor = value.const_value
                if tensor is None or isinstance(tensor, ir.ExternalTensor):
                    continue
                if tensor.nbytes <= _INLINE_LIMIT_BYTES or isinstance(tensor, ir.StringTensor):
                    continue
                offset = file.tell()
                if tensor.nbytes > 1 << 20:
                    offset = -(-offset // EXTERNAL_DATA_ALIGNMENT) * EXTERNAL_DATA_ALIGNMENT
                    file.seek(offset)
                file.write(tensor.tobytes())
                external = ir.ExternalTensor(
                    data_name,
                    offset,
                    tensor.nbytes,
                    tensor.dtype,
                    shape=ir.Shape(tensor.shape.numpy()),
                    name=tensor.name or value.name or "",
                    base_dir=str(folder),
                )
                swapped.append((value, tensor))
                value.const_value = external
    if not swapped:
        (folder / data_name).unlink()
    return swapped


def _release_previous(written: list[ir.TensorProtocol], tensor: ir.TensorProtocol | None) -> None:
    """Called before each tensor is written: the last one is on disk, so its memory map (whose
    pages would otherwise stay resident until the save ends) is closed; reopened on use."""
    if written and isinstance(written[0], ir.ExternalTensor):
        with contextlib.suppress(BufferError):  # an array still views it: it stays mapped
            written[0].release()
    written[:] = [tensor] if tensor is not None else []


def _move_beside(source: Path, target: Path) -> None:
    """Moves a staged file into place; a hard link of the very file already there is dropped."""
    if target.exists() and os.path.samefile(source, target):
        source.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


@contextlib.contextmanager
def temporary_model_file(
    model: ir.Model, directory: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Yields the path of a temporary copy of ``model`` on disk (ORT takes paths)."""
    with tempfile.TemporaryDirectory(prefix="onnxslim-", dir=directory) as tmp:
        target = Path(tmp) / "model.onnx"
        save(model, target, link_external_data=True)
        yield target
