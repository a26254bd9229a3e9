"""The exported Parquet loads the way sentence-transformers users load it, and trains as is."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import MODEL

from hnmine.config import DataParams, ExportParams, FilterParams, MineParams, ScoreParams
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.mine import mine
from hnmine.stages.score import score


@pytest.fixture
def exported(adi_workdir, adi):
    mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10), progress=False)
    score(adi_workdir, ScoreParams(), progress=False)
    filter_stage(adi_workdir, FilterParams(num_negatives=3), progress=False)

    def make(fmt):
        return export(adi_workdir, ExportParams(format=fmt, output=adi_workdir / f"{fmt}.parquet"), progress=False)

    return make


@pytest.mark.parametrize("fmt", ["n-tuple", "triplet"])
def test_datasets_loads_text_columns_in_loss_order(exported, fmt):
    from datasets import load_dataset

    result = exported(fmt)
    dataset = load_dataset("parquet", data_files=str(result.outputs["train"]), split="train")
    expected = ["anchor", "positive", "negative_1", "negative_2", "negative_3"] if fmt == "n-tuple" else ["anchor", "positive", "negative"]
    assert dataset.column_names == expected
    assert all(isinstance(dataset[0][c], str) and dataset[0][c] for c in expected)
    ids = pl.read_parquet(result.outputs["ids"])
    assert ids.height == len(dataset) == (170 if fmt == "n-tuple" else 170 * 3)
    assert "query_id" in ids.columns and "query_id" not in dataset.column_names


def test_sentence_transformer_trainer_takes_the_file_as_is(exported, tmp_path):
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from hnmine.packaged.resolve import resolve_model

    train = load_dataset("parquet", data_files=str(exported("n-tuple").outputs["train"]), split="train")
    model = SentenceTransformer(resolve_model(MODEL), device="cpu")
    model.max_seq_length = 64
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8,
                                                report_to="none", save_strategy="no", use_cpu=True, logging_steps=1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model))
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0


def _load(path, kind="parquet"):
    from datasets import load_dataset

    return load_dataset(kind, data_files=str(path), split="train")


def test_labeled_pair_and_list_follow_mine_hard_negatives_columns(exported):
    from hnmine.stages.export import export as run_export

    pair = _load(exported("labeled-pair").outputs["train"])
    assert pair.column_names == ["anchor", "document", "label"]
    assert set(pair["label"]) == {0, 1} and pair["label"].count(0) == 35 * 3 and pair["label"].count(1) == 170
    assert pair["label"][0] == 1  # each query: its positives, then its negatives

    listed = _load(exported("labeled-list").outputs["train"])
    assert listed.column_names == ["anchor", "documents", "labels"]
    assert len(listed) == 170 and all(labels == [1, 0, 0, 0] for labels in listed["labels"])
    assert all(isinstance(d, str) and d for docs in listed["documents"] for d in docs)

    workdir = exported("labeled-pair").outputs["train"].parent
    scored_pair = run_export(workdir, ExportParams(format="labeled-pair", labels="scores", output=workdir / "lp-s.parquet"),
                             progress=False)
    with_scores = _load(scored_pair.outputs["train"])
    assert with_scores.column_names == ["anchor", "document", "score"] and scored_pair.stats["label_score"] == "dense_score"
    assert all(-1.0 <= s <= 1.0 for s in with_scores["score"]) and len(set(with_scores["score"])) > 100


def test_distillation_labels_are_margins_or_score_lists(exported, adi_workdir):
    from hnmine.io.files import read_table
    from hnmine.stages.export import export as run_export

    scored = pl.from_arrow(read_table(adi_workdir / "scored.arrow"))
    score_of = dict(zip(zip(scored["query_id"], scored["doc_id"]), scored["dense_score"]))

    margin = run_export(adi_workdir, ExportParams(format="triplet", labels="margin", output=adi_workdir / "t.parquet"), progress=False)
    rows, ids = _load(margin.outputs["train"]), pl.read_parquet(margin.outputs["ids"])
    assert rows.column_names == ["anchor", "positive", "negative", "label"]
    expected = [score_of[(q, p)] - score_of[(q, n)] for q, p, n in ids.iter_rows()]
    assert rows["label"] == pytest.approx(expected, abs=1e-6)

    lists = run_export(adi_workdir, ExportParams(format="n-tuple", labels="scores", output=adi_workdir / "n.parquet"), progress=False)
    rows, ids = _load(lists.outputs["train"]), pl.read_parquet(lists.outputs["ids"])
    assert rows.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "scores"]
    first = ids.row(0)
    assert rows["scores"][0] == pytest.approx([score_of[(first[0], d)] for d in first[1:]], abs=1e-6)


def test_flagembedding_jsonl_has_lists_never_bare_strings(exported, adi_workdir):
    import json

    from hnmine.stages.export import export as run_export

    result = run_export(adi_workdir, ExportParams(format="flagembedding", labels="scores", prompt="Represent this query: "),
                        progress=False)
    assert result.outputs["train"].name == "flagembedding.jsonl"
    lines = [json.loads(line) for line in result.outputs["train"].read_text().splitlines()]
    assert len(lines) == 35
    for row in lines:
        assert set(row) == {"query", "pos", "neg", "pos_scores", "neg_scores", "prompt"}
        assert isinstance(row["pos"], list) and all(isinstance(p, str) and len(p) > 1 for p in row["pos"])
        assert isinstance(row["neg"], list) and len(row["neg"]) == 3
        assert len(row["pos_scores"]) == len(row["pos"]) and len(row["neg_scores"]) == 3
    # loaded the way FlagEmbedding's training dataset loads it (datasets' json loader)
    dataset = _load(result.outputs["train"], "json")
    assert isinstance(dataset[0]["pos"], list) and dataset[0]["prompt"] == "Represent this query: "
    plain = run_export(adi_workdir, ExportParams(format="flagembedding", output=adi_workdir / "fe.jsonl"), progress=False)
    assert set(json.loads(plain.outputs["train"].read_text().splitlines()[0])) == {"query", "pos", "neg"}


def test_tevatron_jsonl_and_ids_parquet(exported, adi_workdir):
    from hnmine.io.files import read_table
    from hnmine.stages.export import export as run_export

    tevatron = _load(run_export(adi_workdir, ExportParams(format="tevatron"), progress=False).outputs["train"], "json")
    assert tevatron.column_names == ["query_id", "query", "positive_passages", "negative_passages"]
    first = tevatron[0]
    assert set(first["positive_passages"][0]) == {"docid", "title", "text"} and len(first["negative_passages"]) == 3
    corpus = pl.from_arrow(read_table(adi_workdir / "corpus.arrow"))
    text_of = dict(zip(corpus["doc_id"], corpus["text"]))
    assert all(p["text"] == text_of[p["docid"]] for row in tevatron for p in row["negative_passages"])

    ids = pl.read_parquet(run_export(adi_workdir, ExportParams(format="ids", output=adi_workdir / "ids.parquet"),
                                     progress=False).outputs["train"])
    assert ids.columns == ["query_id", "positive_ids", "negative_ids"] and ids.height == 35
    assert ids["negative_ids"].list.len().to_list() == [3] * 35
    qrels = pl.from_arrow(read_table(adi_workdir / "qrels.arrow"))
    assert ids["positive_ids"].list.len().sum() == qrels.height == 170


def test_likely_positives_are_exported_as_extra_positives_and_flagged(exported, adi_workdir):
    import json

    from hnmine.errors import HnmineError
    from hnmine.io.files import read_table
    from hnmine.stages.export import export as run_export

    with pytest.raises(HnmineError, match="--likely-positive"):
        run_export(adi_workdir, ExportParams(format="ids", extra_positives=True), progress=False)
    score(adi_workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=3), progress=False)
    scored = pl.from_arrow(read_table(adi_workdir / "scored.arrow"))
    candidates = scored.filter(~pl.col("is_positive"))
    threshold = float(candidates["ce_prob"].sort(descending=True, nulls_last=True)[9])  # the 10 most confident
    result = filter_stage(adi_workdir, FilterParams(num_negatives=3, likely_positive=threshold), progress=False)
    likely = candidates.filter(pl.col("ce_prob") >= threshold)
    marked = set(zip(likely["query_id"], likely["doc_id"]))
    assert result.stats["dropped_by"]["likely_positive"] == len(marked) >= 10

    ids = pl.read_parquet(run_export(adi_workdir, ExportParams(format="ids", extra_positives=True, labels="scores",
                                                               output=adi_workdir / "ids.parquet"), progress=False).outputs["train"])
    flat = ids.explode(["positive_ids", "positive_labeled", "positive_scores"])
    extra = flat.filter(~pl.col("positive_labeled"))
    assert set(zip(extra["query_id"], extra["positive_ids"])) == {m for m in marked if m[0] in set(ids["query_id"])}
    assert extra["positive_scores"].null_count() == 0  # their scores come from their candidate rows
    assert flat.filter(pl.col("positive_labeled")).height == 170

    fe = run_export(adi_workdir, ExportParams(format="flagembedding", extra_positives=True), progress=False)
    lines = [json.loads(line) for line in fe.outputs["train"].read_text().splitlines()]
    assert sum(len(line["pos"]) for line in lines) == 170 + extra.height
    assert all(isinstance(p, str) for line in lines for p in line["pos"])
    triplet = run_export(adi_workdir, ExportParams(format="triplet", extra_positives=True,
                                                   output=adi_workdir / "t.parquet"), progress=False)
    sidecar = pl.read_parquet(triplet.outputs["ids"])
    assert sidecar.filter(~pl.col("labeled")).height == 3 * extra.height  # one row per (extra positive, negative)
    assert run_export(adi_workdir, ExportParams(format="triplet", output=adi_workdir / "plain.parquet"),
                      progress=False).stats.get("extra_positives") is None


def test_exports_that_share_a_stem_keep_their_own_ids_and_manifests(exported, adi_workdir):
    """n-tuple.parquet and flagembedding.jsonl (or x.v1.parquet and x.v2.parquet) are two exports: neither
    overwrites the other's row-aligned ids, and each stays reusable."""
    parquet = export(adi_workdir, ExportParams(format="n-tuple"), progress=False)
    jsonl = export(adi_workdir, ExportParams(format="flagembedding"), progress=False)
    assert parquet.outputs["ids"] != jsonl.outputs["ids"]
    ids = pl.read_parquet(parquet.outputs["ids"])
    assert "negative_1_id" in ids.columns and ids.height == pl.read_parquet(parquet.outputs["train"]).height
    assert export(adi_workdir, ExportParams(format="n-tuple"), progress=False).reused
    assert export(adi_workdir, ExportParams(format="flagembedding"), progress=False).reused

    v1 = ExportParams(format="triplet", output=adi_workdir / "x.v1.parquet")
    v2 = ExportParams(format="n-tuple", output=adi_workdir / "x.v2.parquet")
    first, second = export(adi_workdir, v1, progress=False), export(adi_workdir, v2, progress=False)
    assert first.outputs["ids"] != second.outputs["ids"]
    assert export(adi_workdir, v1, progress=False).reused and export(adi_workdir, v2, progress=False).reused


