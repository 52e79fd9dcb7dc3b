"""Upstream names that are private or unstable, one module per upstream, each tested by import.

Everything else in onnxslim uses the upstreams' public API; when an upstream renames one of
these, its module here (and its test) is the one place to change.
"""
