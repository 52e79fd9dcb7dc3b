"""Quantizing does not pay for libraries it does not use: importing onnxslim, the quantization
pass and the CLI loads none of torch, onnxscript, transformers, PIL or tqdm (each is imported
where it is used; onnxscript, for instance, when the pass folds constants)."""

from __future__ import annotations

import json
import subprocess
import sys

# Heavy libraries the import of the quantization path used to load, or could load by accident.
NOT_AT_IMPORT = ("torch", "onnxscript", "transformers", "PIL", "tqdm", "sklearn", "scipy")

_PROBE = """
import json, sys
import onnxslim
from onnxslim.passes.quantization import QuantizeStatic
import onnxslim.cli
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _loaded_after_import() -> set[str]:
    # a fresh interpreter: this test process has loaded torch and onnxscript long ago
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    )
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


def test_quantization_import_loads_no_unused_heavy_library():
    loaded = _loaded_after_import()
    assert "onnxslim" in loaded and "onnxruntime" in loaded  # the probe did import the pass
    assert sorted(set(NOT_AT_IMPORT) & loaded) == []


def test_onnxscript_is_loaded_when_the_pass_folds_constants(tmp_path):
    """The lazy import is the one the pass needs: prepare() folds with onnxscript."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["w"], ["w2"], name="id"),
            helper.make_node("MatMul", ["x", "w2"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    script = f"""
import sys
from pathlib import Path
import onnxslim
from onnxslim.passes.quantization._prepare import prepare
before = "onnxscript" in sys.modules
prepared = prepare(onnxslim.load({str(path)!r}), Path({str(tmp_path)!r}))
ops = [n.op_type for n in prepared.proto.graph.node]
print(before, "onnxscript" in sys.modules, ops)
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    # folded: the Identity of an initializer is gone, the MatMul reads the weight directly
    assert completed.stdout.strip().splitlines()[-1] == "False True ['MatMul']"
