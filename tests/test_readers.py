"""Bad input: a one-line error naming the file and row, or a counted warning where skipping is right."""

from __future__ import annotations

import pytest
from conftest import write_beir, write_jsonl

from hnmine.config import DataParams, FilterParams, IndexParams, MineParams, ScoreParams
from hnmine.errors import HnmineError
from hnmine.io import readers
from hnmine.io.qrels import read_qrels
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score

BM25 = IndexParams(retrievers=["bm25"])


def _small(adi_rows, docs=30):
    corpus, queries, qrels = adi_rows
    corpus = corpus[:docs]
    ids = {d["_id"] for d in corpus}
    qrels = [(q, d, s) for q, d, s in qrels if d in ids]
    qids = {q for q, _, _ in qrels}
    return corpus, [q for q in queries if q["_id"] in qids], qrels


def _index_and_mine(tmp_path, folder, mine_params=None, data=None):
    data = data or DataParams(beir=folder)
    index(tmp_path / "w", data, BM25, progress=False)
    return mine(tmp_path / "w", data, mine_params or MineParams(retriever="bm25", top_k=5), progress=False)


def test_reads_real_beir_folder(adi):
    corpus, stats = readers.read_corpus(adi / "corpus.jsonl.gz")
    assert corpus.num_rows == 82 and stats["corpus_skipped_empty_text"] == 0
    queries, _ = readers.read_queries(adi / "queries.jsonl.gz")
    qrels, qstats = read_qrels(adi / "qrels" / "test.tsv", set(queries["query_id"].to_pylist()),
                                       set(corpus["doc_id"].to_pylist()))
    assert qrels.num_rows == 170 and qstats["qrels_lines"] == 170


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(HnmineError, match=r"nowhere.*no corpus.jsonl"):
        index(tmp_path / "w", DataParams(beir=tmp_path / "nowhere"), BM25, progress=False)
    with pytest.raises(HnmineError, match=r"missing\.jsonl: corpus file not found"):
        readers.read_corpus(tmp_path / "missing.jsonl")
    assert not (tmp_path / "w" / "corpus.arrow").exists()


def test_missing_column_names_column_file_and_fix(tmp_path, adi_rows):
    corpus = [{"_id": d["_id"], "body": d["text"]} for d in adi_rows[0][:5]]
    path = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    with pytest.raises(HnmineError) as info:
        readers.read_corpus(path)
    message = str(info.value)
    assert "corpus.jsonl" in message and "no column 'text'" in message and "--text-column" in message
    assert "\n" not in message
    table, _ = readers.read_corpus(path, text_column="body")
    assert table.num_rows == 5


def test_duplicate_ids_name_both_lines(tmp_path, adi_rows):
    corpus = adi_rows[0][:5] + [dict(adi_rows[0][2], text="another text")]
    path = write_jsonl(tmp_path / "corpus.jsonl", corpus)
    with pytest.raises(HnmineError, match=r"corpus\.jsonl row 6: duplicate id '3' \(first at line 3\)"):
        readers.read_corpus(path)


def test_corpus_streams_in_batches_and_a_late_bad_row_leaves_no_corpus(tmp_path, adi_rows, monkeypatch):
    """Ingest reads the corpus a batch at a time. A duplicate id found batches after its first copy
    still names both rows, and the corpus.arrow begun before it never appears."""
    from hnmine.stages.index import ingest_corpus

    monkeypatch.setattr(readers, "CORPUS_BATCH_ROWS", 7)
    corpus = adi_rows[0][:40]
    stats: dict = {}
    batches = list(readers.iter_corpus(write_jsonl(tmp_path / "ok.jsonl", corpus), stats=stats))
    assert [b.num_rows for b in batches] == [7, 7, 7, 7, 7, 5] and stats["corpus_rows"] == 40
    assert sum((b.column("doc_id").to_pylist() for b in batches), []) == [str(d["_id"]) for d in corpus]

    bad = write_jsonl(tmp_path / "corpus.jsonl", corpus + [dict(corpus[2], text="another text")])
    workdir = tmp_path / "work"
    with pytest.raises(HnmineError, match=r"corpus\.jsonl row 41: duplicate id '3' \(first at line 3\)"):
        ingest_corpus(workdir, DataParams(corpus=bad, queries=bad, qrels=bad), progress=False)
    assert not (workdir / "corpus.arrow").exists()
    assert not list(workdir.glob("corpus.arrow*"))


