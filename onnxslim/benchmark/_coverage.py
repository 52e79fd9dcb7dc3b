"""int8 coverage: the share of MACs that ORT executes in integer kernels after its graph optimization.

ORT fuses QuantizeLinear/DequantizeLinear around Conv/MatMul/Gemm into integer kernels only where a
provider has one (CPU: QLinearConv, QLinearMatMul, QGemm, ...). Elsewhere the QDQ model runs as
fake-quantization: float kernels on dequantized weights. We read the model ORT writes through
``optimized_model_filepath`` and attribute each MAC-bearing node's MACs to integer or float kernels.
The NCHWc layout transformer is left out of that session: it only re-blocks float convolutions
(padding channels to the SIMD width), so MACs stay those of the model's own channel counts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

import onnxslim
from onnxslim.inputs import DimSizes
from onnxslim.model import INTEGER_OPS, MAC_OPS, node_macs, observed_shapes, shape_lookup
from onnxslim.runtime import create_session

__all__ = ["Int8Coverage", "int8_coverage", "INTEGER_KERNELS", "FLOAT_KERNELS"]

logger = logging.getLogger(__name__)

# MAC-bearing kernels that multiply in integers, and those that multiply in float
INTEGER_KERNELS = MAC_OPS & INTEGER_OPS
# weight-only kernels (MatMulNBits, MatMulBnb4) dequantize the weights and multiply in float
# (see _is_integer_kernel)
FLOAT_KERNELS = MAC_OPS - INTEGER_OPS
# MatMulNBits with accuracy_level 4 quantizes A to int8 and multiplies in int8 (CPU kernel only)
_NBITS_INT8_ACCURACY_LEVEL = 4
_DEQUANTIZE_OPS = frozenset({"DequantizeLinear"})


@dataclasses.dataclass
class Int8Coverage:
    """MACs per kernel class of one model on one provider after ORT's graph optimization."""

    provider: str
    optimization_level: str
    integer_macs: int = 0
    float_macs: int = 0
    # float kernels reading a DequantizeLinear output: QDQ that ORT did not fuse
    fake_quant_macs: int = 0
    macs_per_kernel: dict[str, int] = dataclasses.field(default_factory=dict)
    qdq_nodes: int = 0
    uncounted_ops: list[str] = dataclasses.field(default_factory=list)
    note: str | None = None

    @property
    def total_macs(self) -> int:
        return self.integer_macs + self.float_macs

    @property
    def integer_share(self) -> float | None:
        return self.integer_macs / self.total_macs if self.total_macs else None

    @property
    def verdict(self) -> str:
        """int8 | mixed | fake-quant | float | unknown."""
        share = self.integer_share
        if share is None:
            return "unknown"
        if share >= 0.999:
            return "int8"
        if share > 0:
            return "mixed"
        if self.fake_quant_macs > 0 or self.qdq_nodes > 0:
            return "fake-quant"
        return "float"

    def describe(self) -> str:
        if self.integer_share is None:
            return f"unknown ({self.note})" if self.note else "unknown"
        return f"{100 * self.integer_share:.1f}% int8 ({self.verdict})"

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "optimization_level": self.optimization_level,
            "integer_macs": self.integer_macs,
            "float_macs": self.float_macs,
            "fake_quant_macs": self.fake_quant_macs,
            "total_macs": self.total_macs,
            "integer_share": self.integer_share,
            "verdict": self.verdict,
            "macs_per_kernel": dict(sorted(self.macs_per_kernel.items())),
            "qdq_nodes_left": self.qdq_nodes,
            "uncounted_ops": self.uncounted_ops,
            "note": self.note,
        }


def _is_integer_kernel(node: ir.Node, provider: str) -> bool:
    if node.op_type == "MatMulNBits":
        return (
            provider == "CPUExecutionProvider"
            and node.attributes.get_int("accuracy_level", 0) == _NBITS_INT8_ACCURACY_LEVEL
        )
    return node.op_type in INTEGER_KERNELS


def _counted(op: str) -> bool:
    return op in MAC_OPS


def _dequantized_values(model: ir.Model) -> set[str]:
    return {
        name
        for node in model.graph
        if node.op_type in _DEQUANTIZE_OPS and (name := node.outputs[0].name) is not None
    }


