"""Sentence encoders: sentence-transformers (torch) fed by hnmine.retrievers.torch_feed, or ONNX Runtime."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hnmine.device import TORCH_DTYPES, default_device, resolve_precision
from hnmine.errors import HnmineError
from hnmine.packaged.resolve import resolve_model
from hnmine.retrievers.torch_feed import PrefetchTorchEncoder, embedding_dimension


def _folder_stamp(path: str) -> tuple:
    """Each file's name, size and modification time in a model folder (empty for a hub name): part
    of the load caches' keys, so a model saved again in place (a fine-tune in the same process)
    is loaded again instead of served from the cache."""
    folder = Path(path)
    if not folder.is_dir():
        return ()
    return tuple(sorted((str(f.relative_to(folder)), st.st_size, st.st_mtime_ns)
                        for f in folder.rglob("*") if f.is_file() for st in [f.stat()]))


@functools.lru_cache(maxsize=2)
def _load_model(path: str, device: str, max_length: int | None, precision: str = "fp32", stamp: tuple = ()):
    """Loaded once per process (per folder stamp): mine, tests and notebooks call the same model many times."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device=device)  # sentence-transformers 6.0 takes no Path
    except OSError as exc:
        raise HnmineError(f"cannot load model '{path}' ({str(exc).splitlines()[0]})",
                          fix="pass a local model folder, or a hub name reachable from here") from None
    # Cast explicitly: a folder saved in fp16 would otherwise load as fp16 on a CPU too.
    model.to(getattr(torch, TORCH_DTYPES[precision]))
    if max_length:
        model.max_seq_length = max_length
    return model


class Encoder:
    """A sentence-transformers model with the prompts and length limit of one index.

    backend "auto" picks ONNX Runtime on CPU when the model is a local Transformer + Pooling
    folder (the same numbers as torch to ~1e-7, faster on CPU), and torch everywhere else.
    """

    def __init__(self, model: str, device: str | None = None, max_length: int | None = None, batch_size: int = 32,
                 normalize: bool = True, backend: str = "auto", precision: str = "auto", batch_tokens: int | None = None):
        path = resolve_model(model)
        device = device or default_device()
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.backend = resolve_backend(backend, path, device, self.precision)
        self.batch_size = batch_size
        self.normalize = normalize
        self.model = self.onnx = self.fast = None
        if self.backend == "onnx":
            self.onnx = _load_onnx(path, max_length, batch_size, normalize, self.precision == "int8", _folder_stamp(path))
        else:
            self.model = _load_model(path, device, max_length, self.precision, _folder_stamp(path))
            # the feed on CUDA and on a CPU (1.8 times as fast as sentence-transformers' encode there,
            # scripts/bench_feed.py); other devices (MPS) keep sentence-transformers' encode
            if device.startswith(("cuda", "cpu")) and Path(path).is_dir():
                try:
                    self.fast = PrefetchTorchEncoder(self.model, Path(path), max_length, batch_size, normalize, batch_tokens)
                except HnmineError:  # not a plain Transformer + Pooling folder: sentence-transformers' encode
                    pass

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        if self.model is None:
            return self.onnx.encode(texts, prompt=prompt)
        if self.fast is not None:
            return self.fast.encode(texts, prompt=prompt)
        if not texts:
            return np.zeros((0, embedding_dimension(self.model)), dtype=np.float32)
        return self.model.encode(
            texts, batch_size=self.batch_size, prompt=prompt or None, normalize_embeddings=self.normalize,
            convert_to_numpy=True, show_progress_bar=False,
        ).astype(np.float32, copy=False)


    def encode_chunks(self, chunks: Iterable[list[str]], prompt: str = "") -> Iterator[np.ndarray]:
        """Each chunk's vectors in order. The torch feed runs one pipeline across the chunks (see
        hnmine.retrievers.torch_feed); the other paths encode one chunk after the other."""
        if self.fast is not None:
            yield from self.fast.encode_chunks(chunks, prompt=prompt)
            return
        for texts in chunks:
            yield self.encode(texts, prompt=prompt)


def resolve_backend(backend: str, model_path: str, device: str, precision: str = "fp32") -> str:
    if backend != "auto":
        if backend == "onnx" and precision not in ("fp32", "int8"):
            raise HnmineError(f"the ONNX encoder runs in fp32 or int8, not {precision}",
                              fix="use --precision fp32 or int8 with --backend onnx, or --backend torch")
        if backend == "torch" and precision == "int8":
            raise HnmineError("--precision int8 needs the ONNX encoder", fix="use --backend onnx (or auto) on a CPU")
        return backend
    if precision == "int8":
        if not device.startswith("cpu") or not Path(model_path).is_dir():
            raise HnmineError("--precision int8 runs through ONNX Runtime on a CPU, from a local model folder",
                              fix="use --device cpu with a sentence-transformers folder, or --precision fp16 on a GPU")
        return "onnx"
    if not device.startswith("cpu") or precision != "fp32" or not Path(model_path).is_dir():
        return "torch"
    try:
        import onnxruntime  # noqa: F401

        from hnmine.retrievers.onnx_encoder import _modules

        _modules(Path(model_path))
    except (ImportError, HnmineError):
        return "torch"
    return "onnx"


@functools.lru_cache(maxsize=2)
def _load_onnx(path: str, max_length: int | None, batch_size: int, normalize: bool, int8: bool = False,
               stamp: tuple = ()):
    from hnmine.retrievers.onnx_encoder import OnnxSentenceEncoder

    return OnnxSentenceEncoder(path, max_length=max_length, batch_size=batch_size, normalize=normalize, int8=int8)