def test_text_hash_is_stable():
    """Work dirs and exported ids keep their meaning across versions: pin one hash (full-width
    letters, no-break and em spaces, tabs, newlines, German sharp s)."""
    from hnmine.text import normalize_text, text_hash

    text = "  \uff26\uff55\uff4c\uff4c\u00a0width\tTEXT\n\u2003 Stra\u00dfe  "
    assert normalize_text(text) == "full width text strasse"
    assert text_hash(text) == 2060645524551486175


def test_empty_text_is_skipped_counted_and_listed(tmp_path, adi_rows):
    corpus, queries, qrels = _small(adi_rows)
    positive = qrels[0][1]
    blanked = {positive, corpus[-1]["_id"]}
    corpus = [dict(d, title="", text="  ") if d["_id"] in blanked else d for d in corpus]
    queries = queries + [{"_id": "empty-q", "text": ""}]
    qrels = qrels + [("empty-q", corpus[0]["_id"], 1)]
    folder = write_beir(tmp_path / "data", corpus, queries, qrels)
    result = _index_and_mine(tmp_path, folder)
    assert result.stats["queries_skipped_empty_text"] == 1
    assert result.stats["qrels_doc_skipped_empty"] == sum(1 for _, d, _ in qrels if d in blanked)
    assert result.stats["qrels_query_skipped_empty"] == 1
    from hnmine.io.files import read_table

    assert sorted(read_table(tmp_path / "w" / "corpus.skipped.arrow")["skipped"].to_pylist()) == sorted(blanked)
    assert any("empty text" in w for w in result.warnings)


@pytest.mark.parametrize("bad", ["query", "doc"])
def test_qrels_with_unknown_ids_error_or_skip(tmp_path, adi_rows, bad):
    corpus, queries, qrels = _small(adi_rows)
    extra = ("no-such-query", corpus[0]["_id"], 1) if bad == "query" else (queries[0]["_id"], "no-such-doc", 1)
    folder = write_beir(tmp_path / "data", corpus, queries, qrels + [extra])
    with pytest.raises(HnmineError) as info:
        _index_and_mine(tmp_path, folder)
    message = str(info.value)
    assert f"test.tsv row {len(qrels) + 2}" in message and "no-such" in message and "--on-unknown-ids skip" in message
    assert not (tmp_path / "w" / "candidates.arrow").exists()
    result = _index_and_mine(tmp_path, folder, data=DataParams(beir=folder, on_unknown_ids="skip"))
    assert result.stats[f"qrels_unknown_{bad}"] == 1
    assert any(f"unknown {'queries' if bad == 'query' else 'documents'}" in w for w in result.warnings)


def test_query_without_positives_is_skipped_and_counted(tmp_path, adi_rows):
    corpus, queries, qrels = _small(adi_rows)
    lonely = queries[0]["_id"]
    qrels = [(q, d, 0 if q == lonely else s) for q, d, s in qrels]
    folder = write_beir(tmp_path / "data", corpus, queries, qrels)
    result = _index_and_mine(tmp_path, folder)
    assert result.stats["queries_without_positives"] == 1
    assert result.stats["queries"] == len(queries) - 1
    assert any("queries without positives" in w for w in result.warnings)


def test_top_k_larger_than_corpus_is_clamped_and_n_larger_than_k_is_an_error(tmp_path, adi_rows):
    corpus, queries, qrels = _small(adi_rows, docs=12)
    folder = write_beir(tmp_path / "data", corpus, queries, qrels)
    result = _index_and_mine(tmp_path, folder, MineParams(retriever="bm25", top_k=500))
    assert result.stats["top_k_clamped_to"] == 12
    assert any("larger than the corpus" in w for w in result.warnings)
    score(tmp_path / "w", ScoreParams(), progress=False)
    with pytest.raises(HnmineError, match=r"scored\.arrow: num_negatives=50 is more than the \d+ candidates"):
        filter_stage(tmp_path / "w", FilterParams(num_negatives=50), progress=False)
    assert not (tmp_path / "w" / "negatives.arrow").exists()


def test_pairs_file_merges_repeated_queries_and_positives(tmp_path, adi_rows):
    corpus, queries, qrels = adi_rows
    text = {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in corpus}
    qtext = {q["_id"]: q["text"] for q in queries}
    rows = [{"query": qtext[q], "positive": text[d]} for q, d, _ in qrels]
    rows.append({"query": "  ", "positive": "orphan"})
    rows.append({"query": qtext[qrels[0][0]], "positive": ""})
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    q, r, c, stats = readers.read_pairs(path)
    assert q.num_rows == len({x for x, _, _ in qrels})
    assert r.num_rows == len(qrels)
    assert c.num_rows == len({d for _, d, _ in qrels})
    assert stats["pairs_skipped_empty_query"] == 1 and stats["pairs_rows_without_positive"] == 1


