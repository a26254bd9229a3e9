"""The whole spine on real data: every stage, every retriever, the invariants of the output."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import MODEL, write_beir

from hnmine.config import (
    DataParams,
    ExportParams,
    FilterParams,
    IndexParams,
    MineParams,
    ScoreParams,
)
from hnmine.io.files import read_table
from hnmine.run_config import RunConfig
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.run import run
from hnmine.stages.score import score
from hnmine.text import normalize_text


@pytest.fixture(scope="module")
def adi_with_traps(tmp_path_factory, adi_rows):
    """adi plus copies of positives under new ids and a document that repeats a query's text."""
    corpus, queries, qrels = adi_rows
    by_id = {d["_id"]: d for d in corpus}
    traps = []
    for q, d, _ in qrels[:40:4]:  # copies of ten positives, re-cased and re-spaced
        doc = by_id[d]
        traps.append({"_id": f"copy-of-{d}-for-{q}", "title": doc["title"].upper(), "text": "  " + doc["text"] + " "})
    traps.append({"_id": "query-echo", "title": "", "text": queries[0]["text"]})
    for d in corpus[:20]:  # the same non-positive text under two ids must not fill two negative slots
        traps.append({"_id": f"twin-of-{d['_id']}", "title": d["title"], "text": d["text"].upper()})
    return write_beir(tmp_path_factory.mktemp("adi-traps"), corpus + traps, queries, qrels)


def _texts(workdir):
    corpus = read_table(workdir / "corpus.arrow").to_pylist()
    return {d["doc_id"]: normalize_text((d["title"] + " " + d["text"]).strip()) for d in corpus}


def assert_no_positive_exported(workdir, train_path, ids_path):
    qrels = read_table(workdir / "qrels.arrow").to_pylist()
    positives: dict[str, set[str]] = {}
    for row in qrels:
        positives.setdefault(row["query_id"], set()).add(row["doc_id"])
    text = _texts(workdir)
    queries = {q["query_id"]: normalize_text(q["text"]) for q in read_table(workdir / "queries.arrow").to_pylist()}
    ids = pl.read_parquet(ids_path)
    train = pl.read_parquet(train_path)
    assert ids.height == train.height > 0
    negative_columns = [c for c in ids.columns if c.startswith("negative")]
    checked = 0
    if len(negative_columns) > 1:
        for row in ids.iter_rows(named=True):
            texts = [text[row[c]] for c in negative_columns]
            assert len(set(texts)) == len(texts), "a row lists the same negative text twice"
    else:
        per_query = ids.group_by("query_id", "positive_id").agg(pl.col("negative_id"))
        for negatives in per_query["negative_id"].to_list():
            assert len({text[n] for n in negatives}) == len(negatives), "a query lists the same negative text twice"
    for row in ids.iter_rows(named=True):
        pos_ids = positives[row["query_id"]]
        pos_texts = {text[p] for p in pos_ids}
        assert row["positive_id"] in pos_ids
        for column in negative_columns:
            negative = row[column]
            assert negative not in pos_ids, f"negative {negative} is a labeled positive of {row['query_id']}"
            assert text[negative] not in pos_texts, f"negative {negative} repeats a positive's text"
            assert text[negative] != queries[row["query_id"]]
            checked += 1
    # the trainer file holds the texts of those ids, row for row
    first = ids.row(0, named=True)
    assert normalize_text(train["positive"][0]) == text[first["positive_id"]]
    assert normalize_text(train[negative_columns[0].removesuffix("_id")][0]) == text[first[negative_columns[0]]]
    return checked


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("fmt", ["n-tuple", "triplet"])
def test_no_exported_negative_is_a_positive(tmp_path, adi_with_traps, retriever, fmt):
    config = RunConfig(
        workdir=tmp_path / "w", data=DataParams(beir=adi_with_traps),
        index=IndexParams(retrievers=["dense", "bm25"] if retriever != "bm25" else ["bm25"], model=MODEL),
        mine=MineParams(retriever=retriever, top_k=30), filter=FilterParams(num_negatives=5), export=ExportParams(format=fmt),
    )
    results = {r.stage: r for r in run(config, progress=False)}
    mined = results["mine"].stats
    assert mined["excluded_positive_by_text"] > 0, "the copies of positives should have been retrieved and removed"
    assert mined["excluded_duplicate_text"] > 0, "the twins should have been retrieved and removed"
    train, ids = results["export"].outputs["train"], results["export"].outputs["ids"]
    checked = assert_no_positive_exported(config.workdir, train, ids)
    assert checked >= 35 * 5
    columns = pl.read_parquet(train).columns
    if fmt == "n-tuple":
        assert columns == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "negative_4", "negative_5"]
    else:
        assert columns == ["anchor", "positive", "negative"]


