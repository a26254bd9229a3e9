"""Batch plans: no planned batch holds a document that is a known or likely positive of another
row's query, every row is kept once, and the sampler trains on the plan in a real trainer run."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import MODEL

from hnmine.config import ExportParams, FilterParams, ScoreParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.score import score


def _positives(workdir, extra=()) -> dict[str, set[str]]:
    qrels = pl.from_arrow(read_table(workdir / "qrels.arrow"))
    found: dict[str, set[str]] = {}
    for q, d in list(zip(qrels["query_id"], qrels["doc_id"])) + list(extra):
        found.setdefault(q, set()).add(d)
    return found


def _in_batch_false_negatives(ids: pl.DataFrame, positives: dict[str, set[str]], batches) -> int:
    """(row, other row in its batch) pairs where a document of the other row is a positive of the
    row's query: counted from the ids and the labels, not by the planner's own code."""
    docs = [[r["positive_id"], *(r[f"negative_{k}_id"] for k in (1, 2, 3))] for r in ids.iter_rows(named=True)]
    queries = ids["query_id"].to_list()
    return sum(1 for rows in batches for i in rows for j in rows
               if i != j and positives[queries[i]] & set(docs[j]))


def test_planned_batches_hold_no_known_positive_of_another_row(filtered):
    plain = export(filtered, ExportParams(format="n-tuple"), progress=False)
    train_plain = pl.read_parquet(plain.outputs["train"])
    result = export(filtered, ExportParams(format="n-tuple", batch_plan="no-false-negatives", batch_size=4),
                    progress=False)
    ids, train = pl.read_parquet(result.outputs["ids"]), pl.read_parquet(result.outputs["train"])
    assert ids.height == train.height == train_plain.height == 170
    assert sorted(train.rows()) == sorted(train_plain.rows())  # the same rows, reordered
    assert ids["batch"].is_sorted() and ids["batch"].max() + 1 == result.stats["batch_plan"]["batches"]
    batches = [group["_i"].to_list() for _, group in ids.with_row_index("_i").group_by("batch", maintain_order=True)]
    assert max(len(b) for b in batches) <= 4
    positives = _positives(filtered)
    assert _in_batch_false_negatives(ids, positives, batches) == 0
    plan = result.stats["batch_plan"]
    assert plan["collisions"] == 0 and plan["collisions_random_batches"] > 0
    shuffled = [list(range(i, min(i + 4, 170))) for i in range(0, 170, 4)]  # the plain file in fixed batches
    assert _in_batch_false_negatives(pl.read_parquet(plain.outputs["ids"]), positives, shuffled) > 0
    # the training rows follow the ids: row i's anchor is the text of row i's query
    queries = pl.from_arrow(read_table(filtered / "queries.arrow"))
    text_of = dict(zip(queries["query_id"], queries["text"]))
    assert train["anchor"].to_list() == [text_of[q] for q in ids["query_id"]]


def test_likely_positives_and_near_copies_are_blocked_too(filtered):
    score(filtered, ScoreParams(scorer="cross-encoder", backend="onnx", top=3), progress=False)
    scored = pl.from_arrow(read_table(filtered / "scored.arrow")).filter(~pl.col("is_positive"))
    threshold = float(scored["ce_prob"].sort(descending=True, nulls_last=True)[9])
    filter_stage(filtered, FilterParams(num_negatives=3, likely_positive=threshold), progress=False)
    dropped = pl.from_arrow(read_table(filtered / "dropped.arrow")).filter(pl.col("dropped_by") == "likely_positive")
    result = export(filtered, ExportParams(format="n-tuple", batch_plan="clustered", batch_size=4,
                                           batch_near_duplicate=0.6), progress=False)
    plan = result.stats["batch_plan"]
    assert plan["likely_positives_blocked"] == dropped.height >= 10
    assert plan["near_copies_blocked"] > 0 and plan["clusters"] >= 1 and 0 < plan["cluster_purity"] <= 1
    ids = pl.read_parquet(result.outputs["ids"])
    batches = [group["_i"].to_list() for _, group in ids.with_row_index("_i").group_by("batch", maintain_order=True)]
    likely = _positives(filtered, zip(dropped["query_id"], dropped["doc_id"]))
    assert _in_batch_false_negatives(ids, likely, batches) == 0 and plan["collisions"] == 0


def test_plan_options_that_cannot_work_are_refused(filtered):
    with pytest.raises(ValueError, match="--batch-plan is for the in-batch-negative formats"):
        ExportParams(format="flagembedding", batch_plan="no-false-negatives", batch_size=8)
    with pytest.raises(ValueError, match="needs --batch-size"):
        ExportParams(batch_plan="clustered")
    with pytest.raises(ValueError, match="only shapes a --batch-plan"):
        ExportParams(batch_size=8)
    import shutil

    shutil.rmtree(filtered / "index" / "dense")
    with pytest.raises(HnmineError, match="needs the dense index"):
        export(filtered, ExportParams(batch_plan="no-false-negatives", batch_size=4), progress=False)
    plain = export(filtered, ExportParams(batch_plan="no-false-negatives", batch_size=4, batch_near_duplicate=0),
                   progress=False)
    assert plain.stats["batch_plan"]["collisions"] == 0


def test_sampler_trains_on_the_plan_in_a_real_trainer(filtered, tmp_path):
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from hnmine.exports.sampler import PlannedBatchSampler, planned_batches, read_plan
    from hnmine.packaged.resolve import resolve_model

    result = export(filtered, ExportParams(format="n-tuple", batch_plan="no-false-negatives", batch_size=4),
                    progress=False)
    train = load_dataset("parquet", data_files=str(result.outputs["train"]), split="train")
    plan = read_plan(result.outputs["ids"])
    model = SentenceTransformer(resolve_model(MODEL), device="cpu")
    model.max_seq_length = 64
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                                                report_to="none", save_strategy="no", use_cpu=True, logging_steps=1,
                                                batch_sampler=planned_batches(result.outputs["ids"]))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model))
    sampler = trainer.get_train_dataloader().batch_sampler
    assert isinstance(sampler, PlannedBatchSampler)
    first = list(sampler)
    assert sorted(map(sorted, first)) == sorted(map(sorted, plan))  # membership is the plan's
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(map(sorted, second)) == sorted(map(sorted, plan))  # only the order moves
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0
    with pytest.raises(ValueError, match="plans 170 rows but the training set has 10"):
        PlannedBatchSampler(train.select(range(10)), 4, False, batches=plan)


def test_stuck_batches_do_not_keep_later_rows_out():
    """600 rows that all clash with each other, then 600 that fit together: the compatible rows
    still fill whole batches (the planner looks at the newest open batches, not only the oldest),
    and the full batches come first."""
    from hnmine.exports.batch_plan import plan_batches

    shared = frozenset({-1})  # every clashing row holds this document, and every row blocks it
    queries = [f"c{i}" for i in range(600)] + [f"f{i}" for i in range(600)]
    docs = [shared | {i} for i in range(600)] + [frozenset({10_000 + i}) for i in range(600)]
    blocked = {q: shared for q in queries}
    plan = plan_batches(queries, docs, blocked, 32, seed=1, order=list(range(1200)))
    assert plan.stats["full_batches"] == 600 // 32 and plan.stats["rows_in_short_batches"] == 600 + 600 % 32
    sizes: dict[int, int] = {}
    for batch in plan.batch:
        sizes[batch] = sizes.get(batch, 0) + 1
    full = [b for b, n in sizes.items() if n == 32]
    assert sorted(full) == list(range(len(full)))  # numbered before every short batch
