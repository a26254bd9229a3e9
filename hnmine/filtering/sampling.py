"""The order a query's survivors are taken in (top, random, lowest-score), and the random corpus
documents that pad a query short of negatives."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.filtering.similarity import FilterContext

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def sampling_keys(query_ids: list[str], doc_ids: list[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random key per (query, doc): the same whatever the sharding or row order."""
    cache: dict[str, int] = {}

    def h(value: str) -> int:
        if value not in cache:
            cache[value] = int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")
        return cache[value]

    q = np.fromiter((h(v) for v in query_ids), dtype=np.uint64, count=len(query_ids))
    d = np.fromiter((h("d:" + v) for v in doc_ids), dtype=np.uint64, count=len(doc_ids))
    return _splitmix64(_splitmix64(q ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ d)


def with_sampling_key(survivors: pl.DataFrame, params: FilterParams, teacher: str | None) -> pl.DataFrame:
    """`survivors` with `_key`, the order they are taken in within a query (smallest first): the rank
    (top), a seeded random key (random), or the `teacher` score, lowest first (lowest-score)."""
    if params.sampling == "random":
        keys = sampling_keys(survivors[schema.QUERY_ID].to_list(), survivors[schema.DOC_ID].to_list(), params.seed)
        return survivors.with_columns(pl.Series("_key", keys))
    if params.sampling == "lowest-score":
        # lowest teacher score first; unscored candidates last; ties by retriever rank
        return (survivors.with_columns(pl.col(teacher).cast(pl.Float64).fill_nan(None).fill_null(float("inf")).alias("_key"))
                .sort(["_key", schema.RANK]).drop("_key").with_row_index("_key"))
    return survivors.with_columns(pl.col(schema.RANK).cast(pl.UInt64).alias("_key"))


def pad_query(qid: str, need: int, banned_ids: set[str], banned_hashes: set[int], context: FilterContext,
              seed: int) -> list[str]:
    """`need` seeded random corpus documents that are not positives (by id or text) and not repeats."""
    digest = int.from_bytes(hashlib.blake2b(qid.encode(), digest_size=8).digest(), "big")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, digest & 0xFFFFFFFF, digest >> 32])
    chosen: list[str] = []
    n = len(context.doc_ids)
    for _ in range(64):
        for position in rng.integers(0, n, size=max(4 * need, 16)).tolist():
            doc, h = context.doc_ids[position], int(context.text_hashes[position])
            if doc in banned_ids or h in banned_hashes:
                continue
            chosen.append(doc)
            banned_ids.add(doc)
            banned_hashes.add(h)
            if len(chosen) == need:
                return chosen
    return chosen  # a corpus nearly all positives: fewer pads, counted by the caller


def pad(kept: pl.DataFrame, scored: pl.DataFrame, short: pl.DataFrame, params: FilterParams,
        context: FilterContext) -> tuple[pl.DataFrame, int, int]:
    """Fill short queries up to num_negatives with random corpus documents (`padded` = true)."""
    seen = scored.group_by(schema.QUERY_ID).agg(pl.col(schema.DOC_ID), pl.col(schema.DOC_ID).filter(pl.col(schema.IS_POSITIVE)).alias("pos"))
    seen = {q: (set(d), p) for q, d, p in seen.iter_rows()}
    rows = []
    for qid, have in short.iter_rows():
        have = have or 0
        docs, positives = seen[qid]
        # never a positive (by id or text), never any candidate of the query (kept or dropped for a reason)
        new = pad_query(qid, params.num_negatives - have, set(docs), set(context.text_hashes[context.positions(positives)].tolist()), context, params.seed)
        rows += [{schema.QUERY_ID: qid, schema.DOC_ID: d, schema.IS_POSITIVE: False, schema.NEGATIVE_RANK: have + i + 1,
                  schema.PADDED: True} for i, d in enumerate(new)]
    if not rows:
        return kept, 0, 0
    padded = pl.DataFrame(rows).with_columns(pl.col(schema.NEGATIVE_RANK).cast(kept.schema[schema.NEGATIVE_RANK]))
    return pl.concat([kept, padded], how="diagonal_relaxed"), len(rows), short.height
