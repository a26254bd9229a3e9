"""`export --format beir-subset`: a small BEIR folder that ranks models as the full corpus does.

MMTEB evaluates retrieval on pooled subsets: each query's labeled positives and the top candidates
of several systems, so a model is scored on a corpus a fraction of the size. The folder has the
run's queries (`queries.jsonl`), all their labeled positives (`qrels/test.tsv`, with their
relevance), and a corpus (`corpus.jsonl`) of those positives, every mined candidate within
`depth` of each retriever the run has (dense, BM25, fused), and seeded random documents of the
corpus until it holds `min_documents`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl

from hnmine import schema
from hnmine.io.files import atomic_path, read_table

FILES = {"corpus": "corpus.jsonl", "queries": "queries.jsonl", "qrels": "qrels/test.tsv"}


def pooled_documents(candidates: pl.DataFrame, depth: int | None) -> pl.Series:
    """The candidates within `depth` of any retriever's list (or of the fused rank), and the positives."""
    if depth is None:
        return candidates[schema.DOC_ID].unique(maintain_order=True)
    ranks = [c for c in (schema.RANK, *(schema.rank_column(r) for r in schema.RETRIEVERS)) if c in candidates.columns]
    inside = pl.col(schema.IS_POSITIVE) | pl.any_horizontal([pl.col(c) <= depth for c in ranks])
    return candidates.filter(inside)[schema.DOC_ID].unique(maintain_order=True)


def write_subset(folder: Path, corpus_path: Path, queries_path: Path, qrels_path: Path, candidates_path: Path,
                 depth: int | None, min_documents: int, seed: int) -> dict:
    """Write the three BEIR files into `folder`; their counts."""
    candidates = pl.from_arrow(read_table(candidates_path, [schema.QUERY_ID, schema.DOC_ID, schema.IS_POSITIVE, schema.RANK,
                                                            *(schema.rank_column(r) for r in schema.RETRIEVERS)]))
    queries = pl.from_arrow(read_table(queries_path))
    qrels = pl.from_arrow(read_table(qrels_path)).filter(pl.col(schema.QUERY_ID).is_in(queries[schema.QUERY_ID].implode()))
    pooled = pl.concat([qrels[schema.DOC_ID], pooled_documents(candidates, depth)]).unique(maintain_order=True)
    corpus = pl.from_arrow(read_table(corpus_path, [schema.DOC_ID, schema.TITLE, schema.TEXT]))
    stats = {"queries": queries.height, "positives": qrels.height, "pooled_documents": pooled.len(),
             "corpus_documents": corpus.height}
    chosen = set(pooled.to_list())
    if len(chosen) < min_documents:
        rest = [d for d in corpus[schema.DOC_ID].to_list() if d not in chosen]
        drawn = random.Random(seed).sample(rest, min(len(rest), min_documents - len(chosen)))
        chosen.update(drawn)
        stats["random_documents"] = len(drawn)
    subset = corpus.filter(pl.col(schema.DOC_ID).is_in(list(chosen)))  # corpus order
    stats["documents"] = subset.height
    stats["share_of_corpus"] = round(subset.height / corpus.height, 4) if corpus.height else None
    with atomic_path(folder / "corpus.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
        for doc_id, title, text in subset.iter_rows():
            out.write(json.dumps({"_id": doc_id, "title": title or "", "text": text}, ensure_ascii=False) + "\n")
    with atomic_path(folder / "queries.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
        for query_id, text in queries.select(schema.QUERY_ID, schema.TEXT).iter_rows():
            out.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    with atomic_path(folder / "qrels" / "test.tsv") as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for query_id, doc_id, relevance in qrels.select(schema.QUERY_ID, schema.DOC_ID, schema.RELEVANCE).iter_rows():
            out.write(f"{query_id}\t{doc_id}\t{relevance:g}\n")
    return stats
