"""The embedding store of a dense index: corpus embeddings encoded in resumable chunks, read memory-mapped.

Layout of `WORKDIR/index/dense/`:
  plan.json        what the chunks belong to (model, texts, chunking); a changed plan discards them
  chunks/PLAN/NNNNN.npy embeddings of the NNNNN-th slice of the length-sorted corpus, written
                   atomically, in a folder named by the plan's digest
  embeddings.npy   float32 [docs x dim] in corpus order, read memory-mapped
  faiss.index      only for non-Flat factory strings (Flat is searched straight from the memmap;
                   see `faiss_index`)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.retrievers.encoders import Encoder

# the store's files inside a dense index folder (hnmine.workdir.WorkDir names the folder)
EMBEDDINGS_FILE = "embeddings.npy"
CHUNKS_DIR = "chunks"
PLAN_FILE = "plan.json"


def _plan_digest(plan: dict) -> str:
    return hashlib.blake2b(json.dumps(plan, sort_keys=True).encode(), digest_size=16).hexdigest()


def encode_corpus(
    texts: list[str],
    out_dir: Path,
    encoder_factory: Callable[[], Encoder],
    *,
    identity: dict,
    prompt: str,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
    dtype: str = "float32",
    part: tuple[int, int] | None = None,
) -> tuple[np.ndarray | None, dict]:
    """Encode `texts` into `out_dir/embeddings.npy`, resuming from chunks an earlier run saved.

    Texts are encoded longest first (less padding per batch, and an out-of-memory error shows up
    in the first batch, not after an hour), in chunks of `chunk_size` saved as they finish.
    `part=(k, n)` encodes only the chunks c with c % n == k and returns (None, stats) without
    assembling: n workers (Ray tasks) share the encoding, and a last call with no part assembles.
    The encoder takes the missing chunks as one stream (`Encoder.encode_chunks`), and each chunk
    is saved in a thread while the next is encoded. The stats time the encoder's loading and the
    waits for its chunks apart from the rest of the call (hashing, sorting, assembling the matrix),
    host time a device does not overlap.
    """
    out_dir = Path(out_dir)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    text_digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        text_digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    plan = {"identity": identity, "texts": text_digest.hexdigest(), "count": len(texts), "chunk_size": chunk_size}
    plan_file = out_dir / PLAN_FILE
    # chunks live in a folder named by their plan: no run ever resumes from another plan's chunks
    chunks_dir = out_dir / CHUNKS_DIR / _plan_digest(plan)
    if part is None and (out_dir / CHUNKS_DIR).is_dir():
        for other in (out_dir / CHUNKS_DIR).iterdir():
            if other != chunks_dir:
                shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(plan_file) as tmp:
        tmp.write_text(json.dumps({"digest": _plan_digest(plan), **plan}, indent=2))
    chunks_dir.mkdir(parents=True, exist_ok=True)

    n_chunks = (len(texts) + chunk_size - 1) // chunk_size

    def rows(c: int) -> np.ndarray:
        return order[c * chunk_size:(c + 1) * chunk_size]

    mine = [c for c in range(n_chunks) if part is None or c % part[1] == part[0]]
    missing = [c for c in mine if not (chunks_dir / f"{c:05d}.npy").exists()]
    resumed = sum(len(rows(c)) for c in set(mine) - set(missing))
    if progress and resumed:
        progress(resumed)
    encoded = 0
    load_seconds = encode_seconds = 0.0  # the encoder's loading and its encode calls
    if missing:
        started = time.perf_counter()
        encoder = encoder_factory()
        load_seconds = time.perf_counter() - started
        stream = encoder.encode_chunks(([texts[i] for i in rows(c)] for c in missing), prompt=prompt)
        # one chunk is saved in a thread while the next is encoded, so the device's queue does not
        # drain while a chunk is written; a save's error surfaces at the next chunk
        with closing(stream), ThreadPoolExecutor(max_workers=1) as writer:
            saving = None
            started = time.perf_counter()
            for c, vectors in zip(missing, stream, strict=True):
                encode_seconds += time.perf_counter() - started
                if saving is not None:
                    saving.result()
                saving = writer.submit(_save_chunk, chunks_dir / f"{c:05d}.npy", vectors)
                encoded += len(vectors)
                if progress:
                    progress(len(vectors))
                started = time.perf_counter()
            saving.result()

    timing = {"encoder_load_seconds": round(load_seconds, 2), "encoding_seconds": round(encode_seconds, 2)} \
        if encoded else {}
    if part is not None:
        return None, {"docs_encoded": encoded, "docs_resumed": resumed, **timing}
    if not n_chunks:
        raise HnmineError("corpus is empty: nothing to encode", fix="check the corpus file")
    dim = np.load(chunks_dir / "00000.npy", mmap_mode="r").shape[1]
    embeddings_file = out_dir / EMBEDDINGS_FILE
    with atomic_path(embeddings_file) as tmp:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(texts), dim))
        for c in range(n_chunks):
            matrix[rows(c)] = np.load(chunks_dir / f"{c:05d}.npy")
        matrix.flush()
        del matrix
    shutil.rmtree(out_dir / CHUNKS_DIR, ignore_errors=True)
    return np.load(embeddings_file, mmap_mode="r"), {"docs_encoded": encoded, "docs_resumed": resumed, "dim": dim,
                                                         **timing}


def _save_chunk(path: Path, vectors: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)


def load_embeddings(out_dir: Path) -> np.ndarray:
    path = Path(out_dir) / EMBEDDINGS_FILE
    if not path.exists():
        raise HnmineError("no dense embeddings", path=path, fix="run `hnmine index --retrievers dense` first")
    return np.load(path, mmap_mode="r")
