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

    from hnmine.models import resolve_model

    train = load_dataset("parquet", data_files=str(exported("n-tuple").outputs["train"]), split="train")
    model = SentenceTransformer(resolve_model(MODEL), device="cpu")
    model.max_seq_length = 64
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8,
                                                report_to="none", save_strategy="no", use_cpu=True, logging_steps=1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model))
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0
