"""An export folder is a dataset: `datasets.load_dataset(FOLDER)` loads the last export as is, every
format keeps its own files, the types are the ones Hub datasets have, and Tevatron's id format holds
what its TrainDataset reads."""

from __future__ import annotations

import json
import os

import polars as pl
import pyarrow.parquet as pq

from hnmine.config import DataParams, ExportParams, FilterParams, MineParams, ScoreParams
from hnmine.io.manifest import file_signature
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.mine import mine
from hnmine.stages.score import score

# format -> (columns of the training file, rows on adi with 3 negatives per query)
EXPECTED = {
    "n-tuple": (["anchor", "positive", "negative_1", "negative_2", "negative_3"], 170),
    "triplet": (["anchor", "positive", "negative"], 510),
    "labeled-pair": (["anchor", "document", "label"], 170 + 35 * 3),
    "labeled-list": (["anchor", "documents", "labels"], 170),
    "flagembedding": (["query", "pos", "neg"], 35),
    "tevatron": (["query_id", "query", "positive_passages", "negative_passages"], 35),
    "tevatron-ids": (["query_id", "query_text", "positive_document_ids", "negative_document_ids"], 35),
    "ids": (["query_id", "positive_ids", "negative_ids"], 35),
}


def _load(*args, **kwargs):
    from datasets import load_dataset

    return load_dataset(*args, split="train", **kwargs)


def test_every_format_loads_from_the_folder_and_leaves_the_others_intact(filtered):
    folder = filtered / "export"
    written: dict = {}
    for fmt, (columns, rows) in EXPECTED.items():
        result = export(filtered, ExportParams(format=fmt), progress=False)
        assert result.outputs["train"].parent == folder and result.outputs["train"].stem == fmt
        dataset = _load(str(folder))
        assert dataset.column_names == columns and len(dataset) == rows, fmt
        for path, signature in written.items():  # every earlier format's files are untouched
            assert file_signature(path) == signature, f"{fmt} changed {path.name}"
        written |= {p: file_signature(p) for p in result.outputs.values()}
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([".hnmine", "README.md", "n-tuple.parquet", "n-tuple.ids.parquet", "triplet.parquet",
                            "triplet.ids.parquet", "labeled-pair.parquet", "labeled-pair.ids.parquet",
                            "labeled-list.parquet", "labeled-list.ids.parquet", "flagembedding.jsonl",
                            "flagembedding.jsonl.ids.parquet", "tevatron.jsonl", "tevatron-ids.jsonl",
                            "tevatron-ids.corpus.jsonl", "ids.parquet"])
    # the last export (ids, Parquet) is the default; the other Parquet files are configs by name
    assert _load(str(folder), "n-tuple").column_names == EXPECTED["n-tuple"][0]
    ids = _load(str(folder), "n-tuple-ids")
    assert len(ids) == 170 and ids.column_names[:2] == ["query_id", "positive_id"]
    # a format exported again is the default again, even when it is reused as it was
    again = export(filtered, ExportParams(format="triplet"), progress=False)
    assert again.reused and _load(str(folder)).column_names == EXPECTED["triplet"][0]


