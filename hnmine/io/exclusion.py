"""The contamination firewall of `mine --exclude-qrels`: evaluation data kept out of training.

An evaluation query never becomes a training query, matched by id or by normalized text (ids of
one query often differ between a benchmark's copies). Documents that are positives of evaluation
queries are kept out of the training negatives and, with `--exclude-documents all`, out of the
training positives too (a query left with no positive is dropped), so a model trained on the export
has not learned the evaluation's answers, nor learned to push them away. Every exclusion is
counted in the mine manifest. The Nemotron embedding recipe splits its data before it mines for
the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.io import readers
from hnmine.io.qrels import qrels_rows
from hnmine.text import text_hash


@dataclass
class Evaluation:
    """What must stay out of training: evaluation query ids and text hashes, and the text hashes of
    evaluation positives found in the corpus."""

    query_ids: set[str]
    query_hashes: set[int]
    positive_hashes: frozenset[int]
    stats: dict


def read_evaluation(qrels: Path, queries: Path | None, fallback_queries: Path | None, corpus_ids: pa.Array,
                    corpus_hashes: np.ndarray, *, min_relevance: float, id_column: str = "_id",
                    text_column: str = "text") -> Evaluation:
    """The evaluation set from its qrels (positives: relevance >= min_relevance) and its queries'
    texts. Ids to exclude are the qrels' query ids only. Texts come from `queries` (the entries whose
    ids the qrels name, or, where no id matches, as in another copy of the benchmark, every entry),
    or else from `fallback_queries` (the training queries file, which in a BEIR folder holds every
    split's queries), the entries whose ids the qrels name. Both files are read with the training
    data's query id and text columns."""
    query_ids: set[str] = set()
    positive_ids: set[str] = set()
    for _, qid, did, score in qrels_rows(readers.require_file(qrels, "exclude-qrels")):
        query_ids.add(qid)
        if score >= min_relevance:
            positive_ids.add(did)
    if queries is None and fallback_queries is None:
        raise HnmineError("--exclude-qrels without query texts: a pairs file has no query ids to match",
                          path=qrels, fix="also pass --exclude-queries with the evaluation queries file")
    source = queries if queries is not None else fallback_queries
    table, _ = readers.read_queries(readers.require_file(source, "exclude-queries"), id_column, text_column)
    ids, texts = table.column(schema.QUERY_ID).to_pylist(), table.column(schema.TEXT).to_pylist()
    pairs = [(q, t) for q, t in zip(ids, texts) if q in query_ids]
    if queries is not None and not pairs:  # an evaluation file with ids of its own: every text in it
        pairs = list(zip(ids, texts))
    known = pc.is_in(corpus_ids, value_set=pa.array(sorted(positive_ids), type=pa.string())).to_numpy(zero_copy_only=False)
    stats = {"exclude_queries": len(query_ids), "exclude_query_texts": len(pairs),
             "exclude_positives": len(positive_ids), "exclude_positives_not_in_corpus": len(positive_ids) - int(known.sum())}
    return Evaluation(query_ids, {text_hash(t) for _, t in pairs},
                      frozenset(int(h) for h in corpus_hashes[known]), stats)


def exclude(queries: pa.Table, qrels: pa.Table, evaluation: Evaluation, documents: str,
            doc_hash_of: dict[str, int]) -> tuple[pa.Table, pa.Table, dict]:
    """The training queries and qrels without the evaluation's queries (by id, then by text) and,
    with `documents == "all"`, without positives that are evaluation positives (by text)."""
    ids = queries.column(schema.QUERY_ID).to_pylist()
    texts = queries.column(schema.TEXT).to_pylist()
    by_id = [q in evaluation.query_ids for q in ids]
    by_text = [not i and text_hash(t) in evaluation.query_hashes for i, t in zip(by_id, texts)]
    stats = {"queries_excluded_eval_id": sum(by_id), "queries_excluded_eval_text": sum(by_text)}
    keep = pa.array([not (a or b) for a, b in zip(by_id, by_text)], type=pa.bool_())
    queries = queries.filter(keep)
    qrels = qrels.filter(pc.is_in(qrels.column(schema.QUERY_ID), value_set=queries.column(schema.QUERY_ID)))
    if documents == "all":
        hashes = [doc_hash_of.get(d) for d in qrels.column(schema.DOC_ID).to_pylist()]
        clean = pa.array([h not in evaluation.positive_hashes for h in hashes], type=pa.bool_())
        stats["positives_excluded_eval"] = qrels.num_rows - pc.sum(clean).as_py() if qrels.num_rows else 0
        qrels = qrels.filter(clean)
        left = pc.is_in(queries.column(schema.QUERY_ID), value_set=pc.unique(qrels.column(schema.QUERY_ID)))
        stats["queries_excluded_no_positive_left"] = queries.num_rows - (pc.sum(left).as_py() or 0)
        queries = queries.filter(left)
    return queries, qrels, stats
