"""The rows of candidates.arrow for one batch of queries, from the retrievers' ranked lists.

A query's candidates are its list's entries in order, less its positives (by id and by normalized
text), its own text, the evaluation's positives (`mine --exclude-qrels`) and repeats of a text
already kept, until top_k are kept. `collect` does this with array operations over the whole batch
when the run reads one list (dense alone, BM25 alone, a pool of one index): at MS MARCO's 503k
queries the walk per query in Python was most of `mine` outside its search (docs/gpu.md). Fused
lists (hybrid, a pool of several) take the walk, which is also the reference the array path is
tested against (the same rows, counts and short queries).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from hnmine import schema
from hnmine.config import MineParams
from hnmine.io.files import read_table
from hnmine.text import text_hash
from hnmine.workdir import WorkDir

COUNTS = ("excluded_positive_by_id", "excluded_positive_by_text", "excluded_query_text", "excluded_duplicate_text",
          "excluded_eval_positive")


@dataclass
class Corpus:
    """corpus.arrow's ids and text hashes, in corpus order, as Arrow and numpy arrays: no Python
    object per document."""

    ids: pa.Array  # doc ids, corpus order
    hashes: np.ndarray  # uint64 normalized-text hashes

    @classmethod
    def read(cls, workdir: Path) -> Corpus:
        table = read_table(WorkDir(workdir).corpus, [schema.DOC_ID, schema.TEXT_HASH])
        return cls(table.column(schema.DOC_ID).combine_chunks(), table.column(schema.TEXT_HASH).to_numpy())


def collect(batch_ids, batch_texts, positives, corpus: Corpus, lists, params: MineParams, top_k: int, query_vectors,
            retrievers, depth: dict[str, int], excluded: frozenset[int] = frozenset()):
    """The candidates.arrow columns for one batch, and the queries short of top_k."""
    collector = vectorized if len(lists) == 1 else walk_lists
    return collector(batch_ids, batch_texts, positives, corpus, lists, params, top_k, query_vectors, retrievers, depth,
                     excluded)


def vectorized(batch_ids, batch_texts, positives, corpus: Corpus, lists, params: MineParams, top_k: int, query_vectors,
               retrievers, depth: dict[str, int], excluded: frozenset[int] = frozenset()):
    """walk_lists for one ranked list, as array operations over the batch: [query, entry] masks of
    each exclusion, in the walk's order of tests, and the walk's stop where top_k are kept."""
    ((key, (positions, scores)),) = lists.items()
    positions = np.asarray(positions, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    n_queries, width = positions.shape
    n_docs = len(corpus.ids)
    row = np.arange(n_queries, dtype=np.int64)
    depths = np.fromiter((depth[q] for q in batch_ids), dtype=np.int64, count=n_queries)
    listed = (positions >= 0) & (np.arange(width)[None, :] < depths[:, None])
    hashes = corpus.hashes[np.maximum(positions, 0)]
    pos_lists = [positives[q] for q in batch_ids]
    pos_counts = np.fromiter(map(len, pos_lists), dtype=np.int64, count=n_queries)
    pos_row = np.repeat(row, pos_counts)
    pos_docs = np.fromiter(itertools.chain.from_iterable(pos_lists), dtype=np.int64, count=int(pos_counts.sum()))
    pos_hashes = corpus.hashes[pos_docs]
    entry_key = row[:, None] * n_docs + positions  # (query, document) as one integer
    pos_key = pos_row * n_docs + pos_docs

    by_id = listed & np.isin(entry_key, pos_key)
    rest = listed & ~by_id
    by_text = rest & np.isin(hashes, pos_hashes)  # a text of some positive of the batch: the query's own?
    if by_text.any():
        banned = set(zip(pos_row.tolist(), pos_hashes.tolist()))
        rows, cols = np.nonzero(by_text)
        own = np.fromiter(((r, h) in banned for r, h in zip(rows.tolist(), hashes[rows, cols].tolist())), dtype=bool,
                          count=len(rows))
        by_text[rows[~own], cols[~own]] = False
    rest &= ~by_text
    query_hashes = np.fromiter((text_hash(t) for t in batch_texts), dtype=np.uint64, count=n_queries)
    by_query = rest & (hashes == query_hashes[:, None])
    rest &= ~by_query
    by_eval = rest & np.isin(hashes, np.fromiter(excluded, dtype=np.uint64, count=len(excluded))) if excluded \
        else np.zeros_like(rest)
    rest &= ~by_eval
    # identical texts are one document: the first entry of each text in a row survives
    rows, cols = np.nonzero(rest)
    order = np.lexsort((cols, hashes[rows, cols], rows))
    sorted_rows, sorted_hashes = rows[order], hashes[rows, cols][order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (sorted_rows[1:] == sorted_rows[:-1]) & (sorted_hashes[1:] == sorted_hashes[:-1])
    by_repeat = np.zeros_like(rest)
    by_repeat[rows[order][repeat], cols[order][repeat]] = True
    kept = rest & ~by_repeat
    # the walk stops at its top_k-th kept entry: entries after it are neither kept nor counted
    running = np.cumsum(kept, axis=1)
    walked = listed & (running - kept < top_k)
    kept &= walked
    counts = {name: int(np.count_nonzero(mask & walked)) for name, mask in
              zip(COUNTS, (by_id, by_text, by_query, by_repeat, by_eval))}
    kept_per_query = kept.sum(axis=1)
    short = [batch_ids[i] for i in np.flatnonzero(kept_per_query < top_k).tolist()]

    # rows: each query's positives in qrels order, then its kept entries in list order
    kept_rows, kept_cols = np.nonzero(kept)
    part = np.concatenate([np.zeros(len(pos_row), dtype=np.int8), np.ones(len(kept_rows), dtype=np.int8)])
    within = np.concatenate([np.arange(len(pos_row)) - np.repeat(np.cumsum(pos_counts) - pos_counts, pos_counts),
                             kept_cols])
    row_query = np.concatenate([pos_row, kept_rows])
    order = np.lexsort((within, part, row_query))
    row_query = row_query[order]
    is_positive = (part == 0)[order]
    doc_positions = np.concatenate([pos_docs, positions[kept_rows, kept_cols]])[order]
    rank = np.concatenate([np.zeros(len(pos_row), dtype=np.int32), running[kept_rows, kept_cols].astype(np.int32)])[order]
    fused = np.concatenate([np.zeros(len(pos_row), dtype=np.float32), scores[kept_rows, kept_cols]])[order]
    # a positive's own rank in the list, where the list reached it (it was read, then left out)
    listed_keys = entry_key[listed]
    listed_cols = np.nonzero(listed)[1]
    by_key = np.argsort(listed_keys, kind="stable")
    at = np.clip(np.searchsorted(listed_keys[by_key], pos_key), 0, max(len(listed_keys) - 1, 0))
    found = (listed_keys[by_key][at] == pos_key) if len(listed_keys) else np.zeros(len(pos_key), dtype=bool)
    pos_rank = np.where(found, listed_cols[by_key][at] + 1 if len(listed_keys) else 0, 0)
    list_rank = np.concatenate([pos_rank, kept_cols + 1]).astype(np.int32)[order]
    found_by = np.concatenate([found, np.ones(len(kept_rows), dtype=bool)]).astype(np.int32)[order]

    n_rows = len(row_query)
    columns = {
        schema.QUERY_ID: pa.array(batch_ids, pa.string()).take(pa.array(row_query, pa.int64())),
        schema.DOC_ID: corpus.ids.take(pa.array(doc_positions, type=pa.int64())),
        schema.IS_POSITIVE: pa.array(is_positive),
        schema.RANK: pa.array(rank, pa.int32(), mask=is_positive),
        schema.FUSED_SCORE: pa.array(fused, pa.float32(), mask=is_positive),
        schema.FOUND_BY: pa.array(found_by, pa.int32()),
    }
    for name in (*schema.RETRIEVERS, *(k for k in retrievers.keys if k not in schema.RETRIEVERS)):
        if name in retrievers.dense:
            score = dense_scores(retrievers.dense[name].embeddings, query_vectors[name], row_query, doc_positions)
        elif name == "bm25" and retrievers.bm25 is not None:
            bounds = np.cumsum(pos_counts + kept_per_query)
            score = list(itertools.chain.from_iterable(
                retrievers.bm25.scores_for(text, doc_positions[stop - count:stop].tolist())
                for text, stop, count in zip(batch_texts, bounds.tolist(), (pos_counts + kept_per_query).tolist())))
        else:
            score = pa.nulls(n_rows, pa.float32())
        columns[schema.score_column(name)] = pa.array(score, pa.float32())
        columns[schema.rank_column(name)] = (pa.array(list_rank, pa.int32(), mask=list_rank == 0) if name == key
                                             else pa.nulls(n_rows, pa.int32()))
    columns["_counts"] = counts
    return columns, short


def walk_lists(batch_ids, batch_texts, positives, corpus: Corpus, lists, params: MineParams, top_k: int,
               query_vectors, retrievers, depth: dict[str, int], excluded: frozenset[int] = frozenset()):
    """The candidates.arrow columns for one batch of queries, and the queries short of top_k: each
    query walks its lists in plain Python (the reference, and the path of fused lists).

    The ranked lists arrive as numpy arrays for the whole batch; they become Python lists once, with
    every entry's text hash, and each query walks its own list in plain Python. Reading numpy scalars
    one at a time, a dict per list entry and a dot product per query were most of mine's time on a
    GPU machine."""
    counts = {"excluded_positive_by_id": 0, "excluded_positive_by_text": 0, "excluded_query_text": 0,
              "excluded_duplicate_text": 0, "excluded_eval_positive": 0}
    walked = {name: (positions.tolist(), scores.tolist(), corpus.hashes[np.maximum(positions, 0)].tolist())
              for name, (positions, scores) in lists.items()}
    fuse = len(walked) > 1  # hybrid, or a pool of two or more: reciprocal-rank fusion of every list
    out_query, out_row_query, out_doc, out_rank, out_fused, out_bm25, out_found_by = [], [], [], [], [], [], []
    out_hits = {name: ([], []) for name in walked}  # per retriever: raw rank and raw score per row
    short: list[str] = []
    for qi, (qid, qtext) in enumerate(zip(batch_ids, batch_texts)):
        pos = positives[qid]
        pos_set = set(pos)
        banned_hashes = {int(corpus.hashes[p]) for p in pos}
        query_hash = text_hash(qtext)
        d = depth[qid]
        # per retriever, its first d entries: (position, raw rank, raw score, text hash); -1 = list ran out
        entries = {name: [(p, r + 1, sc, h) for r, (p, sc, h) in
                          enumerate(zip(plist[qi][:d], slist[qi][:d], hlist[qi][:d])) if p >= 0]
                   for name, (plist, slist, hlist) in walked.items()}
        hits = {name: {p: (r, sc) for p, r, sc, _ in rows} for name, rows in entries.items()}  # p -> (rank, score)
        if fuse:
            fused: dict[int, float] = {}
            hash_of: dict[int, int] = {}
            for rows in entries.values():
                for p, rank, _, h in rows:
                    fused[p] = fused.get(p, 0.0) + 1.0 / (params.rrf_k + rank)
                    hash_of[p] = h
            order = [(p, fused[p], hash_of[p]) for p in sorted(fused, key=lambda p: (-fused[p], p))]
        else:
            order = [(p, sc, h) for p, _, sc, h in next(iter(entries.values()))]
        kept: list[int] = []
        kept_fused: list[float] = []
        kept_hashes: set[int] = set()
        for p, fused_score, h in order:
            if p in pos_set:
                counts["excluded_positive_by_id"] += 1
            elif h in banned_hashes:
                counts["excluded_positive_by_text"] += 1
            elif h == query_hash:
                counts["excluded_query_text"] += 1
            elif h in excluded:  # an evaluation query's positive (mine --exclude-qrels)
                counts["excluded_eval_positive"] += 1
            elif h in kept_hashes:  # identical texts are one document: keep the best-ranked copy
                counts["excluded_duplicate_text"] += 1
            else:
                kept.append(p)
                kept_fused.append(fused_score)
                kept_hashes.add(h)
                if len(kept) == top_k:
                    break
        if len(kept) < top_k:
            short.append(qid)
        docs = pos + kept
        out_query.extend([qid] * len(docs))
        out_row_query.extend([qi] * len(docs))
        out_doc.extend(docs)
        out_rank.extend([None] * len(pos) + list(range(1, len(kept) + 1)))
        out_fused.extend([None] * len(pos) + kept_fused)
        for name, (ranks, scores) in out_hits.items():
            found = [hits[name].get(p) for p in docs]
            ranks.extend(hit[0] if hit else None for hit in found)
            scores.extend(hit[1] if hit else None for hit in found)
        out_found_by.extend(sum(p in found for found in hits.values()) for p in docs)
        if retrievers.bm25 is not None:
            out_bm25.extend(retrievers.bm25.scores_for(qtext, docs))
    doc_positions = np.asarray(out_doc, dtype=np.int64)
    none = [None] * len(out_doc)
    columns = {
        schema.QUERY_ID: out_query,
        schema.DOC_ID: corpus.ids.take(pa.array(doc_positions, type=pa.int64())),
        schema.IS_POSITIVE: [r is None for r in out_rank],
        schema.RANK: out_rank,
        schema.FUSED_SCORE: out_fused,
        schema.FOUND_BY: out_found_by,
    }
    row_query = np.asarray(out_row_query, dtype=np.int64)
    for key in (*schema.RETRIEVERS, *(k for k in retrievers.keys if k not in schema.RETRIEVERS)):
        if key in retrievers.dense:  # every row's inner product, found by this index or not
            columns[schema.score_column(key)] = dense_scores(retrievers.dense[key].embeddings, query_vectors[key],
                                                              row_query, doc_positions)
        elif key == "bm25" and retrievers.bm25 is not None:
            columns[schema.score_column(key)] = out_bm25
        else:
            columns[schema.score_column(key)] = none
        columns[schema.rank_column(key)] = out_hits[key][0] if key in out_hits else none
    columns["_counts"] = counts
    return columns, short


def dense_scores(embeddings: np.ndarray, query_vectors: np.ndarray, row_query: np.ndarray,
                  doc_positions: np.ndarray) -> np.ndarray:
    """Each row's fp32 query-document inner product, from the matrix: the batch's distinct documents
    are read in one gather (in file order), then each query's rows are multiplied with it alone, as
    a run of any batch size or shard does. (The search's own scores come from a matrix product over
    the whole batch, whose rounding changes with the batch, so a sharded run would differ in the
    last bits.) A query's rows are gathered from the distinct ones when it is multiplied, so the
    batch's rows (hundreds of MB at 4096 queries) never exist at once."""
    scores = np.zeros(len(doc_positions), dtype=np.float32)
    if not len(doc_positions):
        return scores
    unique, inverse = np.unique(doc_positions, return_inverse=True)
    distinct = np.asarray(embeddings[unique], dtype=np.float32)
    queries = np.asarray(query_vectors, dtype=np.float32)
    bounds = np.flatnonzero(np.diff(row_query)) + 1  # rows are grouped by query, in batch order
    for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(row_query)]):
        scores[start:stop] = distinct[inverse[start:stop]] @ queries[row_query[start]]
    return scores
