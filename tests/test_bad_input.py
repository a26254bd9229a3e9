"""Bad user files never become wrong data or a traceback: each is one HnmineError line that names
the file and, where there is one, the line (through the CLI: that line on stderr, exit code 2)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from test_cli import hnmine

from hnmine.errors import HnmineError
from hnmine.io import readers
from hnmine.io.qrels import qrels_rows, read_qrels


def _docs(adi_rows, n=5) -> list[dict]:
    return [{"_id": d["_id"], "title": d["title"], "text": d["text"]} for d in adi_rows[0][:n]]


def _one_line_error(result, *expected: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _index(tmp_path: Path, corpus: Path):
    return hnmine("index", "--workdir", str(tmp_path / "w"), "-q", "--corpus", str(corpus), "--retrievers", "bm25")


# 4. a list or dict cell is an error, not its Python repr in the training text


@pytest.mark.parametrize("cell", [["first part", "second part"], {"text": "nested"}])
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_a_list_or_dict_text_cell_is_an_error_naming_file_row_and_column(tmp_path, adi_rows, cell, suffix):
    docs = _docs(adi_rows)
    docs[2]["text"] = cell
    path = tmp_path / f"corpus.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, docs)
        row = 3
    else:  # an Arrow column holds one type: every row a list (or a struct)
        pq.write_table(pa.table({"_id": [d["_id"] for d in docs], "text": [cell] * len(docs)}), path)
        row = 1
    kind = "a list" if isinstance(cell, list) else "an object"
    with pytest.raises(HnmineError, match=rf"corpus\.{suffix} row {row}: column 'text' holds {kind}, not text"):
        readers.read_corpus(path)


def test_list_cells_in_queries_ids_and_pairs_are_errors_but_a_list_of_positives_is_still_many(tmp_path, adi_rows):
    queries = [{"_id": "q1", "text": "a query"}, {"_id": ["q2"], "text": "another"}]
    with pytest.raises(HnmineError, match=r"queries\.jsonl row 2: column '_id' holds a list"):
        readers.read_queries(write_jsonl(tmp_path / "queries.jsonl", queries))
    pairs = [{"query": "a query", "positive": ["one text", "another text"]}]
    _, qrels, _, _ = readers.read_pairs(write_jsonl(tmp_path / "pairs.jsonl", pairs))
    assert qrels.num_rows == 2
    pairs.append({"query": "a query", "positive": [{"text": "nested"}]})
    with pytest.raises(HnmineError, match=r"pairs\.jsonl row 2: column 'positive' holds an object"):
        readers.read_pairs(write_jsonl(tmp_path / "pairs.jsonl", pairs))
    pairs[-1] = {"query": ["a", "list"], "positive": "text"}
    with pytest.raises(HnmineError, match=r"pairs\.jsonl row 2: column 'query' holds a list"):
        readers.read_pairs(write_jsonl(tmp_path / "pairs.jsonl", pairs))


def test_a_list_text_cell_through_the_cli_is_one_line(tmp_path, adi_rows):
    docs = _docs(adi_rows)
    docs[1]["text"] = ["first part", "second part"]
    result = _index(tmp_path, write_jsonl(tmp_path / "corpus.jsonl", docs))
    _one_line_error(result, "corpus.jsonl row 2: column 'text' holds a list")


# 4. a qrels relevance of nan is not a positive


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf"])
def test_a_non_finite_qrels_score_is_an_error(tmp_path, bad):
    path = tmp_path / "qrels.tsv"
    path.write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t{bad}\n")
    with pytest.raises(HnmineError, match=rf"qrels\.tsv row 3: score '{bad}' is not a finite number"):
        list(qrels_rows(path))
    path = tmp_path / "qrels.jsonl"
    path.write_text('{"query-id": "q1", "corpus-id": "d1", "score": 1}\n'
                    f'{{"query-id": "q1", "corpus-id": "d2", "score": {"NaN" if bad == "nan" else json.dumps(bad)}}}\n')
    with pytest.raises(HnmineError, match=r"qrels\.jsonl row 2: score '\w+' is not a finite number"):
        read_qrels(path, {"q1"}, {"d1", "d2"})


# 4. TSV and TREC lines never mix: the first line decides the format


def test_a_four_field_line_in_a_three_column_qrels_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t0\td2\t1\n")
    with pytest.raises(HnmineError, match=r"qrels\.tsv row 3: 4 fields where line 1 has 3"):
        list(qrels_rows(path))
    path.write_text("q1 0 d1 1\nq1 d2 1\n")  # TREC, then a three-field line
    with pytest.raises(HnmineError, match=r"qrels\.tsv row 2: 3 fields where line 1 has 4"):
        list(qrels_rows(path))
    path.write_text("q1 0 d1 1\nq1 0 d2 2\n")  # all TREC still reads
    assert [r[1:] for r in qrels_rows(path)] == [("q1", "d1", 1.0), ("q1", "d2", 2.0)]


# 4. a headerless qrels never loses its first line to header detection


@pytest.mark.parametrize("first", ["q1\td1\tlabel", "1\t17\tscore", "q1 0 d1 rel"])
def test_a_headerless_qrels_whose_first_score_is_a_header_word_is_an_error(tmp_path, first):
    path = tmp_path / "qrels.tsv"
    second = "q2 0 d2 1" if first.count(" ") == 3 else "q2\td2\t1"
    path.write_text(f"{first}\n{second}\n")
    with pytest.raises(HnmineError, match=r"qrels\.tsv row 1: score '\w+' is not a number"):
        list(qrels_rows(path))


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore", "qid\tdocid\tlabel", "query_id\tdoc_id\trelevance",
                                    "qid iter docno rel", "topic\tpassage-id\trel"])
def test_real_qrels_headers_are_still_headers(tmp_path, header):
    path = tmp_path / "qrels.tsv"
    line = "q1 0 d1 1" if header.count(" ") == 3 else "q1\td1\t1"
    path.write_text(f"{header}\n{line}\n")
    assert [r[1:] for r in qrels_rows(path)] == [("q1", "d1", 1.0)]


# 8. OS, decoding, compression, CSV, Arrow and JSON errors are one line, not a traceback


def test_non_utf8_bytes_are_one_line_naming_the_line(tmp_path, adi_rows):
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps(d).encode() for d in _docs(adi_rows)]
    lines[3] = b'{"_id": "x", "text": "caf\xe9 au lait"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(HnmineError, match=r"corpus\.jsonl row 4: not UTF-8 text"):
        readers.read_corpus(path)
    _one_line_error(_index(tmp_path, path), "corpus.jsonl row 4: not UTF-8 text", "fix:")


def test_parquet_bytes_and_invalid_utf8_strings_are_errors_without_a_made_up_line(tmp_path):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"_id": ["1", "2"], "text": pa.array([b"ok", b"cafe"], pa.binary())}), path)
    with pytest.raises(HnmineError, match=r"corpus\.parquet row 1: column 'text' holds bytes, not text"):
        readers.read_corpus(path)
    invalid = pa.array([b"ok", b"caf\xe9"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"_id": ["1", "2"], "text": invalid}), path)
    with pytest.raises(HnmineError, match=r"corpus\.parquet: not UTF-8 text \(byte 0xe9\)"):
        readers.read_corpus(path)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_truncated_or_corrupt_gzip_is_one_line_not_aborted(tmp_path, adi_rows, damage):
    data = bytearray(gzip.compress("".join(json.dumps(d) + "\n" for d in adi_rows[0]).encode()))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(bytes(data))
    line = _one_line_error(_index(tmp_path, path), "corpus.jsonl.gz: cannot decompress it as gzip (")
    assert "Aborted" not in line


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("corpus.jsonl.gz", b'{"_id": "1", "text": "not compressed"}\n', "corpus.jsonl.gz: cannot decompress it as gzip (Not"),
    ("corpus.parquet", b"PAR1 these bytes are no parquet file", "corpus.parquet: cannot read it as Parquet"),
    ("corpus.csv", b'_id,text\n1,"over\ntwo lines"\n2,caf\xe9\n', "corpus.csv row 4: not UTF-8 text (byte 0xe9)"),
])
def test_compression_arrow_and_csv_errors_are_one_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    _one_line_error(_index(tmp_path, path), expected)


def test_a_csv_field_of_a_megabyte_is_read(tmp_path):
    text = "word " * 200_000
    path = tmp_path / "corpus.csv"
    path.write_text(f'_id,text\n1,"{text}"\n2,short\n')
    table, _ = readers.read_corpus(path)
    assert table["text"].to_pylist() == [text.strip(), "short"]


def test_jsonl_qrels_errors_are_one_line(tmp_path):
    path = tmp_path / "qrels.jsonl"
    path.write_text('{"query-id": "q1", "corpus-id": "d1", "score": 1}\n'
                    '{"query-id": "q1", "corpus-id": "d2", "score": 1' + "0" * 400 + "}\n")
    with pytest.raises(HnmineError, match=r"qrels\.jsonl row 2: score '10+' is not a finite number"):
        list(qrels_rows(path))
    path.write_text('{"query-id": "q1", "corpus-id": "d1", "score": 1}\n{"corpus-id": "d2", "score": 1}\n')
    with pytest.raises(HnmineError, match=r"qrels\.jsonl row 2: no 'query-id'"):
        list(qrels_rows(path))


# 11. a byte-order mark is read as one, an empty file says so, CSV errors name the line


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.csv", "corpus.jsonl.gz"])
def test_a_byte_order_mark_is_stripped(tmp_path, adi_rows, name):
    docs = _docs(adi_rows)
    if name.endswith(".csv"):
        text = "_id,text\n" + "".join(f"{d['_id']},\"{d['text']}\"\n" for d in docs)
    else:
        text = "".join(json.dumps(d) + "\n" for d in docs)
    raw = b"\xef\xbb\xbf" + text.encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    table, _ = readers.read_corpus(path)
    assert table["doc_id"].to_pylist() == [d["_id"] for d in docs]
    qrels = tmp_path / "qrels.tsv"
    qrels.write_bytes(b"\xef\xbb\xbfq1\td1\t1\n")
    assert [r[1:] for r in qrels_rows(qrels)] == [("q1", "d1", 1.0)]


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.csv", "corpus.parquet", "corpus.jsonl.gz"])
def test_an_empty_file_says_it_is_empty(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"\n\n") if name.endswith(".gz") else b"")
    with pytest.raises(HnmineError) as info:
        readers.read_corpus(path)
    assert f"{name}: the file is empty" in str(info.value) and "--text-column" not in str(info.value)
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("")
    with pytest.raises(HnmineError, match=r"qrels\.tsv: the file is empty"):
        list(qrels_rows(qrels))


def test_csv_errors_name_the_line_not_the_record(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text('_id,text\n1,"a text\nover\nthree lines"\n\n2,one,too many\n')
    with pytest.raises(HnmineError, match=r"corpus\.csv row 6: 3 fields where the header has 2"):
        readers.read_corpus(path)