def test_candidates_keep_every_retriever_score_and_positive_scores(adi_workdir, adi):
    data = DataParams(beir=adi)
    mine(adi_workdir, data, MineParams(retriever="hybrid", top_k=10), progress=False)
    candidates = pl.from_arrow(read_table(adi_workdir / "candidates.arrow"))
    positives = candidates.filter(pl.col("is_positive"))
    negatives = candidates.filter(~pl.col("is_positive"))
    assert positives.height == 170 and positives["rank"].null_count() == 170
    assert positives["dense_score"].null_count() == 0 and positives["bm25_score"].null_count() == 0
    assert negatives.group_by("query_id").len()["len"].to_list() == [10] * 35
    assert negatives["dense_score"].null_count() == 0 and negatives["bm25_score"].null_count() == 0
    # ranks are 1..10 per query and follow the fused score
    assert negatives.group_by("query_id").agg(pl.col("rank").sort())["rank"].to_list() == [list(range(1, 11))] * 35
    fused = negatives.sort(["query_id", "rank"]).group_by("query_id", maintain_order=True).agg("fused_score")
    assert all(s == sorted(s, reverse=True) for s in fused["fused_score"].to_list())
    # the fused score is reciprocal-rank fusion of the ranks each retriever gave
    for row in negatives.iter_rows(named=True):
        expected = sum(1 / (60 + row[r]) for r in ("dense_rank", "bm25_rank") if row[r] is not None)
        assert row["fused_score"] == pytest.approx(expected, rel=1e-5)


def test_dense_scores_are_cosines_of_the_packaged_model(adi_workdir, adi):
    from sentence_transformers import SentenceTransformer

    from hnmine.packaged.resolve import resolve_model

    mine(adi_workdir, DataParams(beir=adi), MineParams(retriever="dense", top_k=5), progress=False)
    row = read_table(adi_workdir / "candidates.arrow").to_pylist()[3]
    corpus = {d["doc_id"]: (d["title"] + " " + d["text"]).strip() for d in read_table(adi_workdir / "corpus.arrow").to_pylist()}
    query = {q["query_id"]: q["text"] for q in read_table(adi_workdir / "queries.arrow").to_pylist()}[row["query_id"]]
    model = SentenceTransformer(resolve_model(MODEL), device="cpu")
    q, d = model.encode([query, corpus[row["doc_id"]]], normalize_embeddings=True)
    assert row["dense_score"] == pytest.approx(float(q @ d), abs=1e-4)


def test_sharded_stages_give_the_same_file_as_one_run(adi_workdir, adi, tmp_path):
    import shutil

    data = DataParams(beir=adi)
    sharded = tmp_path / "sharded"
    shutil.copytree(adi_workdir, sharded)
    for workdir, shards in ((adi_workdir, [None]), (sharded, ["1/3", "2/3", "3/3"])):
        for shard in shards:
            mine(workdir, data, MineParams(retriever="dense", top_k=10, shard=shard), progress=False)
            score(workdir, ScoreParams(shard=shard), progress=False)
            filter_stage(workdir, FilterParams(num_negatives=4, sampling="random", seed=7, shard=shard), progress=False)
        export(workdir, ExportParams(), progress=False)
    assert (sharded / "negatives").is_dir() and len(list((sharded / "negatives").glob("*.arrow"))) == 3
    one = pl.read_parquet(adi_workdir / "export" / "n-tuple.parquet")
    many = pl.read_parquet(sharded / "export" / "n-tuple.parquet")
    assert one.height == 170 and one.equals(many)


def test_a_whole_run_file_older_than_its_shard_folder_is_refused(adi_workdir, adi):
    import os

    from hnmine.errors import HnmineError

    data = DataParams(beir=adi)
    mine(adi_workdir, data, MineParams(retriever="dense", top_k=10), progress=False)
    score(adi_workdir, ScoreParams(), progress=False)  # scored.arrow, from the whole-run candidates
    stale = adi_workdir / "scored.arrow"
    os.utime(stale, ns=(stale.stat().st_atime_ns, stale.stat().st_mtime_ns - 10**9))
    for shard in ("1/2", "2/2"):  # a fresh sharded run writes scored/ beside it
        mine(adi_workdir, data, MineParams(retriever="dense", top_k=10, shard=shard), progress=False)
        score(adi_workdir, ScoreParams(shard=shard), progress=False)
    with pytest.raises(HnmineError, match=r"scored.arrow: older than the shards in .*scored"):
        filter_stage(adi_workdir, FilterParams(num_negatives=3), progress=False)
    assert not (adi_workdir / "negatives.arrow").exists()
    stale.unlink()
    assert filter_stage(adi_workdir, FilterParams(num_negatives=3), progress=False).stats["queries"] == 35


