"""ONNX Runtime's private names outside quantization: symbolic shape inference's steps."""

from __future__ import annotations

import onnx

__all__ = ["symbolic_shape_inference"]


def symbolic_shape_inference(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """ORT's symbolic shape inference, keeping partial results; None below opset 7.

    Its public ``infer_shapes`` raises on an incomplete result and first writes
    ``sym_shape_infer_temp.onnx`` into the working directory; these are the same steps without that.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    opset = get_opset(proto)
    if not opset or opset < 7:
        return None
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)
    inference._preprocess(proto)
    while inference.run_:
        inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_
