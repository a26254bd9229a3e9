"""The columnar corpus path (hnmine.io.columnar_corpus) against the row path it speeds up: the same
documents, batches and counts on every shared set, as JSON lines, gzip and Parquet; and where it
cannot be exact (a repeated or empty id, a number where text goes, two objects on one line, a
corrupt file), the row path takes over and decides exactly as it would alone, errors included."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATA, read_jsonl

from hnmine.errors import HnmineError
from hnmine.io import columnar_corpus, readers

SETS = sorted(p.name for p in DATA.iterdir() if (p / "corpus.jsonl.gz").exists())


def _row_path(path, title_column="title"):
    """The reference: the row path alone, over the whole file."""
    stats: dict = {}
    rows = readers.table_rows(path, "corpus")
    title = title_column if title_column and (title_column in rows.columns or rows.keys_vary) else None
    return list(readers._row_corpus(rows, "_id", "text", title, False, stats, 0)), stats


def _both(path):
    """(tables and stats of iter_corpus, the same of the row path alone, which path read to the end)."""
    stats: dict = {}
    tables = list(readers.iter_corpus(path, stats=stats))
    return (tables, stats), _row_path(path), stats["corpus_reader"]


def _same(fast, reference):
    (tables, stats), (ref_tables, ref_stats) = fast, reference
    assert [t.num_rows for t in tables] == [t.num_rows for t in ref_tables]
    assert all(a.equals(b) for a, b in zip(tables, ref_tables))
    assert stats | {"corpus_reader": "rows"} == ref_stats


@pytest.mark.parametrize("name", SETS)
def test_every_shared_corpus_reads_the_same_column_wise_as_row_by_row(name, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CORPUS_BATCH_ROWS", 1000)  # several batches on every set
    monkeypatch.setattr(columnar_corpus, "JSON_CHUNK_BYTES", 100_000)  # chunks that cut the batches
    path = DATA / name / "corpus.jsonl.gz"
    fast, reference, reader = _both(path)
    assert reader == "columns"  # the columnar path read the whole file
    _same(fast, reference)
    docs = read_jsonl(path)
    table = pa.table({"_id": [d["_id"] for d in docs], "title": [d.get("title") for d in docs],
                      "text": [d["text"] for d in docs]})
    pq.write_table(table, tmp_path / "corpus.parquet", row_group_size=700)
    fast, reference, reader = _both(tmp_path / "corpus.parquet")
    assert reader == "columns"
    _same(fast, reference)


def _write_lines(path, records, raw=None):
    lines = [json.dumps(r) for r in records]
    for at, line in (raw or {}).items():
        lines[at] = line
    path.write_text("\n".join(lines) + "\n")
    return path


def _docs(n=40):
    return [{"_id": f"d{i}", "title": f"Title {i}" if i % 3 else "", "text": f"text of document {i}"} for i in range(n)]


def test_whitespace_nulls_and_empty_documents_are_read_as_the_row_path_reads_them(tmp_path, monkeypatch):
    monkeypatch.setattr(columnar_corpus, "JSON_CHUNK_BYTES", 256)
    docs = _docs()
    docs[2]["text"] = "a line longer than a chunk " * 40
    docs[3]["text"] = "\u3000\x1c padded with Python's whitespace\u2029\x85 "
    docs[4] = {"_id": " d4\t", "title": None, "text": "\u00a0"}  # no text once stripped: skipped, its id listed
    docs[5] = {"_id": None, "text": ""}  # skipped with an empty id, as the row path lists it
    docs[6] = {"_id": "d6", "text": "no title key"}
    docs[7]["title"] = "\u200b zero width is not whitespace"
    fast, reference, reader = _both(_write_lines(tmp_path / "corpus.jsonl", docs))
    assert reader == "columns"
    _same(fast, reference)
    assert fast[1]["corpus_skipped_empty_text"] == 2 and fast[1]["skipped_ids"] == ["d4", ""]


def test_the_stripped_characters_are_pythons_whitespace():
    assert columnar_corpus.PYTHON_WHITESPACE == "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def test_integer_ids_in_parquet_are_their_digits(tmp_path, monkeypatch):
    table = pa.table({"_id": pa.array(range(50), pa.int64()), "text": [f"doc {i}" for i in range(50)]})
    pq.write_table(table, tmp_path / "corpus.parquet")
    fast, reference, reader = _both(tmp_path / "corpus.parquet")
    assert reader == "columns"
    _same(fast, reference)


@pytest.mark.parametrize("case", ["number id", "float title", "two objects on a line", "repeated key"])
def test_what_arrow_reads_differently_goes_to_the_row_path_and_reads_the_same(case, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CORPUS_BATCH_ROWS", 8)
    monkeypatch.setattr(columnar_corpus, "JSON_CHUNK_BYTES", 400)
    docs = _docs()
    raw = {}
    if case == "number id":
        docs[25]["_id"] = 25
    elif case == "float title":
        docs[25]["title"] = 2.5
    elif case == "two objects on a line":
        raw = {25: json.dumps(docs[25]) + " " + json.dumps(docs[26])}
    else:
        raw = {25: '{"_id": "x", "_id": "d25", "text": "last id wins in json.loads"}'}
    path = _write_lines(tmp_path / "corpus.jsonl", docs, raw)
    if case == "two objects on a line":  # json.loads rejects the line: the row path names it
        with pytest.raises(HnmineError, match="row 26: invalid JSON") as error:
            list(readers.iter_corpus(path))
        with pytest.raises(HnmineError) as reference:
            _row_path(path)
        assert str(error.value) == str(reference.value)
        return
    fast, reference, reader = _both(path)
    assert reader == "rows"
    assert len(fast[0]) > 1  # batches before the hand-over came from the columnar path
    _same(fast, reference)


@pytest.mark.parametrize("late", [True, False])
def test_a_repeated_id_is_the_row_paths_error_after_the_batches_before_it(late, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CORPUS_BATCH_ROWS", 8)
    docs = _docs()
    docs[30]["_id"] = "d2" if late else "d29"  # in an earlier batch, or the same one
    for path in (_write_lines(tmp_path / "corpus.jsonl", docs), tmp_path / "corpus.parquet"):
        if path.suffix == ".parquet":
            pq.write_table(pa.Table.from_pylist(docs), path)
        yielded = []
        with pytest.raises(HnmineError) as error:
            for table in readers.iter_corpus(path):
                yielded.append(table)
        unit = "row" if path.suffix == ".parquet" else "line"
        first = 3 if late else 30
        assert str(error.value) == str(HnmineError(
            f"duplicate id '{docs[30]['_id']}' (first at {unit} {first})", path=path, row=31,
            fix="make ids unique, or drop the repeated row"))
        assert sum(t.num_rows for t in yielded) == 24  # the whole batches before the repeat, once each
        assert pa.concat_tables(yielded).column("doc_id").to_pylist() == [f"d{i}" for i in range(24)]


def test_bytes_that_are_not_utf8_are_the_row_paths_error(tmp_path):
    path = _write_lines(tmp_path / "corpus.jsonl", _docs(1000))
    lines = path.read_bytes().split(b"\n")
    # past the first line's read (which decodes a block of the file); Arrow's JSON reader passes these through
    lines[900] = lines[900].replace(b"text of", b"text \xff\xfe of")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(HnmineError, match="row 901: not UTF-8 text"):
        list(readers.iter_corpus(path))


def test_a_file_of_lone_carriage_returns_is_read_by_the_row_path(tmp_path, monkeypatch):
    monkeypatch.setattr(columnar_corpus, "LONGEST_LINE_BYTES", 100)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\r".join(json.dumps(d) for d in _docs()) + "\r", newline="")
    fast, reference, reader = _both(path)
    assert reader == "rows"
    _same(fast, reference)
    assert fast[1]["corpus_rows"] == 40


def test_an_empty_id_and_a_corrupt_gzip_are_the_row_paths_errors(tmp_path):
    docs = _docs()
    docs[12]["_id"] = "  "
    path = _write_lines(tmp_path / "corpus.jsonl", docs)
    with pytest.raises(HnmineError, match="row 13: empty id in column '_id'"):
        list(readers.iter_corpus(path))
    packed = gzip.compress(path.read_bytes())
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(packed[:len(packed) // 2] + bytes(16) + packed[len(packed) // 2 + 16:])
    with pytest.raises(HnmineError, match="gzip"):
        list(readers.iter_corpus(corrupt))
