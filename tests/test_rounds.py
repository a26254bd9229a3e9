"""A second mining round in the same work dir with another model: the first round's files stay as
they were, and the two rounds' negatives are compared (rounds API, `hnmine round`, the report)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import polars as pl
import pytest

from hnmine.config import DataParams, FilterParams, IndexParams, MineParams, ScoreParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.io.manifest import hash_file
from hnmine.rounds import compare_runs, new_round, parent_of
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score

FIRST_ROUND_FILES = ("candidates.arrow", "scored.arrow", "negatives.arrow", "dropped.arrow", "queries.arrow",
                     "index/dense/embeddings.npy", "index/dense/manifest.json")


def _finish(workdir, data, mine_params) -> None:
    mine(workdir, data, mine_params, progress=False)
    score(workdir, ScoreParams(), progress=False)
    filter_stage(workdir, FilterParams(num_negatives=3), progress=False)


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, adi, adi_indexed):
    """adi mined by MiniLM (the first round), then a round mined by the static model alone."""
    parent = tmp_path_factory.mktemp("rounds") / "work"
    shutil.copytree(adi_indexed, parent)
    data = DataParams(beir=adi)
    _finish(parent, data, MineParams(top_k=10))
    before = {name: hash_file(parent / name) for name in FIRST_ROUND_FILES}
    second = new_round(parent, "r2")
    index(second, data, IndexParams(name="static", model="minilm-static"), progress=False)
    _finish(second, data, MineParams(retriever="pooled", pool=["static"], top_k=10))
    return parent, second, before


def test_a_round_keeps_the_first_rounds_files_and_shares_its_indexes(two_rounds):
    parent, second, before = two_rounds
    assert {name: hash_file(parent / name) for name in FIRST_ROUND_FILES} == before
    assert (parent / "index" / "dense" / "static" / "manifest.json").exists()  # the round's index is the parent's
    assert parent_of(second) == parent and parent_of(parent) is None
    assert (second / "negatives.arrow").exists() and not (second / "negatives.arrow").is_symlink()
    assert new_round(parent, "r2") == second  # again: nothing to do
    # a pool of one named index: the round's candidates are that index's own ranking
    candidates = pl.from_arrow(read_table(second / "candidates.arrow")).filter(~pl.col("is_positive"))
    in_order = candidates.sort("query_id", "rank").group_by("query_id", maintain_order=True).agg(
        (pl.col("dense_static_rank").diff().drop_nulls() > 0).all().alias("increasing"))
    assert in_order["increasing"].all() and (candidates["found_by"] == 1).all()
    assert candidates["bm25_rank"].is_null().all() and candidates["dense_rank"].is_null().all()  # not searched


def test_the_comparison_counts_what_the_two_rounds_share(two_rounds):
    parent, second, _ = two_rounds
    result = compare_runs(parent, second)
    first = {(q, d) for q, d in pl.from_arrow(read_table(parent / "negatives.arrow", ["query_id", "doc_id"])).iter_rows()}
    later = {(q, d) for q, d in pl.from_arrow(read_table(second / "negatives.arrow", ["query_id", "doc_id"])).iter_rows()}
    assert result.negatives == (len(first), len(later)) and result.shared == len(first & later)
    assert result.new_in_second == len(later - first) > 0 and result.dropped_from_first == len(first - later)
    assert 0 < result.mean_jaccard < 1
    first_candidates = pl.from_arrow(read_table(parent / "candidates.arrow", ["query_id", "doc_id", "is_positive"]))
    mined_first = {(q, d) for q, d, p in first_candidates.iter_rows() if not p}
    assert result.new_not_in_first_candidates == len((later - first) - mined_first)


def test_the_report_and_the_cli_show_the_comparison(two_rounds, tmp_path):
    from hnmine.report.write import write_report

    parent, second, _ = two_rounds
    out = tmp_path / "report.md"
    write_report(second, output=out)
    text = out.read_text()
    assert "## Re-mining rounds" in text and "the parent → round r2" in text and "shared:" in text
    write_report(parent, output=out)
    assert "this run → round r2" in out.read_text()
    result = subprocess.run([sys.executable, "-m", "hnmine.cli", "round", "compare", str(parent), str(second)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "mean per-query Jaccard" in result.stdout


def test_a_round_refuses_another_corpus_and_a_name_that_is_taken(two_rounds, tmp_path, adi_rows):
    from conftest import write_beir

    parent, second, _ = two_rounds
    corpus, queries, qrels = adi_rows
    other = write_beir(tmp_path / "other", corpus[:40], queries, [r for r in qrels if r[1] in {d["_id"] for d in corpus[:40]}])
    with pytest.raises(HnmineError, match="this work dir is a round"):
        index(second, DataParams(beir=other), IndexParams(name="static", model="minilm-static"), progress=False)
    assert (second / "corpus.arrow").is_symlink()
    (parent / "rounds" / "taken").mkdir()
    (parent / "rounds" / "taken" / "index").mkdir()
    with pytest.raises(HnmineError, match="is there and is not the parent's"):
        new_round(parent, "taken")
    with pytest.raises(HnmineError, match="round name"):
        new_round(parent, "Bad Name")
