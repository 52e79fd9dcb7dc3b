"""Moved to :mod:`onnxslim.inputs` (one reader protocol for every pass)."""

# shim: removed in wave 2
from onnxslim.inputs._base import BatchedReader as CalibrationReader
from onnxslim.inputs._base import validate_feeds
from onnxslim.inputs._images import IMAGE_SUFFIXES, ImageFolderReader, ImagePreprocessing
from onnxslim.inputs._open import open_reader
from onnxslim.inputs._readers import IterableReader, NpyFolderReader, NpzReader, RandomReader

__all__ = [
    "CalibrationReader",
    "NpzReader",
    "NpyFolderReader",
    "ImageFolderReader",
    "ImagePreprocessing",
    "IterableReader",
    "RandomReader",
    "open_reader",
    "validate_feeds",
    "IMAGE_SUFFIXES",
]
