"""Qrels: BEIR TSV (with a `query-id corpus-id score` header, or headerless TREC-like lines) or a
JSONL / Parquet / CSV table, read with row-level validation into `hnmine.schema.QRELS`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.io.readers import as_text, open_text, require_file, table_rows

QRELS_SCORE_HEADERS = ("score", "relevance", "rel", "label")


def qrels_rows(path: Path) -> Iterator[tuple[int, str, str, float]]:
    """BEIR qrels (TSV with a `query-id corpus-id score` header, or headerless 3/4-column TREC-like)."""
    path = require_file(path, "qrels")
    name = path.name.lower()
    if name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        with open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
                if not fields or not line.strip():
                    continue
                if len(fields) == 4:  # TREC: qid iter docid rel
                    fields = [fields[0], fields[2], fields[3]]
                if len(fields) != 3:
                    raise HnmineError(f"expected 3 fields (query-id, corpus-id, score), found {len(fields)}",
                                      path=path, row=line_no)
                try:
                    score = float(fields[2])
                except ValueError:
                    if line_no == 1 and fields[2].strip().lower() in QRELS_SCORE_HEADERS:
                        continue  # header
                    raise HnmineError(f"score '{fields[2]}' is not a number", path=path, row=line_no,
                                      fix="give every line a numeric score; a header line's third field is 'score'"
                                      ) from None
                yield line_no, fields[0].strip(), fields[1].strip(), score
        return
    rows = table_rows(path, "qrels")
    for column in ("query-id", "corpus-id"):
        if column not in rows.columns:
            raise HnmineError(f"no column '{column}' (columns: {', '.join(rows.columns) or 'none'})", path=rows.path,
                              fix="rename the qrels columns to query-id, corpus-id and score (optional, default 1)")
    for row, record in rows.records:
        raw = record.get("score", 1)
        try:
            score = float(raw)
        except (TypeError, ValueError):
            raise HnmineError(f"score '{raw}' is not a number", path=rows.path, row=row,
                              fix="give every row a numeric score, or leave the score column out (every row is 1)") from None
        yield row, as_text(record["query-id"]).strip(), as_text(record["corpus-id"]).strip(), score


def read_qrels(path: Path, query_ids: set[str], doc_ids: set[str], *, min_relevance: float = 1.0,
               on_unknown: str = "error", skipped_query_ids: set[str] | None = None,
               skipped_doc_ids: set[str] | None = None) -> tuple[pa.Table, dict]:
    """Qrels -> QRELS table of positives (relevance >= min_relevance) for the given queries and docs.

    Lines naming a query or document that the readers skipped for empty text are dropped and
    counted; lines naming ids that exist nowhere are an error (or counted, with on_unknown="skip").
    """
    qids, dids, rels = [], [], []
    stats = {"qrels_lines": 0, "qrels_below_min_relevance": 0, "qrels_unknown_query": 0, "qrels_unknown_doc": 0,
             "qrels_query_skipped_empty": 0, "qrels_doc_skipped_empty": 0, "qrels_duplicate_lines": 0}
    seen: set[tuple[str, str]] = set()
    judged_queries: set[str] = set()
    for row, qid, did, score in qrels_rows(path):
        stats["qrels_lines"] += 1
        if qid not in query_ids:
            if skipped_query_ids and qid in skipped_query_ids:
                stats["qrels_query_skipped_empty"] += 1
                continue
            if on_unknown == "error":
                raise HnmineError(f"query id '{qid}' is not in the queries file", path=path, row=row,
                                  fix="fix the id, or pass --on-unknown-ids skip to drop such lines (counted)")
            stats["qrels_unknown_query"] += 1
            continue
        judged_queries.add(qid)
        if did not in doc_ids:
            if skipped_doc_ids and did in skipped_doc_ids:
                stats["qrels_doc_skipped_empty"] += 1
                continue
            if on_unknown == "error":
                raise HnmineError(f"document id '{did}' is not in the corpus", path=path, row=row,
                                  fix="fix the id, or pass --on-unknown-ids skip to drop such lines (counted)")
            stats["qrels_unknown_doc"] += 1
            continue
        if score < min_relevance:
            stats["qrels_below_min_relevance"] += 1
            continue
        if (qid, did) in seen:
            stats["qrels_duplicate_lines"] += 1
            continue
        seen.add((qid, did))
        qids.append(qid)
        dids.append(did)
        rels.append(score)
    stats["queries_without_positives"] = len(judged_queries - set(qids))
    table = pa.table({schema.QUERY_ID: qids, schema.DOC_ID: dids, schema.RELEVANCE: rels}, schema=schema.QRELS)
    return table, stats
