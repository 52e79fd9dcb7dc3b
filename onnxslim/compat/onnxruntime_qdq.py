"""ORT's ``QDQQuantizer`` with its repeated scans indexed, and its weight work kept across runs.

ORT's quantizer looks initializers up by scanning every initializer (``find_by_name``,
``get_initializer``, ``add_initializer``), rewires a quantized tensor's consumers by scanning
every node (``replace_input_of_all_nodes``), and recomputes every weight's scales and int8 copy
on each run. Here the lookups go through a name index kept in step with the initializer list,
the rewiring through a consumer index, and a :class:`WeightCache` shared by the candidates of
one pass returns the scales and quantized weights of a weight seen before (same bytes, same
settings). The emitted model is byte for byte ORT's (``tests/test_quant_emit_index.py``).

ORT's modules call ``find_by_name`` and ``quantize_onnx_initializer`` as module globals: while
:meth:`IndexedQDQQuantizer.quantize_model` runs, those two names in ORT's quantizer modules are
bound to versions that use the index and the cache for this quantizer's model and fall back to
ORT's own function for anything else (one quantizer at a time: a lock).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import threading
import types
from collections.abc import Iterator, Mapping
from typing import Any

import onnx
from onnxruntime.quantization import base_quantizer, qdq_quantizer, quant_utils
from onnxruntime.quantization.onnx_model import ONNXModel
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

__all__ = ["IndexedQDQQuantizer", "WeightCache", "weight_digest"]

_ORT_FIND_BY_NAME = quant_utils.find_by_name
_ORT_QUANTIZE_INITIALIZER = quant_utils.quantize_onnx_initializer
_PATCH_LOCK = threading.Lock()


def weight_digest(tensor: onnx.TensorProto) -> bytes:
    """The digest a :class:`WeightCache` keys a weight's results by (its serialized bytes)."""
    return hashlib.blake2b(tensor.SerializeToString(deterministic=True), digest_size=16).digest()


class WeightCache:
    """Scales and quantized copies of weights, shared by the emissions of one prepared model.

    Keys hold the weight's bytes digest and every setting the result depends on, so a weight
    that differs (another model, a segment's copy with other bytes) is never served a stale
    result. Hits are copies: ORT edits the scales it gets (int32 bias adjustment).
    """

    def __init__(self, quantized_weights: bool = True, max_quantized_bytes: int = 64 << 20) -> None:
        """``quantized_weights``: keep the int8 copies too (a quarter of the float weights), up
        to ``max_quantized_bytes`` of them (later ones are quantized again by each candidate)."""
        self.quantized_weights = quantized_weights
        self.max_quantized_bytes = max_quantized_bytes
        self.quantized_bytes = 0
        self.params: dict[tuple, Any] = {}
        self.quantized: dict[tuple, onnx.TensorProto] = {}
        self.hits = 0
        self.misses = 0
        self._digests: dict[int, tuple[onnx.TensorProto, bytes]] = {}

    def digest(self, tensor: onnx.TensorProto) -> bytes:
        """The weight's digest, computed once per tensor object of a run."""
        held = self._digests.get(id(tensor))
        if held is None or held[0] is not tensor:
            held = (tensor, weight_digest(tensor))
            self._digests[id(tensor)] = held
        return held[1]

    def remember(self, tensor: onnx.TensorProto, digest: bytes) -> None:
        """Records ``digest`` as ``tensor``'s (its bytes hashed earlier: a fresh copy read from
        the same file holds the same bytes), so this run does not hash it again."""
        self._digests[id(tensor)] = (tensor, digest)

    def forget_tensors(self) -> None:
        """Drops the per-run digests (they pin that run's weights); results stay."""
        self._digests.clear()


