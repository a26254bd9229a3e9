"""Readers for the corpus, queries, qrels and pairs, with row-level validation.

Every reader returns Arrow tables in the schemas of `hnmine.schema` plus a stats dict counting every
row it skipped. Problems a user must fix (missing, empty or unreadable file, missing column,
duplicate ids, a cell that is not text, qrels naming unknown ids) raise `HnmineError` naming the
file and row (for text formats, the line); rows that are useless but harmless (empty text) are
skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.io import columnar_corpus
from hnmine.io.userfiles import csv_reader, is_empty, open_text, reading
from hnmine.text import document_text, text_id

TABLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson", ".parquet", ".csv", ".csv.gz", ".tsv", ".tsv.gz")


@dataclass
class Rows:
    """Rows of a table file as dicts, with the 1-based location a user sees in an editor."""

    path: Path
    columns: list[str]
    unit: str  # "line" (text formats, header counted) or "row" (parquet)
    records: Iterator[tuple[int, dict[str, Any]]] = field(repr=False)
    # JSON lines have no header: `columns` are the first record's keys, and a later record may
    # have a key the first lacks (a title), so an optional column is read from every record.
    keys_vary: bool = False


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise HnmineError(f"{what} file not found", path=path, fix="check the path")
    return path


def empty_file(path: Path) -> HnmineError:
    return HnmineError("the file is empty", path=path, fix="check the path; the file needs its rows")


def _json_record(line: str, path: Path, line_no: int) -> dict:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise HnmineError(f"invalid JSON ({getattr(exc, 'msg', exc)})", path=path, row=line_no,
                          fix="repair the line") from None
    if not isinstance(record, dict):
        raise HnmineError("expected a JSON object per line", path=path, row=line_no)
    return record


def _jsonl_rows(path: Path) -> Rows:
    def records() -> Iterator[tuple[int, dict]]:
        with reading(path), open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    yield line_no, _json_record(line, path, line_no)

    # JSON lines have no header: the required columns are checked against the first record.
    first = next(records(), None)
    if first is None:
        raise empty_file(path)
    return Rows(path, list(first[1].keys()), "line", records(), keys_vary=True)


def _delimited_rows(path: Path) -> Rows:
    delimiter = "\t" if ".tsv" in path.name else ","
    with reading(path):
        handle = open_text(path)
        reader = csv_reader(handle, delimiter)
        header = next(reader, None)
    if header is None:
        handle.close()
        raise empty_file(path)

    def records() -> Iterator[tuple[int, dict]]:
        # reader.line_num counts the lines read so far: a record starts on the line after the last
        # one, and a record may span several lines (a quoted newline).
        with reading(path, lambda: reader.line_num), handle:
            start = reader.line_num + 1
            for values in reader:
                line_no, start = start, reader.line_num + 1
                if not values:
                    continue
                if len(values) != len(header):
                    raise HnmineError(
                        f"{len(values)} fields where the header has {len(header)}", path=path, row=line_no,
                        fix="quote fields that contain the delimiter",
                    )
                yield line_no, dict(zip(header, values))

    return Rows(path, header, "line", records())


def _parquet_rows(path: Path) -> Rows:
    with reading(path):
        file = pq.ParquetFile(path)
    columns = file.schema_arrow.names

    def records() -> Iterator[tuple[int, dict]]:
        row = 0
        with reading(path):
            for batch in file.iter_batches(batch_size=65536):
                for record in batch.to_pylist():
                    row += 1
                    yield row, record

    return Rows(path, columns, "row", records())


def table_rows(path: Path, what: str) -> Rows:
    path = require_file(path, what)
    if is_empty(path):
        raise empty_file(path)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson", ".json.gz")):
        return _jsonl_rows(path)
    if name.endswith(".parquet"):
        return _parquet_rows(path)
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        return _delimited_rows(path)
    raise HnmineError(f"unknown {what} file type", path=path, fix=f"use one of {', '.join(TABLE_SUFFIXES)}")


def require_columns(rows: Rows, wanted: dict[str, str]) -> None:
    for option, column in wanted.items():
        if column not in rows.columns:
            found = ", ".join(rows.columns) or "none"
            raise HnmineError(
                f"no column '{column}' (columns: {found})", path=rows.path, fix=f"name the right one with --{option}"
            )


_NOT_TEXT = ((list, "a list"), (tuple, "a list"), (dict, "an object"), ((bytes, bytearray), "bytes"))


def cell_text(value: Any, path: Path, row: int, column: str | None) -> str:
    """A cell as text: a string as it is, a number as its digits, None as "". A list, an object or
    bytes is an error, never its Python repr in the training text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    for kinds, name in _NOT_TEXT:
        if isinstance(value, kinds):
            fix = "store the column as strings" if name == "bytes" else \
                "make every cell of the column one string (join a list's parts yourself)"
            raise HnmineError(f"column '{column}' holds {name}, not text", path=path, row=row, fix=fix)
    return str(value)


