"""export --format beir-subset: a BEIR folder of the run's queries, all their positives and the
pooled candidates (plus seeded random documents), that hnmine and BEIR readers take as is."""

from __future__ import annotations

import json

import polars as pl
from conftest import read_jsonl

from hnmine.config import DataParams, ExportParams, IndexParams, MineParams
from hnmine.io.files import read_table
from hnmine.stages.export import export
from hnmine.stages.index import index
from hnmine.stages.mine import mine


def test_subset_pools_positives_and_candidates_of_every_retriever(adi_workdir, adi, adi_rows, tmp_path):
    mine(adi_workdir, DataParams(beir=adi), MineParams(retriever="hybrid", top_k=10), progress=False)
    result = export(adi_workdir, ExportParams(format="beir-subset", subset_depth=2), progress=False)
    folder = adi_workdir / "export" / "beir-subset"
    assert set(result.outputs) == {"corpus", "queries", "qrels"}
    corpus = {d["_id"] for d in read_jsonl(folder / "corpus.jsonl")}
    queries = {q["_id"] for q in read_jsonl(folder / "queries.jsonl")}
    qrels = [line.split("\t") for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    _, all_queries, all_qrels = adi_rows
    assert queries == {str(q["_id"]) for q in all_queries}
    assert {(q, d) for q, d, _ in qrels} == {(q, d) for q, d, s in all_qrels if s >= 1}
    candidates = pl.from_arrow(read_table(adi_workdir / "candidates.arrow")).filter(~pl.col("is_positive"))
    within = (pl.col("dense_rank") <= 2) | (pl.col("bm25_rank") <= 2) | (pl.col("rank") <= 2)
    top = candidates.filter(within)
    deeper = set(candidates.filter(~within.fill_null(False))["doc_id"]) - set(top["doc_id"]) - {d for _, d, _ in qrels}
    assert set(top["doc_id"]) <= corpus and {d for _, d, _ in qrels} <= corpus
    assert top.height and deeper and not deeper & corpus  # the candidates beyond depth 2 stay out
    assert result.stats["documents"] == len(corpus) < 82 and "random_documents" not in result.stats

    # seeded random documents up to a minimum; the same seed draws the same ones
    wanted = len(corpus) + 3  # adi: 72 of its 82 documents are positives
    first = export(adi_workdir, ExportParams(format="beir-subset", subset_depth=2, subset_min_documents=wanted,
                                             output=tmp_path / "a"), progress=False)
    export(adi_workdir, ExportParams(format="beir-subset", subset_depth=2, subset_min_documents=wanted,
                                     output=tmp_path / "b"), progress=False)
    assert first.stats["documents"] == wanted and first.stats["random_documents"] == 3
    assert (tmp_path / "a" / "corpus.jsonl").read_text() == (tmp_path / "b" / "corpus.jsonl").read_text()
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["stats"]["share_of_corpus"] == round(wanted / 82, 4)

    # hnmine itself reads it as a BEIR folder
    index(tmp_path / "w", DataParams(beir=tmp_path / "a"), IndexParams(retrievers=["bm25"]), progress=False)
    mined = mine(tmp_path / "w", DataParams(beir=tmp_path / "a"), MineParams(retriever="bm25", top_k=5), progress=False)
    assert mined.stats["queries"] == 35 and mined.stats["positives"] == 170
