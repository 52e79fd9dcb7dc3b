"""User data, one door: input specs, sample readers for every pass, size arguments.

``open_samples(source, model)`` turns what the user gave (an ``.npz`` of samples stacked on the
batch axis, folders of ``.npy``/``.npz``/images, iterables, DataLoaders, ``random[:N]``, whole
feed dicts) into a :class:`SampleReader`; ``samples`` and ``benchmark_feeds`` take feeds from it.
``augmentation`` / ``augment_feeds``: seeded image, audio and text augmentation of those feeds.
"""

from onnxslim.inputs._augment import (
    AUGMENTATIONS,
    AudioAugment,
    Augment,
    ImageAugment,
    TextAugment,
    augment_feeds,
    augmentation,
)
from onnxslim.inputs._base import (
    BatchAxes,
    BatchedReader,
    Feeds,
    SampleReader,
    samples_in,
    validate_feeds,
)
from onnxslim.inputs._defaults import DIM_LADDERS, DefaultSizeError, runnable_sizes
from onnxslim.inputs._images import IMAGE_SUFFIXES, ImageFolderReader, ImagePreprocessing
from onnxslim.inputs._open import benchmark_feeds, open_reader, open_samples, samples
from onnxslim.inputs._readers import (
    FeedsReader,
    ItemsReader,
    IterableReader,
    NpyFolderReader,
    NpzReader,
    RandomReader,
    to_numpy,
)
from onnxslim.inputs._sizes import SizeArgumentError, parse_size_argument
from onnxslim.inputs._specs import (
    DimSizes,
    InputSpec,
    fixed_batch,
    input_specs,
    random_inputs,
    resolve_shape,
)

__all__ = [
    "AUGMENTATIONS",
    "Augment",
    "AudioAugment",
    "ImageAugment",
    "TextAugment",
    "augment_feeds",
    "augmentation",
    "DIM_LADDERS",
    "DefaultSizeError",
    "IMAGE_SUFFIXES",
    "BatchAxes",
    "BatchedReader",
    "DimSizes",
    "Feeds",
    "FeedsReader",
    "ImageFolderReader",
    "ImagePreprocessing",
    "InputSpec",
    "ItemsReader",
    "IterableReader",
    "NpyFolderReader",
    "NpzReader",
    "RandomReader",
    "SampleReader",
    "SizeArgumentError",
    "benchmark_feeds",
    "fixed_batch",
    "input_specs",
    "open_reader",
    "open_samples",
    "parse_size_argument",
    "random_inputs",
    "resolve_shape",
    "runnable_sizes",
    "samples",
    "samples_in",
    "to_numpy",
    "validate_feeds",
]
