"""ONNX Runtime on this machine: sessions, interleaved timing, CPU features."""
