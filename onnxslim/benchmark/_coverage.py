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
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxslim
from onnxslim._inputs import DimSizes

__all__ = ["Int8Coverage", "int8_coverage", "INTEGER_KERNELS", "FLOAT_KERNELS"]

logger = logging.getLogger(__name__)

# op type -> index of the weight (or B) input; MACs = output elements x reduction size.
_CONV_WEIGHT = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3, "NhwcFusedConv": 1}
_CONV_TRANSPOSE_WEIGHT = {"ConvTranspose": 1, "QLinearConvTranspose": 3}
# op type -> index of the A input; reduction size is A's last dim (or second to last when transA).
_MATMUL_A = {
    "MatMul": 0,
    "FusedMatMul": 0,
    "Gemm": 0,
    "FusedGemm": 0,
    "MatMulInteger": 0,
    "QLinearMatMul": 0,
    "DynamicQuantizeMatMul": 0,
    "MatMulIntegerToFloat": 0,
    "QGemm": 0,
    "MatMulNBits": 0,
    "MatMulBnb4": 0,
}
INTEGER_KERNELS = frozenset(
    {
        "ConvInteger",
        "QLinearConv",
        "QLinearConvTranspose",
        "MatMulInteger",
        "QLinearMatMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QGemm",
    }
)
FLOAT_KERNELS = frozenset(
    {
        "Conv",
        "FusedConv",
        "NhwcFusedConv",
        "ConvTranspose",
        "MatMul",
        "FusedMatMul",
        "Gemm",
        "FusedGemm",
    }
    # weight-only kernels dequantize the weights and multiply in float (see _is_integer_kernel)
    | {"MatMulNBits", "MatMulBnb4"}
)
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


def _shape_of(value_info: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    if not value_info.type.HasField("tensor_type") or not value_info.type.tensor_type.HasField(
        "shape"
    ):
        return None
    dims = value_info.type.tensor_type.shape.dim
    if any(not dim.HasField("dim_value") for dim in dims):
        return None
    return tuple(dim.dim_value for dim in dims)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """MACs of one node from its input/output shapes; None when a shape is unknown."""
    op = node.op_type
    output = shapes.get(node.output[0]) if node.output else None
    if output is None:
        return None
    if op in _CONV_WEIGHT:
        weight = shapes.get(node.input[_CONV_WEIGHT[op]])
        if weight is None:
            return None
        # weight [M, C/group, k...]: each output element reduces over C/group x kernel
        return math.prod(output) * math.prod(weight[1:])
    if op in _CONV_TRANSPOSE_WEIGHT:
        weight = shapes.get(node.input[_CONV_TRANSPOSE_WEIGHT[op]])
        data = shapes.get(node.input[0])
        if weight is None or data is None:
            return None
        # weight [C, M/group, k...]: each input element scatters into M/group x kernel outputs
        return math.prod(data) * math.prod(weight[1:])
    if op in _MATMUL_A:
        a = shapes.get(node.input[_MATMUL_A[op]])
        if a is None:
            return None
        if len(a) == 1:
            reduction = a[0]
        else:
            transposed = _attribute(node, "transA", 0)
            reduction = a[-2] if transposed else a[-1]
        return math.prod(output) * reduction
    return None


def _is_integer_kernel(node: onnx.NodeProto, provider: str) -> bool:
    if node.op_type == "MatMulNBits":
        return (
            provider == "CPUExecutionProvider"
            and _attribute(node, "accuracy_level", 0) == _NBITS_INT8_ACCURACY_LEVEL
        )
    return node.op_type in INTEGER_KERNELS


def _counted(op: str) -> bool:
    return op in INTEGER_KERNELS or op in FLOAT_KERNELS


def _shape_table(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for initializer in model.graph.initializer:
        shapes[initializer.name] = tuple(initializer.dims)
    for value_info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shape = _shape_of(value_info)
        if shape is not None:
            shapes.setdefault(value_info.name, shape)
    return shapes


def _probe_shapes(
    optimized_path: Path,
    missing: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    providers: Sequence[str],
    provider_options: Sequence[dict] | None,
    workdir: Path,
) -> dict[str, tuple[int, ...]]:
    """Shapes of values ORT's written model leaves untyped: expose them as outputs and run once."""
    model = onnx.load_model(str(optimized_path))
    known_outputs = {output.name for output in model.graph.output}
    for name in missing:
        if name not in known_outputs:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    probe_path = workdir / "probe.onnx"
    onnx.save_model(
        model,
        str(probe_path),
        save_as_external_data=True,
        location="probe.onnx.data",
        size_threshold=1024,
    )
    options = onnxslim.session_options(allow_spinning=False, optimization_level="disable")
    session = onnxslim.create_session(probe_path, providers, options, provider_options)
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, dict(feeds))
    return {name: tuple(result.shape) for name, result in zip(names, results) if name in missing}


def _dequantized_values(model: onnx.ModelProto) -> set[str]:
    return {node.output[0] for node in model.graph.node if node.op_type in _DEQUANTIZE_OPS}


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
        )
        # big models: keep ORT's written model under the 2 GiB protobuf limit
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimized.onnx.data"
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1048576"
        )
        try:
            session = ort.InferenceSession(
                str(model),
                options,
                providers=providers,
                provider_options=options_list,
                disabled_optimizers=["NchwcTransformer"],
            )
        except ort.capi.onnxruntime_pybind11_state.Fail as error:
            if "compiled nodes" not in str(error):
                raise
        else:
            if provider_name not in session.get_providers():
                raise onnxslim.ProviderError(
                    f"execution provider {provider_name} failed to initialise for {model}; "
                    "check the driver/library installation."
                )
        if not optimized_path.exists():
            coverage.note = (
                f"{provider_name} compiles the graph; ORT cannot write the optimized model"
            )
            return coverage
        optimized = onnx.load_model(str(optimized_path), load_external_data=False)
        shapes = _shape_table(optimized)
        for name, array in feeds.items():
            shapes[name] = tuple(array.shape)
        mac_nodes = [node for node in optimized.graph.node if _counted(node.op_type)]
        if any(_node_macs(node, shapes) is None for node in mac_nodes):
            missing = sorted(
                {
                    name
                    for node in mac_nodes
                    for name in [*node.input, *node.output]
                    if name and name not in shapes
                }
            )
            shapes.update(
                _probe_shapes(optimized_path, missing, feeds, providers, options_list, workdir)
            )
    dequantized = _dequantized_values(optimized)
    uncounted = set()
    for node in optimized.graph.node:
        op = node.op_type
        if op in ("QuantizeLinear", "DequantizeLinear"):
            coverage.qdq_nodes += 1
        if not _counted(op):
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            uncounted.add(op)
            continue
        coverage.macs_per_kernel[op] = coverage.macs_per_kernel.get(op, 0) + macs
        if _is_integer_kernel(node, provider_name):
            coverage.integer_macs += macs
        else:
            coverage.float_macs += macs
            if any(name in dequantized for name in node.input):
                coverage.fake_quant_macs += macs
    coverage.uncounted_ops = sorted(uncounted)
    logger.debug("int8 coverage of %s on %s: %s", model, provider_name, coverage.describe())
    return coverage
