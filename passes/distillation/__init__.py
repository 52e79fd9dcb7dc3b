"""Knowledge distillation: an ONNX Runtime teacher fine-tunes a torch student that is written back.

Importing this package does not import torch; running the pass without torch says how to install it.
"""

from onnxslim.passes.distillation._distill import Distill

__all__ = ["Distill"]