class _UniqueIds:
    def __init__(self, path: Path, unit: str):
        self.path, self.unit, self.first_seen = path, unit, {}

    def add(self, key: str, row: int) -> None:
        first = self.first_seen.setdefault(key, row)
        if first != row:
            raise HnmineError(
                f"duplicate id '{key}' (first at {self.unit} {first})", path=self.path, row=row,
                fix="make ids unique, or drop the repeated row",
            )


CORPUS_BATCH_ROWS = 65536


def iter_corpus(path: Path, id_column: str = "_id", text_column: str = "text", title_column: str | None = "title",
                hash_ids: bool = False, stats: dict | None = None) -> Iterator[pa.Table]:
    """Corpus file -> CORPUS tables of CORPUS_BATCH_ROWS documents (the last one fewer), in file order,
    so a corpus of any size is read in bounded memory (only the ids seen so far are kept, for the
    duplicate check).

    Documents with no title and no text are skipped; `stats` (filled as the file is read) counts
    them and lists their ids. A problem raises HnmineError naming the row, after the tables before it
    were yielded: callers write through an atomic BatchWriter, so nothing looks finished.

    Parquet and JSON lines are read column-wise (hnmine.io.columnar_corpus) where that is exact; the
    row path below takes over from the first batch it is not, reading the file again and skipping
    the documents already yielded, and is the one that raises. `stats["corpus_reader"]` says which
    path read the file to its end: "columns" or "rows"."""
    stats = {} if stats is None else stats
    rows = table_rows(path, "corpus")
    wanted = {"text-column": text_column}
    if not hash_ids:
        wanted["id-column"] = id_column
    require_columns(rows, wanted)
    has_title = bool(title_column) and (title_column in rows.columns or rows.keys_vary)
    title_column = title_column if has_title else None
    yielded = 0
    tables = None if hash_ids else _columnar_tables(rows, id_column, title_column, text_column, stats)
    if tables is not None:
        batches = columnar_corpus.Rebatched(tables, CORPUS_BATCH_ROWS)
        for table in batches:
            yielded += table.num_rows
            stats["corpus_rows"] += table.num_rows
            yield table
        if batches.finished:
            stats["corpus_reader"] = "columns"
            if not stats["corpus_rows"]:  # an empty corpus is one empty table, not none
                yield schema.CORPUS.empty_table()
            return
        rows = table_rows(path, "corpus")  # the row path reads the file again from its start
    yield from _row_corpus(rows, id_column, text_column, title_column, hash_ids, stats, yielded)


def _columnar_tables(rows: Rows, id_column: str, title_column: str | None, text_column: str, stats: dict):
    """The columnar path's tables for Parquet and JSON lines files (a generator that returns whether
    it read the whole file); None for the other formats."""
    kind = "parquet" if rows.unit == "row" else "json lines" if rows.keys_vary else None
    if kind is None:
        return None
    _reset_corpus_stats(stats, hash_ids=False)
    return columnar_corpus.corpus_tables(kind, rows.path, id_column, title_column, text_column, CORPUS_BATCH_ROWS, stats)