def _attribute_macs(
    coverage: Int8Coverage, optimized: ir.Model, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Adds each MAC-bearing node's MACs to the integer or float side of ``coverage``."""
    shape_of = shape_lookup(shapes)
    dequantized = _dequantized_values(optimized)
    uncounted = set()
    for node in optimized.graph:
        op = node.op_type
        if op in ("QuantizeLinear", "DequantizeLinear"):
            coverage.qdq_nodes += 1
        if not _counted(op):
            continue
        macs = node_macs(node, shape_of)
        if macs is None:
            uncounted.add(op)
            continue
        coverage.macs_per_kernel[op] = coverage.macs_per_kernel.get(op, 0) + macs
        if _is_integer_kernel(node, coverage.provider):
            coverage.integer_macs += macs
        else:
            coverage.float_macs += macs
            if any(v is not None and v.name in dequantized for v in node.inputs):
                coverage.fake_quant_macs += macs
    coverage.uncounted_ops = sorted(uncounted)


def int8_coverage(
    model: str | os.PathLike,
    provider: str = "cpu",
    *,
    optimization_level: str = "all",
    feeds: Mapping[str, np.ndarray] | None = None,
    sizes: DimSizes | None = None,
    provider_options: dict | None = None,
) -> Int8Coverage:
    """Share of MACs ``provider`` runs in integer kernels once ORT has optimized ``model``.

    Args:
        model: Path of the ONNX model.
        provider: Short or full ORT provider name.
        optimization_level: ORT graph optimization level (``disable|basic|extended|all``).
        feeds: Inputs used to resolve shapes ORT leaves symbolic; generated from the input
            shapes (and ``sizes``) when omitted.
        sizes: Sizes for symbolic dims, as for :func:`onnxslim.resolve_shape`.
        provider_options: ORT options for the provider.
    """
    (provider_name,) = onnxslim.resolve_providers([provider])
    coverage = Int8Coverage(provider=provider_name, optimization_level=optimization_level)
    if feeds is None:
        feeds = onnxslim.random_inputs(onnxslim.load(model), sizes)
    providers = [provider_name]
    options_list = [provider_options] if provider_options else None
    with tempfile.TemporaryDirectory(prefix="onnxslim-coverage-") as tmp:
        workdir = Path(tmp)
        optimized_path = workdir / "optimized.onnx"
        options = onnxslim.session_options(
            allow_spinning=False,
            optimization_level=optimization_level,
            optimized_model_path=optimized_path,
            # big models: keep ORT's written model under the 2 GiB protobuf limit
            optimized_external_data="optimized.onnx.data",
            optimized_external_min_bytes=1 << 20,
        )
        try:
            # the one session factory: it checks the provider came up (ProviderError if not)
            create_session(
                model,
                providers,
                options,
                options_list,
                disabled_optimizers=["NchwcTransformer"],
            )
        except ort.capi.onnxruntime_pybind11_state.Fail as error:
            if "compiled nodes" not in str(error):
                raise
        if not optimized_path.exists():
            coverage.note = (
                f"{provider_name} compiles the graph; ORT cannot write the optimized model"
            )
            return coverage
        optimized = ir.load(str(optimized_path))
        # the feeds' shapes; everything ORT's written model states comes from shape_lookup's
        # one static-shape rule (declared shape, else the constant's)
        shapes: dict[str, tuple[int, ...]] = {
            name: tuple(array.shape) for name, array in feeds.items()
        }
        shape_of = shape_lookup(shapes)
        mac_nodes = [node for node in optimized.graph if _counted(node.op_type)]
        if any(node_macs(node, shape_of) is None for node in mac_nodes):
            # values ORT's written model leaves untyped: one run with them exposed as outputs
            missing = sorted(
                {
                    v.name
                    for node in mac_nodes
                    for v in [*node.inputs, *node.outputs]
                    if v is not None and v.name and shape_of(v) is None
                }
            )
            observed = observed_shapes(
                optimized, feeds, missing, providers=providers, provider_options=options_list
            )
            shapes.update({name: observed[name] for name in missing if name in observed})
        _attribute_macs(coverage, optimized, shapes)
    logger.debug("int8 coverage of %s on %s: %s", model, provider_name, coverage.describe())
    return coverage
