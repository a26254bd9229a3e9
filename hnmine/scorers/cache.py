"""Scores saved in chunks as they complete, keyed by what determines them.

A key is a 16-byte BLAKE2b of (scorer identity, prompt, query text, document text): the same pair
scored by the same model with the same prompt is never scored twice, in this run or a later one,
and a changed model or prompt misses the cache and rescores. Chunks are Arrow files written
atomically, so a killed run loses at most the chunk it was working on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from hnmine.io.files import read_table, write_table


def scorer_digest(identity: dict) -> str:
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8).hexdigest()


def pair_keys(identity_digest: str, queries: list[str], documents: list[str]) -> list[bytes]:
    keys = []
    prefix = identity_digest.encode() + b"\x1f"
    for query, document in zip(queries, documents, strict=True):
        digest = hashlib.blake2b(prefix, digest_size=16)
        digest.update(query.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
        digest.update(document.encode("utf-8", "surrogatepass"))
        keys.append(digest.digest())
    return keys


class ScoreCache:
    """`root/<scorer digest>/chunk-<time>-<pid>-<random>.arrow` files of (key, one float column per score).

    A chunk's name is new for every chunk ever written (nanosecond clock, process id and a random
    part), so no writer replaces another's chunk: not a second cache object in the same process, not
    a reused worker, not another machine whose process has the same id. Names sort in the order
    written, so where two chunks hold the same key the later one wins."""

    def __init__(self, root: Path, identity: dict, columns: list[str]):
        self.digest = scorer_digest(identity)
        self.folder = Path(root) / self.digest
        self.columns = columns
        self.scores: dict[bytes, tuple[float, ...]] = {}
        self.loaded_pairs = 0
        if self.folder.is_dir():
            for file in sorted(self.folder.glob("chunk-*.arrow")):
                table = read_table(file)
                keys = table.column("key").to_pylist()
                values = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns], axis=1)
                self.scores.update(zip(keys, map(tuple, values.tolist()), strict=True))
        self.loaded_pairs = len(self.scores)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "scorer.json").write_text(json.dumps(identity, indent=2, sort_keys=True))

    def missing(self, keys: list[bytes]) -> list[int]:
        """Positions of keys without a cached score, each distinct key once."""
        seen: set[bytes] = set()
        out = []
        for i, key in enumerate(keys):
            if key not in self.scores and key not in seen:
                seen.add(key)
                out.append(i)
        return out

    def add(self, keys: list[bytes], values: np.ndarray) -> None:
        """Save one finished chunk of scores; it survives whatever happens next."""
        values = np.asarray(values, dtype=np.float32).reshape(len(keys), len(self.columns))
        table = pa.table({"key": pa.array(keys, pa.binary(16)),
                          **{c: pa.array(values[:, i]) for i, c in enumerate(self.columns)}})
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}.arrow"
        write_table(table, self.folder / name)
        self.scores.update(zip(keys, map(tuple, values.tolist()), strict=True))

    def lookup(self, keys: list[bytes]) -> np.ndarray:
        out = np.full((len(keys), len(self.columns)), np.nan, dtype=np.float32)
        for i, key in enumerate(keys):
            hit = self.scores.get(key)
            if hit is not None:
                out[i] = hit
        return out
