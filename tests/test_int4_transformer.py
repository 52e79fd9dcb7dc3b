"""QuantizeWeightsInt4 on a BERT-style encoder (random weights): what ships is the fast kind.

Issue #17: MiniLM int4 fell from 1.7x to 1.24x over fp32 because blocks of 32 (and any MatMul
left float, or an 8-bit fallback off ORT's int8-activation kernel: accuracy_level 4) run slower.
These tests pin the shape of the shipped graph; speed itself is measured in
``benchmarks/quant_vs_peers.py --models minilm --tools ours-int4``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper

import onnxslim
from onnxslim import PassContext
from onnxslim.passes.quantization import QuantizeWeightsInt4
from onnxslim.passes.quantization._int4 import mean_cosine

torch = pytest.importorskip("torch")

from onnxslim.testing import bert_style_encoder, export_torch  # noqa: E402

LAYERS, HIDDEN, INTERMEDIATE, SEQUENCE = 2, 128, 512, 12
WEIGHT_MATMULS = 6 * LAYERS  # q, k, v, out, mlp_in, mlp_out
ACTIVATION_MATMULS = 2 * LAYERS  # q @ k^T, softmax @ v


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    module = bert_style_encoder(
        vocab_size=100, hidden=HIDDEN, heads=4, layers=LAYERS, intermediate=INTERMEDIATE
    )
    ids = torch.randint(0, 100, (1, SEQUENCE))
    mask = torch.ones(1, SEQUENCE, dtype=torch.int64)
    path = export_torch(
        module,
        (ids, mask),
        tmp_path_factory.mktemp("bert") / "bert.onnx",
        input_names=["input_ids", "attention_mask"],
    )
    rng = np.random.default_rng(0)
    feeds = [
        {
            "input_ids": rng.integers(0, 100, (1, SEQUENCE)).astype(np.int64),
            "attention_mask": np.ones((1, SEQUENCE), np.int64),
        }
        for _ in range(4)
    ]
    return path, feeds


def _nbits(proto: onnx.ModelProto) -> list[dict]:
    return [
        {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for node in proto.graph.node
        if node.op_type == "MatMulNBits"
    ]


def _outputs(proto: onnx.ModelProto, feeds: list[dict]) -> list[dict]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f))) for f in feeds]


def test_every_weight_matmul_ships_as_4bit_blocks_of_128_on_int8_activations(encoder):
    path, feeds = encoder
    model = onnxslim.load(path)
    reference = _outputs(ir.to_proto(model), feeds)
    result = QuantizeWeightsInt4(latency_guard=False, accuracy_guard=False).apply(
        model, PassContext(sample_inputs=feeds)
    )
    assert result.modified
    proto = ir.to_proto(model)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["MatMulNBits"] == WEIGHT_MATMULS == result.summary["matmuls_converted"]
    assert ops["MatMul"] == ACTIVATION_MATMULS  # attention only: no weight left in float
    assert len(result.summary["matmuls_skipped"]) == ACTIVATION_MATMULS
    attributes = _nbits(proto)
    assert {(a["bits"], a["block_size"], a["accuracy_level"]) for a in attributes} == {(4, 128, 4)}
    assert sorted({(a["K"], a["N"]) for a in attributes}) == [
        (HIDDEN, HIDDEN),
        (HIDDEN, INTERMEDIATE),
        (INTERMEDIATE, HIDDEN),
    ]
    assert mean_cosine(reference, _outputs(proto, feeds)) > 0.9  # ORT runs what was emitted


def test_8bit_fallback_keeps_the_int8_activation_kernel(encoder):
    # a bound 4-bit cannot meet: the fallback promotes MatMuls to 8-bit until it holds
    path, feeds = encoder
    model = onnxslim.load(path)
    result = QuantizeWeightsInt4(latency_guard=False, min_cosine=0.99999).apply(
        model, PassContext(sample_inputs=feeds)
    )
    eight = result.summary.get("matmuls_8bit", [])
    assert result.modified and eight, result.summary.get("fallback")
    proto = ir.to_proto(model)
    attributes = _nbits(proto)
    assert len(attributes) == WEIGHT_MATMULS  # promoted, never left in float
    assert sum(a["bits"] == 8 for a in attributes) == len(eight)
    assert {(a["block_size"], a["accuracy_level"]) for a in attributes if a["bits"] == 8} == {
        (128, 4)
    }
    assert result.summary["fidelity"]["mean_cosine"] >= 0.99999