class _IndexedModel(ONNXModel):
    """ORT's ONNXModel with initializer lookups by name and consumer rewiring by index."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__(model)
        self._by_name: dict[str, onnx.TensorProto] = {}
        self._indexed = 0  # initializers indexed so far (the list only grows between rebuilds)
        self._shadowed = False  # whether a name was seen twice
        self._consumers: dict[str, list[onnx.NodeProto]] | None = None
        # bumped by every node edit made through this class; input_name_to_nodes is kept
        # for one version (ORT calls it per tensor while it walks the unchanged graph)
        self._version = 0
        # read-only (a caller that would edit it fails loudly instead of staling the copy)
        self._readers: tuple[int, int, Mapping[str, tuple[onnx.NodeProto, ...]]] | None = None

    # --- initializers ---------------------------------------------------------------------
    def _sync(self) -> None:
        tensors = self.model.graph.initializer
        count = len(tensors)
        if count == self._indexed:
            return
        if count < self._indexed:
            self._invalidate_initializers()
        for index in range(self._indexed, count):
            tensor = tensors[index]
            if tensor.name in self._by_name:
                self._shadowed = True  # a second of a name: only the first is found, as a scan
            else:
                self._by_name[tensor.name] = tensor
        self._indexed = count

    def _invalidate_initializers(self) -> None:
        self._by_name.clear()
        self._indexed = 0
        self._shadowed = False

    def find_initializer(self, name: str) -> onnx.TensorProto | None:
        self._sync()
        tensor = self._by_name.get(name)
        if tensor is not None and tensor.name != name:  # renamed in place: index again
            self._invalidate_initializers()
            self._sync()
            tensor = self._by_name.get(name)
        return tensor

    def get_initializer(self, name):
        return self.find_initializer(name)

    def add_initializer(self, tensor):
        if self.find_initializer(tensor.name) is None:
            self._check_init(tensor)
            self.model.graph.initializer.extend([tensor])

    def initializer_extend(self, inits):
        if len(inits) == 0:
            raise ValueError("Can add an empty list.")
        # ORT re-checks every existing initializer here; they were checked when they came in
        for init in inits:
            self._check_init(init)
            self.model.graph.initializer.append(init)

    def remove_initializer(self, tensor):
        self._sync()
        before = len(self.model.graph.initializer)
        super().remove_initializer(tensor)
        if self._shadowed or len(self.model.graph.initializer) != before - 1:
            self._invalidate_initializers()  # a shadowed one may surface: index again
        elif self._by_name.get(tensor.name) == tensor:
            del self._by_name[tensor.name]
            self._indexed -= 1
        else:
            self._invalidate_initializers()

    def clean_initializers(self):
        try:
            return super().clean_initializers()
        finally:
            self._invalidate_initializers()

    # --- consumers ------------------------------------------------------------------------
    def _consumer_index(self) -> dict[str, list[onnx.NodeProto]]:
        if self._consumers is None:
            consumers: dict[str, list[onnx.NodeProto]] = {}
            for node in self.model.graph.node:
                for name in dict.fromkeys(node.input):
                    if name:
                        consumers.setdefault(name, []).append(node)
            self._consumers = consumers
        return self._consumers

    def input_name_to_nodes(self):
        count = len(self.model.graph.node)
        held = self._readers
        if held is None or held[0] != self._version or held[1] != count:
            readers = {name: tuple(nodes) for name, nodes in super().input_name_to_nodes().items()}
            held = (self._version, count, types.MappingProxyType(readers))
            self._readers = held
        return held[2]

    def _index_inputs(self, node: onnx.NodeProto) -> None:
        if self._consumers is not None:
            for name in dict.fromkeys(node.input):
                if name:
                    self._consumers.setdefault(name, []).append(node)

    def add_node(self, node):
        self._version += 1
        super().add_node(node)
        self._index_inputs(self.model.graph.node[-1])

    def add_nodes(self, nodes_to_add):
        for node in nodes_to_add:
            self.add_node(node)

    def remove_node(self, node):
        self._version += 1
        super().remove_node(node)
        self._consumers = None

    def replace_node_input(self, node, old_input_name, new_input_name):  # type: ignore[override]
        self._version += 1
        ONNXModel.replace_node_input(node, old_input_name, new_input_name)
        if self._consumers is not None and old_input_name != new_input_name:
            if new_input_name in node.input:
                self._consumers.setdefault(new_input_name, []).append(node)

    def replace_input_of_all_nodes(self, old_input_name, new_input_name):
        self._version += 1
        consumers = self._consumer_index()
        # the index holds every node that read the name (a superset after rewiring): graph
        # order, as ORT's scan, and only nodes that still read it are touched
        nodes = consumers.pop(old_input_name, [])
        moved = [node for node in nodes if old_input_name in node.input]
        for node in moved:
            ONNXModel.replace_node_input(node, old_input_name, new_input_name)
        if moved and old_input_name != new_input_name:
            consumers.setdefault(new_input_name, []).extend(moved)

    def replace_input_of_nodes(self, old_input_name, new_input_name, node_names_set):
        self._version += 1
        super().replace_input_of_nodes(old_input_name, new_input_name, node_names_set)
        self._consumers = None


class IndexedQDQQuantizer(QDQQuantizer):
    """``QDQQuantizer`` on an indexed model, with an optional :class:`WeightCache`."""

    def __init__(self, *args: Any, weight_cache: WeightCache | None = None, **kwargs: Any):
        self.weight_cache = weight_cache
        with self._indexed_globals():  # ORT computes the activations' parameters here
            super().__init__(*args, **kwargs)

    # ORT assigns ``self.model = ONNXModel(proto)``: every model it is given is indexed
    @property  # type: ignore[override]
    def model(self) -> _IndexedModel:
        return self._indexed_model

    @model.setter
    def model(self, value: ONNXModel) -> None:
        self._indexed_model = (
            value if isinstance(value, _IndexedModel) else _IndexedModel(value.model)
        )

    def _settings_key(self) -> tuple:
        return (
            self.weight_qType,
            self.activation_qType,
            self.reduce_range,
            self.is_weight_symmetric(self.weight_qType),
            self.is_weight_symmetric(self.activation_qType),
            self.is_activation_symmetric,
            self.min_real_range,
            self.block_size,
        )

    def _calc_initializer_quant_params(self):
        cache = self.weight_cache
        if cache is None:
            return super()._calc_initializer_quant_params()
        settings = self._settings_key()
        keys: dict[str, tuple] = {}
        for name, info in self.tensors_to_quantize.items():
            tensor = self.model.find_initializer(name)
            if tensor is None or name in self.tensor_quant_overrides:
                continue
            digest = cache.digest(tensor)
            keys[name] = (name, digest, info.tensor_type, info.axis, settings)
        missing = {
            name: info
            for name, info in self.tensors_to_quantize.items()
            if name not in keys or keys[name] not in cache.params
        }
        everything = self.tensors_to_quantize
        try:
            self.tensors_to_quantize = missing
            computed = super()._calc_initializer_quant_params()
        finally:
            self.tensors_to_quantize = everything
        params = {}
        for name in everything:  # ORT's order
            if name in computed:
                params[name] = computed[name]
                if name in keys:
                    cache.params[keys[name]] = copy.deepcopy(computed[name])
                    cache.misses += 1
            elif name in keys and keys[name] in cache.params:
                params[name] = copy.deepcopy(cache.params[keys[name]])
                cache.hits += 1
        return params

    def _find_by_name(self, item_name, item_list):
        model = getattr(self, "_indexed_model", None)
        if model is not None and item_list is model.model.graph.initializer:
            return model.find_initializer(item_name)
        return _ORT_FIND_BY_NAME(item_name, item_list)

    def _quantize_initializer(
        self, weight, quant_type, zero_point, scale, axis=None, quant_weight_name=None, block_size=0
    ):
        cache = self.weight_cache
        if cache is None or not cache.quantized_weights:
            return _ORT_QUANTIZE_INITIALIZER(
                weight, quant_type, zero_point, scale, axis, quant_weight_name, block_size
            )
        key = (
            weight.name,
            cache.digest(weight),
            quant_type,
            zero_point.dtype.str,
            zero_point.shape,
            zero_point.tobytes(),
            scale.dtype.str,
            scale.shape,
            scale.tobytes(),
            axis,
            quant_weight_name,
            block_size,
        )
        held = cache.quantized.get(key)
        if held is None:
            held = _ORT_QUANTIZE_INITIALIZER(
                weight, quant_type, zero_point, scale, axis, quant_weight_name, block_size
            )
            size = held.ByteSize()
            if cache.quantized_bytes + size <= cache.max_quantized_bytes:
                cache.quantized[key] = held
                cache.quantized_bytes += size
        result = onnx.TensorProto()
        result.CopyFrom(held)
        return result

    @contextlib.contextmanager
    def _indexed_globals(self) -> Iterator[None]:
        bound = [
            (module, name, getattr(module, name))
            for module in (qdq_quantizer, base_quantizer)
            for name in ("find_by_name", "quantize_onnx_initializer")
            if hasattr(module, name)
        ]
        with _PATCH_LOCK:
            for module, name, _ in bound:
                replacement = (
                    self._find_by_name if name == "find_by_name" else self._quantize_initializer
                )
                setattr(module, name, replacement)
            try:
                yield
            finally:
                for module, name, original in bound:
                    setattr(module, name, original)

    def quantize_model(self):
        try:
            with self._indexed_globals():
                return super().quantize_model()
        finally:
            if self.weight_cache is not None:
                self.weight_cache.forget_tensors()
