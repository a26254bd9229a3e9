"""Ingest hashes a corpus of several batches in worker processes: the same hashes, in the same
order, as hashing in place; a corpus of one partial batch starts no pool; a bad row in a later
batch still fails the stage with its row named and leaves no corpus.arrow."""

from __future__ import annotations

import json

import pyarrow.ipc as ipc
import pytest
from conftest import dataset, read_jsonl

from hnmine.config import DataParams
from hnmine.errors import HnmineError
from hnmine.io import readers, text_hashes
from hnmine.stages.index import ingest_corpus
from hnmine.text import document_text, text_hash


def _corpus(work):
    with ipc.open_file(work / "corpus.arrow") as reader:
        return reader.read_all()


def test_hashes_from_the_worker_pool_are_the_in_place_hashes(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CORPUS_BATCH_ROWS", 500)  # nfcorpus' 3,633 documents: 8 batches
    monkeypatch.setattr(text_hashes, "worker_count", lambda: 2)  # a pool on any machine, one core too
    result = ingest_corpus(tmp_path / "work", DataParams(beir=dataset("nfcorpus")), progress=False)
    assert result.stats["text_hash_processes"] == 2
    corpus = _corpus(tmp_path / "work")
    docs = read_jsonl(dataset("nfcorpus") / "corpus.jsonl.gz")
    assert corpus.column("doc_id").to_pylist() == [str(d["_id"]) for d in docs]
    reference = [text_hash(document_text(title, text))
                 for title, text in zip(corpus.column("title").to_pylist(), corpus.column("text").to_pylist())]
    assert corpus.column("text_hash").to_pylist() == reference


def test_a_corpus_of_one_partial_batch_is_hashed_in_place(tmp_path):
    result = ingest_corpus(tmp_path / "work", DataParams(beir=dataset("adi")), progress=False)
    assert result.stats["text_hash_processes"] == 0


def test_a_bad_row_in_a_later_batch_fails_with_its_row_and_no_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CORPUS_BATCH_ROWS", 200)
    docs = read_jsonl(dataset("nfcorpus") / "corpus.jsonl.gz")[:1000]
    lines = [json.dumps(d) for d in docs]
    lines[700] = "{not json"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(HnmineError, match="row 701|line 701"):
        ingest_corpus(tmp_path / "work", DataParams(corpus=corpus, queries=corpus, qrels=corpus), progress=False)
    assert not (tmp_path / "work" / "corpus.arrow").exists()
