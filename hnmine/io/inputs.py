"""Turn `DataParams` into the corpus, queries and qrels tables, whatever the input layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from hnmine import schema
from hnmine.config import DataParams
from hnmine.errors import HnmineError
from hnmine.io import readers
from hnmine.io.qrels import qrels_rows, read_qrels
from hnmine.text import text_hash


def corpus_files(data: DataParams) -> dict[str, Path]:
    """The user files the corpus is read from (for the manifest fingerprint)."""
    data.check()
    files: dict[str, Path] = {}
    if data.beir is not None:
        files["corpus"] = readers.beir_file(data.beir, "corpus")
    if data.corpus is not None:
        files["corpus"] = readers.require_file(data.corpus, "corpus")
    if data.pairs is not None:
        files["pairs"] = readers.require_file(data.pairs, "pairs")
    return files


def query_files(data: DataParams) -> dict[str, Path]:
    data.check()
    if data.beir is not None:
        return {"queries": readers.beir_file(data.beir, "queries"), "qrels": readers.beir_qrels(data.beir, data.split)}
    if data.pairs is not None:
        return {"pairs": readers.require_file(data.pairs, "pairs")}
    return {"queries": readers.require_file(data.queries, "queries"), "qrels": readers.require_file(data.qrels, "qrels")}


def iter_corpus(data: DataParams, stats: dict) -> Iterator[pa.Table]:
    """The corpus as a stream of CORPUS tables; `stats` is filled as it goes (skipped_ids included).

    A plain corpus file streams in bounded memory (readers.iter_corpus). A pairs file's positives,
    with or without an extra corpus, are gathered first (load_corpus), since ids repeated between the
    two must be found across the whole of both."""
    if data.pairs is not None:
        corpus, loaded = load_corpus(data)
        stats.update(loaded)
        yield corpus
        return
    path = corpus_files(data)["corpus"]
    yield from readers.iter_corpus(path, data.id_column, data.text_column, data.title_column, stats=stats)


def load_corpus(data: DataParams) -> tuple[pa.Table, dict]:
    files = corpus_files(data)
    tables, stats = [], {}
    if data.pairs is not None:
        _, _, positives, pair_stats = readers.read_pairs(files["pairs"], data.query_column, data.positive_columns)
        tables.append(positives)
        stats.update(pair_stats)
    if "corpus" in files:
        hash_ids = data.pairs is not None and data.id_column not in readers.table_rows(files["corpus"], "corpus").columns
        corpus, corpus_stats = readers.read_corpus(files["corpus"], data.id_column, data.text_column, data.title_column,
                                                   hash_ids=hash_ids)
        tables.append(corpus)
        stats.update(corpus_stats)
    corpus = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1:  # pairs positives + extra corpus: keep the first of any repeated id
        ids = corpus.column(schema.DOC_ID).to_pylist()
        first = {}
        for i, doc_id in enumerate(ids):
            first.setdefault(doc_id, i)
        stats["extra_corpus_repeats_of_positives"] = len(ids) - len(first)
        corpus = corpus.take(sorted(first.values()))
    stats["corpus_rows"] = corpus.num_rows
    return corpus, stats


def load_queries(data: DataParams, corpus: pa.Table, skipped_doc_ids: set[str] | None = None) -> tuple[pa.Table, pa.Table, dict]:
    """Queries that have at least one positive in the corpus, and their qrels."""
    files = query_files(data)
    if data.pairs is not None:
        queries, qrels, _, stats = readers.read_pairs(files["pairs"], data.query_column, data.positive_columns)
        stats["queries_without_positives"] = stats["pairs_rows_without_positive"]
    else:
        queries, stats = readers.read_queries(files["queries"], data.query_id_column, data.query_text_column)
        skipped_query_ids = set(stats.pop("skipped_ids"))
        qrels, qrel_stats = read_qrels(
            files["qrels"],
            query_ids=set(queries.column(schema.QUERY_ID).to_pylist()),
            doc_ids=_corpus_ids_named_in(files["qrels"], corpus.column(schema.DOC_ID)),
            min_relevance=data.min_relevance,
            on_unknown=data.on_unknown_ids,
            skipped_query_ids=skipped_query_ids,
            skipped_doc_ids=skipped_doc_ids,
        )
        stats.update(qrel_stats)
    with_positives = pc.is_in(queries.column(schema.QUERY_ID), value_set=pa.array(pc.unique(qrels.column(schema.QUERY_ID))))
    stats["queries_in_file"] = queries.num_rows
    queries = queries.filter(with_positives)
    queries, qrels, stats["queries_merged_same_text"] = merge_same_text(queries, qrels)
    stats["queries"] = queries.num_rows
    stats["positives"] = qrels.num_rows
    if not queries.num_rows:
        raise _no_queries(data, files, stats)
    return queries, qrels, stats


def merge_same_text(queries: pa.Table, qrels: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """Queries whose normalized texts are equal are one query: the first id in file order, with the
    positives of all of them (the highest relevance where two label one document). Kept apart, one's
    positive would be mined as the other's negative, and a trainer that sees one anchor twice takes
    that document as both. Returns the tables and how many queries were merged into another."""
    texts = queries.column(schema.TEXT).to_pylist()
    ids = queries.column(schema.QUERY_ID).to_pylist()
    first: dict[int, str] = {}
    into: dict[str, str] = {}
    for query_id, text in zip(ids, texts, strict=True):
        kept = first.setdefault(text_hash(text), query_id)
        if kept != query_id:
            into[query_id] = kept
    if not into:
        return queries, qrels, 0
    queries = queries.filter(pc.invert(pc.is_in(queries.column(schema.QUERY_ID), value_set=pa.array(list(into)))))
    best: dict[tuple[str, str], float] = {}
    for query_id, doc_id, relevance in zip(qrels.column(schema.QUERY_ID).to_pylist(), qrels.column(schema.DOC_ID).to_pylist(),
                                           qrels.column(schema.RELEVANCE).to_pylist(), strict=True):
        key = (into.get(query_id, query_id), doc_id)
        best[key] = max(best.get(key, relevance), relevance)
    merged = pa.table({schema.QUERY_ID: [q for q, _ in best], schema.DOC_ID: [d for _, d in best],
                       schema.RELEVANCE: list(best.values())}, schema=schema.QRELS)
    return queries, merged, len(into)


def _no_queries(data: DataParams, files: dict[str, Path], stats: dict) -> HnmineError:
    """The error for labels that leave no query with a positive, naming the likely cause with its counts."""
    if data.pairs is not None:
        return HnmineError(f"no pair has both a query and a positive ({stats['pairs_rows']} rows: "
                           f"{stats['pairs_skipped_empty_query']} with an empty query, "
                           f"{stats['pairs_rows_without_positive']} without a positive)", path=files["pairs"],
                           fix="check --query-column and --positive-columns")
    lines = stats["qrels_lines"]
    if not stats["queries_in_file"]:
        return HnmineError(f"no query with text ({stats['queries_skipped_empty_text']} skipped for empty text)",
                           path=files["queries"], fix="check the queries file and --query-text-column")
    if not lines:
        return HnmineError("no qrels lines (the file is empty or holds only a header): no query has a positive",
                           path=files["qrels"], fix="point --qrels (or --beir and --split) at the labels of these queries")
    if stats["qrels_unknown_query"] == lines:
        return HnmineError(f"none of the {lines} qrels lines names a query of the queries file: all were skipped by "
                           "--on-unknown-ids skip", path=files["qrels"],
                           fix="check that the qrels and the queries belong together (the same ids, the right split)")
    causes = {"qrels_unknown_query": "name an unknown query", "qrels_unknown_doc": "name an unknown document",
              "qrels_query_skipped_empty": "name a query skipped for empty text",
              "qrels_doc_skipped_empty": "name a document skipped for empty text",
              "qrels_below_min_relevance": f"score below --min-relevance {data.min_relevance:g}"}
    counted = ", ".join(f"{stats[key]} {what}" for key, what in causes.items() if stats[key])
    return HnmineError(f"no query has a positive: of the {lines} qrels lines, {counted}", path=files["qrels"],
                       fix="check --min-relevance and that the qrels, queries and corpus belong together")


def _corpus_ids_named_in(qrels_path: Path, corpus_ids: pa.ChunkedArray | pa.Array) -> set[str]:
    """The document ids the qrels name that the corpus has: a set the size of the qrels, not of the
    corpus, found by one vectorized lookup."""
    named = list({doc_id for _, _, doc_id, _ in qrels_rows(qrels_path)})
    if not named:
        return set()
    named_array = pa.array(named, pa.string())
    if isinstance(corpus_ids, pa.ChunkedArray):
        corpus_ids = corpus_ids.combine_chunks()
    return set(named_array.filter(pc.is_in(named_array, value_set=corpus_ids)).to_pylist())