def test_card_names_the_files_the_mining_and_the_command(filtered, adi):
    from hnmine.audit import audit

    audit(filtered, adi / "qrels" / "test.tsv")
    export(filtered, ExportParams(format="n-tuple"), progress=False)
    card = (filtered / "export" / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "hnmine_export: true" in front and 'config_name: "n-tuple"' in front and "default: true" in front
    assert '- name: "negative_3"\n        dtype: "string"' in front
    body = card.split("---\n", 2)[2]
    assert "| `n-tuple` | `n-tuple.parquet` | n-tuple | 170 | 35 |" in body
    assert "top_k=10" in body and "num_negatives=3" in body and "model=all-MiniLM-L6-v2" in body
    assert "False-negative audit against" in body and "of 105 kept negatives are labeled relevant" in body
    # the card quotes the audit only for the negatives it audited
    filter_stage(filtered, FilterParams(num_negatives=2), progress=False)
    export(filtered, ExportParams(format="n-tuple"), progress=False)
    assert "False-negative audit" not in (filtered / "export" / "README.md").read_text()


def test_a_readme_the_user_wrote_is_left_alone(filtered):
    folder = filtered / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# my notes\n")
    result = export(filtered, ExportParams(format="n-tuple", output=folder / "train.parquet"), progress=False)
    assert (folder / "README.md").read_text() == "# my notes\n"
    assert any("not hnmine's: no dataset card written" in w for w in result.warnings)


def test_types_are_the_ones_hub_datasets_have(filtered):
    from datasets import Dataset, Value, concatenate_datasets

    for fmt in ("n-tuple", "labeled-pair", "labeled-list", "ids"):
        result = export(filtered, ExportParams(format=fmt), progress=False)
        for path in result.outputs.values():
            for field in pq.read_schema(path):
                assert "large" not in str(field.type) and "int32" not in str(field.type), (path.name, field)
    pair = pq.read_schema(filtered / "export" / "labeled-pair.parquet")
    assert str(pair.field("label").type) == "int64"
    listed = pq.read_schema(filtered / "export" / "labeled-list.parquet")
    assert str(listed.field("labels").type) == "list<element: int64>"
    ours = _load("parquet", data_files=str(filtered / "export" / "n-tuple.parquet"))
    hub = Dataset.from_dict({c: ["a text"] for c in ours.column_names}).cast_column("anchor", Value("string"))
    assert len(concatenate_datasets([ours, hub])) == len(ours) + 1


def test_folder_readers_see_only_training_files(filtered):
    """FlagEmbedding's folder mode reads every .json/.jsonl file in the folder; the manifests are in
    the hidden .hnmine/ and no earlier manifest is left beside the file."""
    folder = filtered / "export"
    folder.mkdir()
    stale = folder / "flagembedding.jsonl.manifest.json"
    stale.write_text('{"fingerprint": "x"}')
    export(filtered, ExportParams(format="flagembedding"), progress=False)
    assert [f for f in os.listdir(folder) if f.endswith((".json", ".jsonl"))] == ["flagembedding.jsonl"]
    assert (folder / ".hnmine" / "flagembedding.jsonl.manifest.json").is_file()


def test_tevatron_ids_hold_what_its_train_dataset_reads(filtered):
    """Tevatron installs from the package index only as v1 (0.1.0), which has no id format; this
    reads the files the way current Tevatron's TrainDataset does (its README's schema, and
    `docid` / `text` from the corpus as its code reads them)."""
    from hnmine.io.files import read_table

    result = export(filtered, ExportParams(format="tevatron-ids"), progress=False)
    train = _load("json", data_files=str(result.outputs["train"]))
    corpus = _load("json", data_files=str(result.outputs["corpus"]))
    assert corpus.column_names == ["docid", "text"]
    docid_to_index = {docid: i for i, docid in enumerate(corpus["docid"])}
    documents = pl.from_arrow(read_table(filtered / "corpus.arrow"))
    folded = {d: f"{t} {x}".strip() for d, t, x in zip(documents["doc_id"], documents["title"], documents["text"])}
    negatives = pl.from_arrow(read_table(filtered / "negatives.arrow"))
    for group in train:
        assert group["query_text"] and group["positive_document_ids"] and len(group["negative_document_ids"]) == 3
        for docid in group["positive_document_ids"] + group["negative_document_ids"]:
            assert corpus[docid_to_index[docid]]["text"] == folded[docid]
    assert set(corpus["docid"]) == {d for g in train for d in g["positive_document_ids"] + g["negative_document_ids"]}
    assert sum(len(g["negative_document_ids"]) for g in train) == negatives.height


def test_tevatron_scores_and_labels_a_format_cannot_carry(filtered, tmp_path):
    from typer.testing import CliRunner

    from hnmine.cli import app

    result = export(filtered, ExportParams(format="tevatron", labels="scores"), progress=False)
    row = json.loads(result.outputs["train"].read_text().splitlines()[0])
    assert all(isinstance(p["score"], float) for p in row["positive_passages"] + row["negative_passages"])
    for fmt, labels in (("tevatron-ids", "scores"), ("tevatron", "margin"), ("labeled-pair", "margin"),
                        ("flagembedding", "margin"), ("ids", "margin")):
        run = CliRunner().invoke(app, ["export", "-w", str(filtered), "--format", fmt, "--labels", labels])
        assert run.exit_code != 0 and f"--format {fmt} cannot carry --labels {labels}" in run.output, run.output
    assert not (filtered / "export" / "tevatron-ids.jsonl").exists()


def test_a_stale_whole_run_candidates_file_beside_shards_does_not_stop_an_export(filtered, adi):
    """The card reads what it can of the upstream manifests: a whole-run candidates.arrow left from an
    earlier run, older than the shard folder the negatives came from, is not an error here."""
    for name in ("scored", "negatives", "dropped"):
        for path in (filtered / f"{name}.arrow", filtered / f"{name}.manifest.json"):
            path.unlink()
    for shard in ("1/2", "2/2"):
        mine(filtered, DataParams(beir=adi), MineParams(top_k=10, shard=shard), progress=False)
        score(filtered, ScoreParams(shard=shard), progress=False)
        filter_stage(filtered, FilterParams(num_negatives=3, shard=shard), progress=False)
    assert (filtered / "candidates.arrow").exists()
    result = export(filtered, ExportParams(format="n-tuple"), progress=False)
    assert result.stats["rows"] == 170 and "filter" in (filtered / "export" / "README.md").read_text()