def _reset_corpus_stats(stats: dict, hash_ids: bool) -> None:
    stats.update({"corpus_rows": 0, "corpus_skipped_empty_text": 0, "skipped_ids": []})
    if hash_ids:
        stats["corpus_repeated_text"] = 0


def _row_corpus(rows: Rows, id_column: str, text_column: str, title_column: str | None, hash_ids: bool, stats: dict,
                skip_documents: int) -> Iterator[pa.Table]:
    """The row path: every row's cells checked one by one. The first `skip_documents` documents were
    yielded already (by the columnar path): they are checked and counted, not yielded again."""
    _reset_corpus_stats(stats, hash_ids)
    stats["corpus_reader"] = "rows"
    ids, titles, texts = [], [], []
    seen = _UniqueIds(rows.path, rows.unit)
    skipped: list[str] = stats["skipped_ids"]
    stats["corpus_rows"] = skip_documents

    def flush() -> pa.Table:
        table = pa.table({schema.DOC_ID: ids, schema.TITLE: titles, schema.TEXT: texts}, schema=schema.CORPUS)
        stats["corpus_rows"] += table.num_rows
        ids.clear(), titles.clear(), texts.clear()
        return table

    documents = 0
    for row, raw_id, raw_title, raw_text in _corpus_fields(rows, id_column, title_column, text_column):
        title = cell_text(raw_title, rows.path, row, title_column)
        text = cell_text(raw_text, rows.path, row, text_column)
        joined = document_text(title, text)
        if not joined:
            skipped.append(cell_text(raw_id, rows.path, row, id_column).strip() if not hash_ids
                           else f"{rows.unit} {row}")
            stats["corpus_skipped_empty_text"] += 1
            continue
        doc_id = text_id(joined, "d") if hash_ids else cell_text(raw_id, rows.path, row, id_column).strip()
        if not doc_id:
            raise HnmineError(f"empty id in column '{id_column}'", path=rows.path, row=row, fix="give every row an id")
        if hash_ids:
            if doc_id in seen.first_seen:
                stats["corpus_repeated_text"] += 1  # identical texts are one document
                continue
            seen.first_seen[doc_id] = row
        else:
            seen.add(doc_id, row)
        documents += 1
        if documents <= skip_documents:
            continue
        ids.append(doc_id)
        titles.append(title.strip())
        texts.append(text.strip())
        if len(ids) == CORPUS_BATCH_ROWS:
            yield flush()
    if ids or not stats["corpus_rows"]:  # an empty corpus is one empty table, not none
        yield flush()


def _corpus_fields(rows: Rows, id_column: str, title_column: str | None, text_column: str
                   ) -> Iterator[tuple[int, Any, Any, Any]]:
    """(row, id, title, text) per corpus row. Parquet is read column-wise, only these columns, instead
    of a dict per row of every column."""
    if rows.unit != "row":
        for row, record in rows.records:
            yield row, record.get(id_column), record.get(title_column) if title_column else None, record.get(text_column)
        return
    columns = [c for c in dict.fromkeys([id_column, title_column, text_column]) if c and c in rows.columns]
    row = 0
    with reading(rows.path):
        file = pq.ParquetFile(rows.path)
        for batch in file.iter_batches(batch_size=CORPUS_BATCH_ROWS, columns=columns):
            values = {name: batch.column(name).to_pylist() for name in columns}
            nothing = [None] * batch.num_rows
            for raw_id, raw_title, raw_text in zip(values.get(id_column, nothing), values.get(title_column, nothing),
                                                   values[text_column]):
                row += 1
                yield row, raw_id, raw_title, raw_text


def read_corpus(path: Path, id_column: str = "_id", text_column: str = "text", title_column: str | None = "title",
                hash_ids: bool = False) -> tuple[pa.Table, dict]:
    """Corpus file -> one CORPUS table (iter_corpus, gathered): for corpora that fit in memory."""
    stats: dict = {}
    tables = list(iter_corpus(path, id_column, text_column, title_column, hash_ids, stats))
    return pa.concat_tables(tables), stats


