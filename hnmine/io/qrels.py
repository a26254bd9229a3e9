"""Qrels: BEIR TSV (with a `query-id corpus-id score` header, or headerless), TREC lines
(`query-id iteration corpus-id score`), or a JSONL / Parquet / CSV table, read with row-level
validation into `hnmine.schema.QRELS`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.io.readers import cell_text, empty_file, require_file, table_rows
from hnmine.io.userfiles import open_text, reading

# A first line is a header when its fields are these names (lowercase, without '-', '_' and
# spaces); any other line must hold a numeric score, so a headerless file never loses line 1.
QRELS_QUERY_HEADERS = ("queryid", "query", "qid", "qryid", "topic", "topicid")
QRELS_DOC_HEADERS = ("corpusid", "docid", "documentid", "doc", "document", "docno", "did", "pid", "passageid",
                     "passage")
QRELS_SCORE_HEADERS = ("score", "relevance", "rel", "label")
TSV_FORMATS = {3: "query-id, corpus-id, score", 4: "TREC: query-id, iteration, corpus-id, score"}


def _header_word(field: str) -> str:
    return re.sub(r"[-_\s]", "", field.lower())


def _is_header(fields: list[str]) -> bool:
    return (_header_word(fields[0]) in QRELS_QUERY_HEADERS and _header_word(fields[1]) in QRELS_DOC_HEADERS
            and _header_word(fields[2]) in QRELS_SCORE_HEADERS)


def _score(raw: object, path: Path, row: int, fix: str) -> float:
    """A finite float: nan or inf would pass (or fail) every relevance threshold silently."""
    try:
        score = float(raw)  # type: ignore[arg-type]
    except OverflowError:
        score = math.inf
    except (TypeError, ValueError):
        raise HnmineError(f"score '{raw}' is not a number", path=path, row=row, fix=fix) from None
    if not math.isfinite(score):
        raise HnmineError(f"score '{raw}' is not a finite number", path=path, row=row, fix=fix)
    return score


def _tsv_rows(path: Path) -> Iterator[tuple[int, str, str, float]]:
    """The first line decides the format, BEIR (3 fields) or TREC (4), and whether it is a header;
    every other line must have as many fields."""
    width = first = None
    with reading(path), open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            if width is None:
                if len(fields) not in TSV_FORMATS:
                    raise HnmineError(f"expected 3 fields (query-id, corpus-id, score) or 4 (TREC), found {len(fields)}",
                                      path=path, row=line_no, fix="write query-id, corpus-id and score on each line")
                width, first = len(fields), line_no
            elif len(fields) != width:
                raise HnmineError(f"{len(fields)} fields where line {first} has {width} ({TSV_FORMATS[width]})",
                                  path=path, row=line_no,
                                  fix="one format per file: every line BEIR (3 fields) or every line TREC (4)")
            if width == 4:
                fields = [fields[0], fields[2], fields[3]]
            if line_no == first and _is_header(fields):
                continue
            score = _score(fields[2], path, line_no,
                           fix="give every line a numeric score; a header line is query-id, corpus-id, score")
            yield line_no, fields[0].strip(), fields[1].strip(), score
    if width is None:
        raise empty_file(path)


def qrels_rows(path: Path) -> Iterator[tuple[int, str, str, float]]:
    """(line or row, query id, document id, score) of every qrels line."""
    path = require_file(path, "qrels")
    name = path.name.lower()
    if name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        yield from _tsv_rows(path)
        return
    rows = table_rows(path, "qrels")
    for column in ("query-id", "corpus-id"):
        if column not in rows.columns:
            raise HnmineError(f"no column '{column}' (columns: {', '.join(rows.columns) or 'none'})", path=rows.path,
                              fix="rename the qrels columns to query-id, corpus-id and score (optional, default 1)")
    for row, record in rows.records:
        ids = []
        for column in ("query-id", "corpus-id"):
            if record.get(column) is None:
                raise HnmineError(f"no '{column}' in this row", path=rows.path, row=row, fix=f"give every row a {column}")
            ids.append(cell_text(record[column], rows.path, row, column).strip())
        score = _score(record.get("score", 1), rows.path, row,
                       fix="give every row a numeric score, or leave the score column out (every row is 1)")
        yield row, ids[0], ids[1], score


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
