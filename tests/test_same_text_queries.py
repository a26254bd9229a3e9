"""Queries that share a text share their positives: scifact train's queries 89 and 90 have one text
and different positives, and neither's positive may ever be the other's negative."""

from __future__ import annotations

import polars as pl
from conftest import MODEL, dataset, read_jsonl, write_beir

from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score


def _scifact_slice(folder):
    """Queries 89 and 90 (one text; 89: docs 7521113 and 22406695, 90: 22406695), ten other train
    queries, their positives and 60 more documents: a small real BEIR folder."""
    scifact = dataset("scifact")
    qrels = [line.split("\t") for line in (scifact / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    wanted = ["89", "90", *sorted({q for q, _, _ in qrels} - {"89", "90"})[:10]]
    labels = [(q, d, float(s)) for q, d, s in qrels if q in wanted]
    queries = [q for q in read_jsonl(scifact / "queries.jsonl.gz") if q["_id"] in wanted]
    positives = {d for _, d, _ in labels}
    corpus = read_jsonl(scifact / "corpus.jsonl.gz")
    docs = [d for d in corpus if d["_id"] in positives] + [d for d in corpus if d["_id"] not in positives][:60]
    return write_beir(folder, docs, queries, labels, split="train")


def test_queries_with_one_text_are_one_query_with_all_their_positives(tmp_path):
    beir = _scifact_slice(tmp_path / "beir")
    workdir = tmp_path / "work"
    data = DataParams(beir=beir, split="train")
    index(workdir, data, IndexParams(retrievers=["dense"], model=MODEL), progress=False)
    mined = mine(workdir, data, MineParams(retriever="dense", top_k=20), progress=False)
    assert mined.stats["queries_merged_same_text"] == 1
    queries = pl.read_ipc(workdir / "queries.arrow")
    assert "89" in queries["query_id"].to_list() and "90" not in queries["query_id"].to_list()
    qrels = pl.read_ipc(workdir / "qrels.arrow").filter(pl.col("query_id") == "89")
    assert sorted(qrels["doc_id"].to_list()) == ["22406695", "7521113"]
    score(workdir, ScoreParams(scorer="none"), progress=False)
    filter_stage(workdir, FilterParams(num_negatives=5), progress=False)
    ids = pl.read_parquet(export(workdir, ExportParams(), progress=False).outputs["ids"])
    text = queries.filter(pl.col("query_id") == "89")["text"][0]
    train = pl.read_parquet(workdir / "export" / "n-tuple.parquet")
    assert train.filter(pl.col("anchor") == text).height == 2  # one row per positive, one query
    ids = ids.filter(pl.col("query_id") == "89")
    negatives = {d for column in ids.columns if column.startswith("negative_") for d in ids[column].to_list()}
    assert not negatives & {"7521113", "22406695"}