def test_a_complete_shard_set_has_a_folder_manifest_that_export_and_audit_read(adi_workdir, adi, tmp_path):
    """Export and audit read the filter's options from a sharded run as from a whole one."""
    import json

    from hnmine.audit import audit
    from hnmine.errors import HnmineError

    data = DataParams(beir=adi)
    shards = ("1/2", "2/2")
    for shard in shards:
        mine(adi_workdir, data, MineParams(retriever="dense", top_k=10, shard=shard), progress=False)
        score(adi_workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=3, shard=shard), progress=False)
    assert not (adi_workdir / "negatives" / "manifest.json").exists()
    scored = pl.from_arrow(read_table(adi_workdir / "scored"))
    threshold = float(scored.filter(~pl.col("is_positive"))["ce_prob"].sort(descending=True, nulls_last=True)[9])
    options = {"num_negatives": 4, "rank_max": 3, "likely_positive": threshold, "score": "dense_score",
               "reference_positive": "max"}
    for shard in shards:
        assert not (adi_workdir / "negatives" / "manifest.json").exists()  # not before the set is complete
        filter_stage(adi_workdir, FilterParams(**options, shard=shard), progress=False)
    folder = json.loads((adi_workdir / "negatives" / "manifest.json").read_text())
    assert folder["params"]["num_negatives"] == 4 and "shard" not in folder["params"]
    assert folder["stats"]["kept"] == pl.from_arrow(read_table(adi_workdir / "negatives")).height

    extra = export(adi_workdir, ExportParams(format="ids", extra_positives=True), progress=False)
    assert extra.stats["extra_positives"] > 0
    # every query has at most 3 negatives (rank_max=3): none has the 4 an n-tuple row needs
    ntuple = export(adi_workdir, ExportParams(format="n-tuple"), progress=False)
    assert ntuple.stats["rows"] == 0 and ntuple.stats["queries_left_out_fewer_negatives"] == 35
    summary = audit(adi_workdir, adi / "qrels" / "test.tsv", output=tmp_path / "audit").summary
    assert summary["score_column"] == "dense_score" and summary["reference_positive"] == "max"

    # one shard rerun with other options: the set is no longer one run's, and export says so
    filter_stage(adi_workdir, FilterParams(**options | {"num_negatives": 3}, shard="1/2"), progress=False)
    assert not (adi_workdir / "negatives" / "manifest.json").exists()
    with pytest.raises(HnmineError, match="negatives: has no manifest"):
        export(adi_workdir, ExportParams(format="triplet"), progress=False)


def test_merged_shard_stats_count_whole_run_figures_once(adi_workdir, adi):
    from hnmine.distributed import _merged

    data = DataParams(beir=adi)
    whole = mine(adi_workdir, data, MineParams(retriever="dense", top_k=10), progress=False)
    parts = [mine(adi_workdir, data, MineParams(retriever="dense", top_k=10, shard=f"{k}/3"), progress=False)
             for k in (1, 2, 3)]
    merged = _merged("mine", parts, 1.0, adi_workdir, "candidates").stats
    for key in ("queries", "candidates", "positives", "queries_in_file", "qrels_lines"):
        assert merged[key] == whole.stats[key], key


def test_random_sampling_is_seeded(adi_workdir, adi):
    mine(adi_workdir, DataParams(beir=adi), MineParams(retriever="dense", top_k=20), progress=False)
    score(adi_workdir, ScoreParams(), progress=False)

    def negatives(seed):
        filter_stage(adi_workdir, FilterParams(num_negatives=5, sampling="random", seed=seed), progress=False)
        return read_table(adi_workdir / "negatives.arrow").select(["query_id", "doc_id"]).to_pylist()

    first, again, other = negatives(1), negatives(1), negatives(2)
    assert first == again and first != other
    dropped = read_table(adi_workdir / "dropped.arrow")
    assert len(first) + dropped.num_rows == 35 * 20  # every candidate is kept or has a reason


def test_rank_window_and_drop_reasons(adi_workdir, adi):
    mine(adi_workdir, DataParams(beir=adi), MineParams(retriever="dense", top_k=20), progress=False)
    score(adi_workdir, ScoreParams(), progress=False)
    result = filter_stage(adi_workdir, FilterParams(rank_min=3, rank_max=10, num_negatives=5), progress=False)
    kept = pl.from_arrow(read_table(adi_workdir / "negatives.arrow"))
    assert kept["rank"].min() >= 3 and kept["rank"].max() <= 10
    assert kept.group_by("query_id").agg(pl.col("rank"))["rank"].to_list() == [[3, 4, 5, 6, 7]] * 35
    assert result.stats["dropped_by"] == {"rank_window": 35 * 12, "not_sampled": 35 * 3}


def test_index_reuses_dense_when_bm25_is_added(adi_workdir, adi):
    result = index(adi_workdir, DataParams(beir=adi), IndexParams(retrievers=["dense", "bm25"], model=MODEL), progress=False)
    assert [p.reused for p in result.parts] == [True, True, True]
    changed = index(adi_workdir, DataParams(beir=adi), IndexParams(retrievers=["bm25"], bm25_k1=0.9), progress=False)
    assert [(p.stage, p.reused) for p in changed.parts] == [("corpus", True), ("bm25", False)]