def read_queries(path: Path, id_column: str = "_id", text_column: str = "text") -> tuple[pa.Table, dict]:
    """Queries file -> QUERIES table. Queries with empty text are skipped and counted."""
    rows = table_rows(path, "queries")
    require_columns(rows, {"query-id-column": id_column, "query-text-column": text_column})
    ids, texts = [], []
    seen = _UniqueIds(rows.path, rows.unit)
    skipped: list[str] = []
    for row, record in rows.records:
        query_id = cell_text(record.get(id_column), rows.path, row, id_column).strip()
        if not query_id:
            raise HnmineError(f"empty id in column '{id_column}'", path=rows.path, row=row, fix="give every row an id")
        seen.add(query_id, row)
        text = cell_text(record.get(text_column), rows.path, row, text_column).strip()
        if not text:
            skipped.append(query_id)
            continue
        ids.append(query_id)
        texts.append(text)
    table = pa.table({schema.QUERY_ID: ids, schema.TEXT: texts}, schema=schema.QUERIES)
    return table, {"queries_skipped_empty_text": len(skipped), "skipped_ids": skipped}


def read_pairs(path: Path, query_column: str = "query", positive_columns: list[str] | None = None
               ) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """Pairs file (query, positive[, more positive columns]) -> queries, qrels and the positives' corpus.

    Ids come from a hash of the normalized text, so repeated queries merge and repeated positives
    are one document.
    """
    positive_columns = positive_columns or ["positive"]
    rows = table_rows(path, "pairs")
    require_columns(rows, {"query-column": query_column})
    for column in positive_columns:
        require_columns(rows, {"positive-columns": column})
    queries: dict[str, str] = {}
    docs: dict[str, str] = {}
    qrels: dict[tuple[str, str], None] = {}
    stats = {"pairs_rows": 0, "pairs_skipped_empty_query": 0, "pairs_rows_without_positive": 0}
    for row, record in rows.records:
        stats["pairs_rows"] += 1
        query = cell_text(record.get(query_column), rows.path, row, query_column).strip()
        if not query:
            stats["pairs_skipped_empty_query"] += 1
            continue
        positives = []
        for column in positive_columns:
            value = record.get(column)
            values = value if isinstance(value, list) else [value]  # a list holds several positives
            texts = (cell_text(v, rows.path, row, column).strip() for v in values)
            positives.extend(text for text in texts if text)
        if not positives:
            stats["pairs_rows_without_positive"] += 1
            continue
        qid = text_id(query, "q")
        queries.setdefault(qid, query)
        for positive in positives:
            did = text_id(positive, "d")
            docs.setdefault(did, positive)
            qrels[(qid, did)] = None
    query_table = pa.table({schema.QUERY_ID: list(queries), schema.TEXT: list(queries.values())}, schema=schema.QUERIES)
    qrels_table = pa.table(
        {schema.QUERY_ID: [q for q, _ in qrels], schema.DOC_ID: [d for _, d in qrels], schema.RELEVANCE: [1.0] * len(qrels)},
        schema=schema.QRELS,
    )
    corpus = pa.table({schema.DOC_ID: list(docs), schema.TITLE: [""] * len(docs), schema.TEXT: list(docs.values())},
                      schema=schema.CORPUS)
    return query_table, qrels_table, corpus, stats


def beir_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise HnmineError(f"no {stem}.jsonl[.gz] in the BEIR folder", path=folder, fix="point --beir at a BEIR dataset folder")


def beir_qrels(folder: Path, split: str) -> Path:
    for name in (f"{split}.tsv", f"{split}.tsv.gz"):
        if (Path(folder) / "qrels" / name).is_file():
            return Path(folder) / "qrels" / name
    available = sorted(p.name.split(".")[0] for p in (Path(folder) / "qrels").glob("*.tsv*")) if (Path(folder) / "qrels").is_dir() else []
    raise HnmineError(f"no qrels/{split}.tsv[.gz] (splits here: {', '.join(available) or 'none'})", path=folder,
                      fix="pass --split with one of those")
