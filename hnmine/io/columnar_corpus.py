"""The corpus read column-wise with Arrow: the fast path of `readers.iter_corpus`.

The row path (`readers._row_corpus`) is the reference: a Python step per row that checks every cell,
strips it, skips documents with no text and checks ids are unique, raising an error that names the
row. With the text hashes in worker processes, that loop is most of the reading process's work
(docs/benchmarks.md, "Host costs"). This path does the same work on whole
Arrow columns for the inputs where it can be exact: Parquet and JSON lines files whose id, title and
text cells are strings (integer ids too), nulls and absent keys read as "". On anything it cannot
decide exactly (another type, an empty or repeated id, a JSON line Arrow parses differently from
`json.loads`, a file Arrow cannot read) it stops before the batch in question and the caller hands
over to the row path, which reads the file again from the start, skips the documents already
yielded, and decides (and names the row of any error). So both paths yield the same documents in
the same order, and every user-facing error comes from the row path.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from hnmine import schema
from hnmine.io.userfiles import open_binary

# The characters str.strip() removes (str.isspace over every code point; a test checks the list):
# Arrow's own trim of whitespace uses another definition, so the set is given explicitly.
PYTHON_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x20\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                     "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
JSON_CHUNK_BYTES = 16 << 20  # raw JSON lines parsed per Arrow call (whole lines)
JSON_BLOCK_BYTES = 1 << 20  # Arrow's parallel blocks within a chunk; a longer line makes the chunk one block
LONGEST_LINE_BYTES = 1 << 28  # a "line" longer than this (a file of lone \r line ends) is left to the row path


class NeedsRowPath(Exception):
    """The batch at hand needs the row path's per-row decisions."""


