"""Several dense indexes in one work dir, and candidates pooled from them and BM25 (`mine --retriever
pooled`), on adi with the packaged MiniLM and the static model distilled from it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from conftest import MODEL

from hnmine.config import DataParams, FilterParams, IndexParams, MineParams, ScoreParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score

POOL = ["dense", "bm25", "static"]


@pytest.fixture(scope="module")
def static_model():
    from hnmine.packaged.static_model import prepare_static_model

    return prepare_static_model()


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, adi, adi_indexed, static_model):
    """adi indexed by MiniLM, BM25 and the static model (a named index), mined pooled (top 10)."""
    workdir = tmp_path_factory.mktemp("pooled") / "work"
    shutil.copytree(adi_indexed, workdir)
    index(workdir, DataParams(beir=adi), IndexParams(name="static", model="minilm-static"), progress=False)
    mine(workdir, DataParams(beir=adi), MineParams(retriever="pooled", pool=POOL, top_k=10), progress=False)
    return workdir


def _candidates(workdir) -> pl.DataFrame:
    return pl.from_arrow(read_table(workdir / "candidates.arrow"))


def test_the_static_model_is_distilled_from_minilm_and_finds_related_texts(static_model):
    from sentence_transformers import SentenceTransformer

    marker = json.loads((static_model / "hnmine-source.json").read_text())
    assert marker["pca_dims"] == 256 and marker["source_fingerprint"]
    model = SentenceTransformer(str(static_model), device="cpu")
    vectors = model.encode(["vitamin d and breast cancer", "vitamin d intake and the risk of breast cancer",
                            "the compiler parses the source code"], normalize_embeddings=True)
    assert vectors.shape == (3, 256)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_a_named_index_lives_in_its_own_folder_and_leaves_the_default_one_current(pooled):
    dense = pooled / "index" / "dense"
    assert (dense / "static" / "embeddings.npy").exists() and (dense / "static" / "manifest.json").exists()
    recorded = json.loads((dense / "manifest.json").read_text())["files"]
    assert not any(name.startswith("static") for name in recorded)  # the named index is not the default's file
    static = np.load(dense / "static" / "embeddings.npy")
    assert static.shape[1] == 256 and np.load(dense / "embeddings.npy").shape[1] == 384


def test_pooled_candidates_carry_every_retrievers_rank_and_score_and_a_fused_rank(pooled, static_model):
    from sentence_transformers import SentenceTransformer

    table = _candidates(pooled)
    for key in ("dense", "bm25", "dense_static"):
        assert f"{key}_score" in table.columns and f"{key}_rank" in table.columns
    negatives = table.filter(~pl.col("is_positive"))
    ranks = negatives.select("dense_rank", "bm25_rank", "dense_static_rank")
    # found_by counts the retrievers whose list holds the document; the fused score is their RRF sum
    assert negatives["found_by"].to_list() == ranks.select(pl.sum_horizontal(pl.all().is_not_null())).to_series().to_list()
    fused = ranks.select(pl.sum_horizontal([1.0 / (60 + pl.col(c)) for c in ranks.columns])).to_series()
    np.testing.assert_allclose(negatives["fused_score"].to_numpy(), fused.to_numpy(), rtol=1e-6)
    for _, group in negatives.group_by("query_id"):
        group = group.sort("rank")
        assert group["rank"].to_list() == list(range(1, group.height + 1))
        assert group["fused_score"].is_sorted(descending=True)
    assert negatives["found_by"].min() < len(POOL) <= negatives["found_by"].max()  # they agree on some, not all
    # the static index's rank is the document's place in an exact search with the static model itself
    queries = pl.from_arrow(read_table(pooled / "queries.arrow"))
    corpus_ids = read_table(pooled / "corpus.arrow", ["doc_id"]).column("doc_id").to_pylist()
    matrix = np.load(pooled / "index" / "dense" / "static" / "embeddings.npy")
    model = SentenceTransformer(str(static_model), device="cpu")
    qid, text = queries.row(0)
    order = np.argsort(-(matrix @ model.encode([text], normalize_embeddings=True)[0]), kind="stable")
    place = {corpus_ids[p]: r + 1 for r, p in enumerate(order)}
    found = table.filter((pl.col("query_id") == qid) & pl.col("dense_static_rank").is_not_null())
    assert found.height
    for doc, rank in zip(found["doc_id"], found["dense_static_rank"]):
        assert abs(place[doc] - rank) <= 1  # ties in fp32 may swap neighbours


def test_pooled_candidates_go_through_score_filter_and_keep_their_provenance(pooled, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(pooled, workdir)
    score(workdir, ScoreParams(), progress=False)
    result = filter_stage(workdir, FilterParams(num_negatives=3), progress=False)
    kept = pl.from_arrow(read_table(workdir / "negatives.arrow"))
    assert result.stats["kept"] == kept.height > 0
    assert {"found_by", "dense_static_rank", "bm25_rank"} <= set(kept.columns)
    from hnmine.report.write import write_report

    write_report(workdir, output=tmp_path / "report.md")
    assert "dense:static" in (tmp_path / "report.md").read_text()  # the named index's stage is listed


def test_pool_errors_name_the_fix(tmp_path, adi, adi_indexed):
    with pytest.raises(ValueError, match="--pool goes with --retriever pooled"):
        MineParams(pool=["dense", "bm25"])
    for pool in ([], ["static", "static"]):
        with pytest.raises(ValueError, match="one or more different --pool entries"):
            MineParams(retriever="pooled", pool=pool)
    with pytest.raises(ValueError, match="index name 'Bad Name'"):
        IndexParams(name="Bad Name")
    with pytest.raises(ValueError, match="not one of"):
        IndexParams(name="chunks")
    workdir = tmp_path / "work"
    shutil.copytree(adi_indexed, workdir)
    with pytest.raises(HnmineError, match=r"no finished dense:other index.*hnmine index --name other --model MODEL"):
        mine(workdir, DataParams(beir=adi), MineParams(retriever="pooled", pool=["dense", "other"]), progress=False)
    assert not (workdir / "candidates.arrow").exists()


def test_building_the_default_index_after_a_named_one_keeps_both_current(tmp_path, adi, static_model):
    data = DataParams(beir=adi)
    index(tmp_path, data, IndexParams(name="static", model="minilm-static", retrievers=["dense", "bm25"]), progress=False)
    index(tmp_path, data, IndexParams(model=MODEL), progress=False)
    assert index(tmp_path, data, IndexParams(name="static", model="minilm-static"), progress=False).reused
    # the named index rebuilt (its files change) after the default one: the default is still current
    rebuilt = index(tmp_path, data, IndexParams(name="static", model="minilm-static", document_prompt="passage: "),
                    progress=False)
    assert not rebuilt.reused
    assert index(tmp_path, data, IndexParams(model=MODEL), progress=False).reused
    mined = mine(tmp_path, data, MineParams(retriever="pooled", pool=["static", "bm25", "dense"], top_k=5), progress=False)
    assert mined.stats["dense_search"] == {"dense_static": "exact-block-scan", "dense": "exact-block-scan"}