def test_extra_positives_counted_are_the_ones_written(exported, adi_workdir):
    """A likely positive of a query that the export leaves out (too few negatives for an n-tuple
    row) is not reported as exported."""
    from hnmine.io.files import read_table

    score(adi_workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=3), progress=False)
    candidates = pl.from_arrow(read_table(adi_workdir / "scored.arrow")).filter(~pl.col("is_positive"))
    threshold = float(candidates["ce_prob"].sort(descending=True, nulls_last=True)[9])
    filter_stage(adi_workdir, FilterParams(num_negatives=3, rank_max=3, likely_positive=threshold), progress=False)
    result = export(adi_workdir, ExportParams(format="n-tuple", extra_positives=True), progress=False)
    ids = pl.read_parquet(result.outputs["ids"])
    assert result.stats["extra_positives"] == ids.filter(~pl.col("labeled")).height
    assert result.stats["extra_positives"] < result.stats["likely_positives"] >= 10


def test_the_card_says_how_to_batch_a_query_with_extra_positive_rows(exported, adi_workdir):
    """Extra positives give a query several n-tuple rows; in one MNRL batch its own positives would be
    its negatives, so the dataset card says which sampler keeps them apart."""
    from hnmine.io.files import read_table

    score(adi_workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=3), progress=False)
    candidates = pl.from_arrow(read_table(adi_workdir / "scored.arrow")).filter(~pl.col("is_positive"))
    threshold = float(candidates["ce_prob"].sort(descending=True, nulls_last=True)[9])
    filter_stage(adi_workdir, FilterParams(num_negatives=3, likely_positive=threshold), progress=False)
    plain = export(adi_workdir, ExportParams(format="n-tuple"), progress=False)
    card = plain.outputs["train"].parent / "README.md"
    assert "## Extra positives" not in card.read_text()
    result = export(adi_workdir, ExportParams(format="n-tuple", extra_positives=True), progress=False)
    text = card.read_text()
    assert f"`n-tuple.parquet` has {result.stats['extra_positives']} extra positives" in text
    assert "BatchSamplers.NO_DUPLICATES" in text
    export(adi_workdir, ExportParams(format="n-tuple", extra_positives=True, batch_plan="no-false-negatives",
                                     batch_size=8), progress=False)
    assert "planned_batches" in card.read_text()