def _text_column(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as strings exactly as cell_text makes them, then stripped as the row path strips
    them: strings as they are, integers as their digits, nulls as ""; any other type needs the row
    path (which reads numbers of other kinds, or raises on lists and bytes)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    if pa.types.is_null(kind):
        array = pa.nulls(len(array), pa.string())
    elif pa.types.is_integer(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        array = pc.cast(array, pa.string())
    elif not pa.types.is_string(kind):
        raise NeedsRowPath(f"a column of type {kind}")
    array.validate(full=True)  # Arrow's JSON and Parquet readers pass bytes that are not UTF-8 through
    if array.null_count:
        array = pc.fill_null(array, "")
    return pc.utf8_trim(array, characters=PYTHON_WHITESPACE)


class ColumnarCorpus:
    """Turns column batches (ids, titles or None, texts) into CORPUS tables as the row path would:
    documents with no title and no text skipped and counted in `stats`, ids checked unique across
    batches."""

    def __init__(self, stats: dict):
        self.stats = stats
        self.seen: set[str] = set()

    def table(self, ids, titles, texts) -> pa.Table:
        texts = _text_column(texts)
        titles = _text_column(titles) if titles is not None else pa.array([""] * len(texts), pa.string())
        ids = _text_column(ids)
        empty = pc.and_(pc.equal(pc.utf8_length(titles), 0), pc.equal(pc.utf8_length(texts), 0))
        keep = pc.invert(empty)
        kept_ids = ids.filter(keep)
        if pc.any(pc.equal(pc.utf8_length(kept_ids), 0)).as_py():
            raise NeedsRowPath("an empty id")
        id_list = kept_ids.to_pylist()
        if len(set(id_list)) != len(id_list) or not self.seen.isdisjoint(id_list):
            raise NeedsRowPath("a repeated id")
        self.seen.update(id_list)
        if empty.true_count:
            self.stats["skipped_ids"].extend(ids.filter(empty).to_pylist())
            self.stats["corpus_skipped_empty_text"] += empty.true_count
        return pa.table({schema.DOC_ID: kept_ids, schema.TITLE: titles.filter(keep), schema.TEXT: texts.filter(keep)},
                        schema=schema.CORPUS)


class Rebatched:
    """Tables of exactly `rows` rows (the last fewer) from tables of any size; `finished` says
    whether the source generator returned True (read to its end) once iteration stops. Rows held
    back when the source stops short are not yielded."""

    def __init__(self, tables, rows: int):
        self.tables, self.rows, self.finished = tables, rows, False

    def __iter__(self) -> Iterator[pa.Table]:
        held: list[pa.Table] = []
        count = 0
        while True:
            try:
                table = next(self.tables)
            except StopIteration as stop:
                self.finished = bool(stop.value)
                break
            held.append(table)
            count += table.num_rows
            while count >= self.rows:
                joined = pa.concat_tables(held)
                yield joined.slice(0, self.rows).combine_chunks()
                held, count = [joined.slice(self.rows)], count - self.rows
        if self.finished and count:
            yield pa.concat_tables(held).combine_chunks()


def parquet_batches(path: Path, id_column: str, title_column: str | None, text_column: str, batch_rows: int,
                    corpus: ColumnarCorpus) -> Generator[pa.Table, None, bool]:
    """CORPUS tables of a Parquet file; returns True when the whole file was read, False where the
    row path must take over (nothing of the batch in question was yielded)."""
    columns = [c for c in dict.fromkeys([id_column, title_column, text_column]) if c]
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)
        for batch in batches:
            title = batch.column(title_column) if title_column in batch.schema.names else None
            table = corpus.table(batch.column(id_column), title, batch.column(text_column))
            if table.num_rows:
                yield table
    except (NeedsRowPath, pa.ArrowException, OSError, ValueError):
        return False
    return True


def _json_chunks(path: Path) -> Generator[bytes, None, None]:
    """The file's bytes in pieces of whole lines (a leading byte-order mark dropped, as open_text does)."""
    with open_binary(path) as handle:
        rest = b""
        first = True
        while True:
            block = handle.read(JSON_CHUNK_BYTES)
            if first:
                block, first = block.removeprefix(b"\xef\xbb\xbf"), False
            if not block:
                break
            block = rest + block
            end = block.rfind(b"\n") + 1
            if end == 0:
                if len(block) > LONGEST_LINE_BYTES:
                    raise NeedsRowPath("no line end")
                rest = block
                continue
            rest = block[end:]
            yield block[:end]
        if rest:
            yield rest


def json_lines_batches(path: Path, id_column: str, title_column: str | None, text_column: str,
                       corpus: ColumnarCorpus) -> Generator[pa.Table, None, bool]:
    """CORPUS tables of a JSON lines file, parsed by Arrow with the three columns as strings and every
    other key ignored. Arrow and `json.loads` differ on a few inputs (two objects on one line, a
    repeated key, a number in a string column); each of them either makes Arrow fail or changes the
    count of records against the lines that are not blank, and hands the file to the row path. The
    one way round it does not catch is JSON that `json.loads` refuses inside a key hnmine does not
    read (nesting deeper than Python's recursion limit, an integer of over 4,300 digits): such a
    line is read here, where the row path would call it invalid."""
    fields = [pa.field(c, pa.string()) for c in dict.fromkeys([id_column, title_column, text_column]) if c]
    options = pa_json.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
    try:
        for chunk in _json_chunks(path):
            lines = chunk.split(b"\n")
            records = sum(map(bool, map(bytes.strip, lines)))  # the lines json.loads is given
            if not records:
                continue
            read = pa_json.ReadOptions(block_size=max(JSON_BLOCK_BYTES, max(map(len, lines)) + 1))
            table = pa_json.read_json(io.BytesIO(chunk), read_options=read, parse_options=options)
            if table.num_rows != records:
                return False
            title = table.column(title_column) if title_column else None
            out = corpus.table(table.column(id_column), title, table.column(text_column))
            if out.num_rows:
                yield out
    except (NeedsRowPath, pa.ArrowException, OSError, EOFError, zlib.error, ValueError):
        return False
    return True


def corpus_tables(kind: str, path: Path, id_column: str, title_column: str | None, text_column: str, batch_rows: int,
                  stats: dict) -> Generator[pa.Table, None, bool]:
    """The tables of a "parquet" or "json lines" corpus file; the generator returns whether it read
    the whole file (False: the row path takes over)."""
    corpus = ColumnarCorpus(stats)
    if kind == "parquet":
        return parquet_batches(path, id_column, title_column, text_column, batch_rows, corpus)
    return json_lines_batches(path, id_column, title_column, text_column, corpus)