def test_jsonl_titles_are_read_when_the_first_document_has_none(tmp_path, adi_rows):
    corpus = [dict(d) for d in adi_rows[0][:5]]
    del corpus[0]["title"]
    corpus[1]["title"] = "A title of its own"
    table, _ = readers.read_corpus(write_jsonl(tmp_path / "corpus.jsonl", corpus))
    titles = table["title"].to_pylist()
    assert titles[0] == "" and titles[1] == "A title of its own"


def test_duplicate_qrels_lines_are_counted(tmp_path, adi_rows):
    corpus, queries, qrels = _small(adi_rows)
    folder = write_beir(tmp_path / "b", corpus, queries, qrels + qrels[:3])
    result = _index_and_mine(tmp_path, folder)
    assert result.stats["qrels_duplicate_lines"] == 3
    assert any("3 duplicate qrels lines" in w for w in result.warnings)


def test_repeated_texts_in_a_hashed_id_corpus_are_counted(tmp_path, adi_rows):
    rows = [{"text": d["text"]} for d in adi_rows[0][:6]]
    path = write_jsonl(tmp_path / "extra.jsonl", rows + rows[:2])
    table, stats = readers.read_corpus(path, hash_ids=True)
    assert table.num_rows == 6 and stats["corpus_repeated_text"] == 2


def test_a_headerless_qrels_whose_first_score_is_not_a_number_is_an_error(tmp_path, adi_rows):
    corpus, queries, qrels = _small(adi_rows)
    lines = [f"{q}\t{d}\t{s:g}" for q, d, s in qrels]
    path = tmp_path / "qrels.tsv"
    path.write_text("\n".join([lines[0].rsplit("\t", 1)[0] + "\tyes", *lines[1:]]) + "\n")
    with pytest.raises(HnmineError, match=r"qrels.tsv row 1: score 'yes' is not a number"):
        read_qrels(path, {q["_id"] for q in queries}, {d["_id"] for d in corpus})
    path.write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")  # a real header is still a header
    table, _ = read_qrels(path, {q["_id"] for q in queries}, {d["_id"] for d in corpus})
    assert table.num_rows == len(qrels)


def test_qrels_table_errors_name_real_columns_and_bad_scores(tmp_path, adi_rows):
    corpus, queries, qrels = _small(adi_rows)
    qids, dids = {q["_id"] for q in queries}, {d["_id"] for d in corpus}
    path = write_jsonl(tmp_path / "qrels.jsonl", [{"qid": q, "corpus-id": d, "score": s} for q, d, s in qrels])
    with pytest.raises(HnmineError) as error:
        read_qrels(path, qids, dids)
    assert "no column 'query-id'" in str(error.value) and "--qrels-query-column" not in str(error.value)
    assert "rename" in str(error.value)
    rows = [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in qrels]
    rows[2]["score"] = "relevant"
    path = write_jsonl(tmp_path / "qrels.jsonl", rows)
    with pytest.raises(HnmineError, match=r"qrels.jsonl row 3: score 'relevant' is not a number"):
        read_qrels(path, qids, dids)


def test_near_duplicate_checks_without_a_dense_index_warn_or_fail(tmp_path, adi_rows):
    folder = write_beir(tmp_path / "b", *_small(adi_rows))
    _index_and_mine(tmp_path, folder)  # BM25 only: no embeddings to compare
    score(tmp_path / "w", ScoreParams(), progress=False)
    result = filter_stage(tmp_path / "w", FilterParams(num_negatives=2), progress=False)
    assert any("near-duplicate checks skipped" in w and "--retrievers dense" in w for w in result.warnings)
    with pytest.raises(HnmineError, match=r"--near-duplicate 0.9 compares embeddings.*fix: run `hnmine index --retrievers dense`"):
        filter_stage(tmp_path / "w", FilterParams(num_negatives=2, near_duplicate=0.9), progress=False)
    assert filter_stage(tmp_path / "w", FilterParams(num_negatives=2, near_duplicate=0, duplicate_negatives=0),
                        progress=False).warnings == []


def test_score_top_0_scores_every_candidate(tmp_path, adi_rows):
    import polars as pl

    from hnmine.io.files import read_table

    folder = write_beir(tmp_path / "b", *_small(adi_rows))
    _index_and_mine(tmp_path, folder, MineParams(retriever="bm25", top_k=3))
    result = score(tmp_path / "w", ScoreParams(scorer="cross-encoder", backend="onnx", top=0), progress=False)
    table = pl.from_arrow(read_table(tmp_path / "w" / "scored.arrow"))
    assert table["ce_logit"].null_count() == 0 and result.stats["pairs"] == table.height
