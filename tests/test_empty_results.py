"""Inputs and settings that would give an empty result which looks finished: labels that leave no
query, a rank window with no rank in it, a config value of the wrong type read as another. Each is
an error naming the cause, from the real CLI, and writes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
import typing

import pytest
from pydantic import ValidationError

from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams

MODELS = [DataParams, IndexParams, MineParams, ScoreParams, FilterParams, ExportParams]


def hnmine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hnmine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.stdout, result.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def indexed(adi, tmp_path_factory):
    from hnmine.stages.index import index

    workdir = tmp_path_factory.mktemp("empty-results") / "work"
    index(workdir, DataParams(beir=adi), IndexParams(retrievers=["bm25"]), progress=False)
    return workdir


def _qrels_lines(adi) -> list[str]:
    from conftest import read_qrels

    return [f"{q}\t{d}\t{s:g}" for q, d, s in read_qrels(adi / "qrels" / "test.tsv")]


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("empty", [], "the file is empty"),
        ("header-only", [], "no qrels lines (the file is empty or holds only a header)"),
        ("unknown-queries", ["--on-unknown-ids", "skip"],
         "none of the {n} qrels lines names a query of the queries file: all were skipped by --on-unknown-ids skip"),
        ("below-min-relevance", ["--min-relevance", "5"],
         "no query has a positive: of the {n} qrels lines, {n} score below --min-relevance 5"),
    ],
)
def test_mine_with_labels_that_leave_no_query_is_an_error_naming_the_cause(adi, indexed, tmp_path, case, extra,
                                                                              expected):
    lines = _qrels_lines(adi)
    text = {"empty": "", "header-only": "query-id\tcorpus-id\tscore\n",
            "unknown-queries": "query-id\tcorpus-id\tscore\n" + "".join(f"x{line}\n" for line in lines),
            "below-min-relevance": "query-id\tcorpus-id\tscore\n" + "".join(f"{line}\n" for line in lines)}[case]
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text(text)
    workdir = tmp_path / "work"
    shutil.copytree(indexed, workdir)
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    result = hnmine("mine", "--workdir", workdir, "-q", "--retriever", "bm25", "--corpus", adi / "corpus.jsonl.gz",
                    "--queries", adi / "queries.jsonl.gz", "--qrels", qrels, *extra)
    line = error_line(result)
    assert f"{qrels}: " + expected.format(n=len(lines)) in line
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before  # nothing written


def test_a_rank_window_with_no_rank_in_it_is_an_error_naming_both_values(adi, tmp_path):
    line = error_line(hnmine("filter", "--workdir", tmp_path / "w", "--rank-min", "10", "--rank-max", "5"))
    assert line == "error: rank_min 10 is more than rank_max 5, so no candidate is in the rank window " \
                   "(fix: make rank_min at most rank_max)"
    config = tmp_path / "run.toml"
    config.write_text(f'workdir = "{tmp_path / "w"}"\n[data]\nbeir = "{adi}"\n[index]\nretrievers = ["bm25"]\n'
                      '[mine]\nretriever = "bm25"\ntop_k = 20\n[filter]\nrank_min = 10\nrank_max = 5\n')
    line = error_line(hnmine("run", config, "-q"))
    assert f"{config}: filter: rank_min 10 is more than rank_max 5" in line
    assert not (tmp_path / "w").exists()
    assert FilterParams(rank_min=5, rank_max=5).rank_max == 5  # a window of one rank is a window


def _number_and_bool_fields():
    for model in MODELS:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if typing.get_origin(annotation) in (typing.Union, types.UnionType):
                annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
            if annotation in (int, float, bool):
                yield pytest.param(model, name, annotation, id=f"{model.__name__}.{name}")


@pytest.mark.parametrize(("model", "name", "kind"), list(_number_and_bool_fields()))
def test_no_number_or_flag_takes_a_value_of_another_type(model, name, kind):
    wrong = {int: [True, False, "5", 2.0], float: [True, "0.5"], bool: [1, 0, "true"]}[kind]
    for value in wrong:
        with pytest.raises(ValidationError) as error:
            model(**{name: value})
        assert error.value.errors()[0]["loc"] == (name,)
    if kind is float:
        assert getattr(model(**{name: 1}), name) == 1.0  # an int is a float's value as is


def test_a_config_value_of_the_wrong_type_is_an_error_naming_the_key(adi, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'workdir = "{tmp_path / "w"}"\n[data]\nbeir = "{adi}"\n[index]\nretrievers = ["bm25"]\n'
                      '[mine]\nretriever = "bm25"\ntop_k = true\n')
    line = error_line(hnmine("run", config, "-q"))
    assert line == f"error: {config}: mine.top_k: Input should be a valid integer (1 problem(s))"
    assert not (tmp_path / "w").exists()
