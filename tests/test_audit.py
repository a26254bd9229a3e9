"""`hnmine audit`: false negatives by fuller labels, and the filter settings that would have removed them."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import MODEL, read_qrels, write_beir
from typer.testing import CliRunner

from hnmine import schema
from hnmine.cli import app
from hnmine.config import DataParams, FilterParams, IndexParams, MineParams, ScoreParams
from hnmine.io.files import read_table
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score


@pytest.fixture(scope="module")
def hidden_positives(tmp_path_factory, adi_rows, adi):
    """adi with one positive per query visible to the run; the full qrels are the audit labels."""
    corpus, queries, qrels = adi_rows
    visible = {}
    for q, d, _ in qrels:
        visible.setdefault(q, d)
    root = tmp_path_factory.mktemp("audit")
    beir = write_beir(root / "beir", corpus, queries, [(q, d, 1) for q, d in visible.items()])
    workdir = root / "work"
    index(workdir, DataParams(beir=beir), IndexParams(model=MODEL), progress=False)
    mine(workdir, DataParams(beir=beir), MineParams(top_k=10), progress=False)
    score(workdir, ScoreParams(), progress=False)
    filter_stage(workdir, FilterParams(num_negatives=5), progress=False)
    return workdir, adi / "qrels" / "test.tsv"


def test_audit_counts_false_negatives_like_an_independent_count(hidden_positives, tmp_path):
    workdir, full_qrels = hidden_positives
    result = CliRunner().invoke(app, ["audit", str(workdir), "--qrels", str(full_qrels), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "audit.json").read_text())

    labeled = {(q, d) for q, d, rel in read_qrels(full_qrels) if rel >= 1}
    kept = pl.from_arrow(read_table(workdir / "negatives.arrow"))
    corpus = pl.from_arrow(read_table(workdir / "corpus.arrow"))
    hash_of = dict(zip(corpus[schema.DOC_ID], corpus[schema.TEXT_HASH]))
    labeled_text = {(q, hash_of[d]) for q, d in labeled}
    expected = sum((q, d) in labeled or (q, hash_of[d]) in labeled_text for q, d in zip(kept[schema.QUERY_ID], kept[schema.DOC_ID]))
    assert summary["false_negatives"] == expected > 10  # adi's hidden positives sit in the top 10
    assert summary["kept_negatives"] == kept.height
    assert f"{expected} of {kept.height} kept negatives are labeled relevant" in result.output

    queries = pl.read_parquet(tmp_path / "queries.parquet")
    assert queries["false_negatives"].sum() == expected and queries["negatives"].sum() == kept.height
    assert summary["queries_with_a_false_negative"] == (queries["false_negatives"] > 0).sum()
    # the loosest setting that removes every false negative removes them all, whichever rule it is
    for row in summary["by_rule"]:
        assert 0 < row["false_negatives_removed"] <= expected
    assert {row["rule"] for row in summary["by_rule"]} >= {"rank_window", "margin", "near_duplicate"}


def test_each_threshold_named_for_a_false_negative_really_drops_it(hidden_positives, tmp_path):
    from hnmine.audit import audit
    from hnmine.filtering.runner import filter_candidates
    from hnmine.filtering.similarity import FilterContext
    from hnmine.retrievers.embedding_store import load_embeddings

    workdir, full_qrels = hidden_positives
    audit(workdir, full_qrels, output=tmp_path)
    rows = pl.read_parquet(tmp_path / "negatives.parquet").filter(pl.col("false_negative"))
    scored = pl.from_arrow(read_table(workdir / "scored.arrow"))
    corpus = read_table(workdir / "corpus.arrow", [schema.DOC_ID, schema.TEXT_HASH])
    context = FilterContext(corpus.column(schema.DOC_ID).to_pylist(), corpus.column(schema.TEXT_HASH).to_numpy(),
                            load_embeddings(workdir / "index" / "dense"))
    checks = {"rank_min_to_remove": ("rank_min", "rank_window"), "margin_to_remove": ("margin", "margin"),
              "near_duplicate_to_remove": ("near_duplicate", "near_duplicate")}
    tried = 0
    for row in rows.head(8).iter_rows(named=True):
        for column, (option, rule) in checks.items():
            options = {"num_negatives": 5, "near_duplicate": 0, "duplicate_negatives": 0, option: row[column]}
            if option == "near_duplicate":
                options[option] = max(float(row[column]) - 1e-6, 1e-6)  # float32 cosines: at or above
            _, dropped, _ = filter_candidates(scored, FilterParams(**options), context)
            reason = dropped.filter((pl.col(schema.QUERY_ID) == row[schema.QUERY_ID]) & (pl.col(schema.DOC_ID) == row[schema.DOC_ID]))
            assert reason[schema.DROPPED_BY].to_list() == [rule], (row, option)
            tried += 1
    assert tried >= 15


def test_audit_errors_name_the_missing_file(hidden_positives, tmp_path):
    workdir, _ = hidden_positives
    result = CliRunner().invoke(app, ["audit", str(workdir), "--qrels", str(tmp_path / "nope.tsv")])
    assert result.exit_code == 2 and "nope.tsv" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["audit", str(tmp_path), "--qrels", str(tmp_path / "nope.tsv")])
    assert result.exit_code == 2 and "negatives" in result.output and "hnmine filter" in result.output
