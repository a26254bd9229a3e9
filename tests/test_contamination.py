"""mine --exclude-qrels: evaluation queries never become training queries (by id or by text), and
evaluation positives stay out of the training negatives (and positives), every exclusion counted."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import write_jsonl

from hnmine.config import DataParams, MineParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.stages.mine import mine


@pytest.fixture
def evaluation(adi_rows, tmp_path):
    """adi split in two: queries 1-8 are the evaluation set (their qrels in eval.tsv); the
    evaluation queries file holds query 9's text under another id, so query 9 is one by text."""
    _, queries, qrels = adi_rows
    held = {str(q["_id"]) for q in queries[:8]}
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s:g}" for q, d, s in qrels if q in held]
    (tmp_path / "eval.tsv").write_text("\n".join(lines) + "\n")
    eval_queries = [{"_id": f"eval-{q['_id']}", "text": q["text"]} for q in queries[:8]]
    eval_queries.append({"_id": "eval-copy", "text": "  " + queries[8]["text"].upper() + " "})
    write_jsonl(tmp_path / "eval-queries.jsonl", eval_queries)
    positives = {d for q, d, s in qrels if q in held and s >= 1}
    return tmp_path / "eval.tsv", tmp_path / "eval-queries.jsonl", held, str(queries[8]["_id"]), positives


def _mined(workdir):
    manifest = json.loads((workdir / "candidates.manifest.json").read_text())
    queries = pl.from_arrow(read_table(workdir / "queries.arrow"))
    qrels = pl.from_arrow(read_table(workdir / "qrels.arrow"))
    candidates = pl.from_arrow(read_table(workdir / "candidates.arrow")).filter(~pl.col("is_positive"))
    return manifest["stats"], set(queries["query_id"]), set(qrels["doc_id"]), set(candidates["doc_id"])


def test_evaluation_queries_and_positives_stay_out(adi_workdir, adi, evaluation):
    eval_qrels, eval_queries, held, copy_of, positives = evaluation
    plain = mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10), progress=False).stats
    assert plain["queries"] == 35 and held <= set(pl.from_arrow(read_table(adi_workdir / "queries.arrow"))["query_id"])
    assert positives & set(pl.from_arrow(read_table(adi_workdir / "candidates.arrow"))["doc_id"])  # they were there

    mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10, exclude_qrels=eval_qrels, exclude_queries=eval_queries),
         progress=False)
    stats, queries, train_positives, negatives = _mined(adi_workdir)
    assert not held & queries and copy_of not in queries
    assert stats["queries_excluded_eval_text"] == 1  # query 9, by its text under another id
    assert stats["queries_excluded_eval_id"] == 8  # the qrels' ids
    assert not positives & negatives and not positives & train_positives
    assert stats["excluded_eval_positive"] > 0 and stats["positives_excluded_eval"] > 0
    assert stats["queries"] == len(queries) == 35 - 9 - stats["queries_excluded_no_positive_left"]

    # without an evaluation queries file the ids are matched, and the texts of those ids
    mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10, exclude_qrels=eval_qrels,
                                                       exclude_documents="negatives"), progress=False)
    stats, queries, train_positives, negatives = _mined(adi_workdir)
    assert stats["queries_excluded_eval_id"] == 8 and stats["queries_excluded_eval_text"] == 0
    assert copy_of in queries and not held & queries
    assert not positives & negatives and positives & train_positives  # kept as training positives
    assert "positives_excluded_eval" not in stats


def test_a_firewall_that_leaves_nothing_is_an_error(adi_workdir, adi):
    with pytest.raises(HnmineError, match="every training query is an evaluation query"):
        mine(adi_workdir, DataParams(beir=adi), MineParams(exclude_qrels=adi / "qrels" / "test.tsv"), progress=False)
    with pytest.raises(ValueError, match="--exclude-queries goes with --exclude-qrels"):
        MineParams(exclude_queries=adi / "queries.jsonl.gz")
