"""The command line as a user runs it: real subprocesses, exit codes, one-line errors, reuse."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def hnmine(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "300"}  # help text unwrapped
    return subprocess.run([sys.executable, "-m", "hnmine.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=env)


def _config(path: Path, workdir: Path, beir: Path, num_negatives: int) -> Path:
    path.write_text(f"""
workdir = "{workdir}"
[data]
beir = "{beir}"
[index]
retrievers = ["bm25"]
[mine]
retriever = "bm25"
top_k = 20
[filter]
num_negatives = {num_negatives}
""")
    return path


def test_run_reuses_unchanged_stages(tmp_path, adi):
    config = _config(tmp_path / "run.toml", tmp_path / "w", adi, 3)
    first = hnmine("run", str(config), "-q")
    assert first.returncode == 0, first.stderr
    assert "run: ran index, mine, score, filter, export; reused nothing" in first.stdout
    _config(config, tmp_path / "w", adi, 4)
    second = hnmine("run", str(config), "-q")
    assert second.returncode == 0, second.stderr
    assert "run: ran filter, export; reused index, mine, score" in second.stdout
    third = hnmine("run", str(config), "-q")
    assert "run: ran nothing; reused index, mine, score, filter, export" in third.stdout


def test_relative_paths_in_a_config_are_relative_to_the_config(tmp_path, adi):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "c.toml").write_text(f'workdir = "../w"\n[data]\nbeir = "{adi}"\n[index]\nretrievers = ["bm25"]\n'
                                   '[mine]\nretriever = "bm25"\ntop_k = 5\n[filter]\nnum_negatives = 2\n')
    result = hnmine("run", "configs/c.toml", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "w" / "export" / "n-tuple.parquet").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["index", "--workdir", "W", "--beir", "/no/such/folder"], "/no/such/folder: no corpus.jsonl[.gz]"),
        (["index", "--workdir", "W", "--corpus", "/no/such/corpus.jsonl"], "/no/such/corpus.jsonl: corpus file not found"),
        (["mine", "--workdir", "W", "--beir", "ADI", "--retriever", "bm25"], "no finished corpus index in the work dir"),
        (["mine", "--workdir", "W", "--beir", "ADI", "--top-k", "0"], "--top-k: Input should be greater than or equal to 1"),
        (["mine", "--workdir", "W", "--beir", "ADI", "--shard", "3/2"], "--shard"),
        (["filter", "--workdir", "W"], "w/scored: file not found (fix: run the stage that writes it first"),
        (["run", "nowhere.toml"], "nowhere.toml: config file not found"),
        (["index", "--workdir", "W", "-q", "--corpus", "LATE_DUPLICATE"], "row 61: duplicate id"),
    ],
)
def test_errors_are_one_line_with_exit_code_2_and_leave_no_file(tmp_path, adi, adi_rows, args, expected):
    """The work dir exists beforehand, so a stage that failed after writing anything (a corpus
    streamed up to a bad row 61, a temporary file, a manifest) would leave it there."""
    from conftest import write_jsonl

    workdir = tmp_path / "w"
    workdir.mkdir()
    duplicated = [*adi_rows[0][:60], dict(adi_rows[0][0], text="another text")]
    late_duplicate = write_jsonl(tmp_path / "late-duplicate.jsonl", duplicated)
    names = {"W": str(workdir), "ADI": str(adi), "LATE_DUPLICATE": str(late_duplicate)}
    result = hnmine(*[names.get(a, a) for a in args], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    # nothing but the work dir's lock, which holds no data (only who holds it)
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*") if p.is_file() and p.name != ".hnmine.lock") == []


def test_every_option_has_help_and_its_models_default():
    """Each command has an option for every field of its parameter models, with the field's help
    and default (shown in --help), so flags, config keys and keyword arguments agree."""
    import typer

    from hnmine.cli import app
    from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams

    commands = typer.main.get_command(app).commands
    models = {"index": [DataParams, IndexParams], "mine": [DataParams, MineParams], "score": [ScoreParams],
              "filter": [FilterParams], "export": [ExportParams]}
    for name, stage_models in models.items():
        options = {p.name: p for p in commands[name].params}
        fields = {f: field for model in stage_models for f, field in model.model_fields.items()}
        assert set(options) == set(fields) | {"workdir", "quiet"}, name
        text = hnmine(name, "--help").stdout
        for field_name, field in fields.items():
            option = options[field_name]
            assert field.description and option.help.startswith(field.description), (name, field_name)
            assert option.show_default, (name, field_name)
            default = list(option.default) if isinstance(option.default, (list, tuple)) else option.default
            assert default == field.default, (name, field_name, default, field.default)
            assert "--" + field_name.replace("_", "-") in text, (name, field_name)
    text = hnmine("mine", "--help").stdout
    assert "--top-k" in text and "[default: 50]" in text and "one of: dense, bm25, hybrid" in text


def test_quiet_silences_the_model_libraries_bars_too(tmp_path, adi_rows):
    """A model saved by this transformers loads with its own "Loading weights" bar: -q turns it off.
    In this process (typer's runner), so the libraries are imported once; their bar switch is put back."""
    from conftest import MODEL, write_jsonl
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging
    from typer.testing import CliRunner

    from hnmine.cli import app
    from hnmine.packaged.resolve import resolve_model

    SentenceTransformer(resolve_model(MODEL), device="cpu").save(str(tmp_path / "model"))
    corpus = write_jsonl(tmp_path / "corpus.jsonl", adi_rows[0][:5])
    # torch: the backend that loads the checkpoint through transformers (ONNX Runtime shows no bar)
    args = ["index", "--workdir", str(tmp_path / "w"), "--corpus", str(corpus), "--retrievers", "dense",
            "--backend", "torch", "--model", str(tmp_path / "model")]
    runner = CliRunner()
    try:
        transformers_logging.enable_progress_bar()
        loud = runner.invoke(app, args)
        assert loud.exit_code == 0 and "Loading weights" in loud.stderr, loud.output
        shutil.copytree(tmp_path / "model", tmp_path / "copy")  # another folder: not the model this process holds
        quiet = runner.invoke(app, [*args[:-1], str(tmp_path / "copy"), "--name", "again", "-q"])
        assert quiet.exit_code == 0, quiet.output
        assert "Loading weights" not in quiet.stderr and "it/s]" not in quiet.stderr, quiet.stderr
    finally:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        transformers_logging.enable_progress_bar()


def test_make_test_fails_naming_the_fix_where_chromium_is_missing(tmp_path):
    """`make test` (the README's test command) must not skip the browser tests on a machine
    without Chromium: it stops first and says how to install it."""
    import shutil

    make = shutil.which("make")
    assert make, "make is not installed"
    result = subprocess.run([make, "-s", "-C", str(Path(__file__).resolve().parents[1]), "browser"],
                            env={"PATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "apt-get install chromium" in result.stderr and "tests/test_report.py" in result.stderr


def test_every_shipped_config_loads_and_points_at_real_data():
    from pathlib import Path

    from hnmine.run_config import load_config

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert {c.name for c in configs} >= {"demo.toml", "recommended.toml", "nv-retriever.toml", "rocketqa.toml"}
    for path in configs:
        config = load_config(path)
        assert (config.data.beir / "corpus.jsonl.gz").exists(), path
        assert config.filter.num_negatives <= config.mine.top_k, path
