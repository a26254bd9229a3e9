"""The work dir never holds something that looks finished and is not: concurrent runs, killed
stages, truncated files, litter of dead processes, SIGTERM. Real processes, real kills, on adi."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import MODEL, write_beir

from hnmine.config import DataParams, ExportParams, FilterParams, MineParams, ScoreParams
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.mine import mine
from hnmine.stages.score import score

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _hnmine(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hnmine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _killed_at(target: str, call: int, *args: str) -> subprocess.CompletedProcess:
    """Run `hnmine ARGS` in a process that SIGKILLs itself right after its `call`-th call of
    `target` (a module attribute, "module:function") returns: a kill at an exact moment."""
    module, function = target.split(":")
    code = textwrap.dedent(f"""
        import os, signal, sys
        import {module} as m
        real, calls = m.{function}, [0]
        def wrapped(*a, **k):
            out = real(*a, **k)
            calls[0] += 1
            if calls[0] == {call}:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        m.{function} = wrapped
        from hnmine.cli import app
        sys.argv = ["hnmine", *{list(args)!r}]
        app(prog_name="hnmine")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


def _finished(workdir: Path, beir: Path) -> Path:
    data = DataParams(beir=beir, split="test")
    mine(workdir, data, MineParams(top_k=10), progress=False)
    score(workdir, ScoreParams(scorer="none"), progress=False)
    filter_stage(workdir, FilterParams(num_negatives=3), progress=False)
    return export(workdir, ExportParams(), progress=False).outputs["train"]


def _one_line_error(done: subprocess.CompletedProcess, *names: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _config(path: Path, workdir: Path, beir: Path, prompt: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        workdir = "{workdir}"
        [data]
        beir = "{beir}"
        split = "test"
        [index]
        retrievers = ["dense"]
        model = "{MODEL}"
        document_prompt = "{prompt}"
        chunk_size = 8
        batch_size = 4
        [mine]
        retriever = "dense"
        top_k = 10
        [score]
        scorer = "none"
        [filter]
        num_negatives = 3
    """))
    return path


def test_two_runs_on_one_work_dir_take_turns(tmp_path, adi):
    """Two `hnmine run`s that differ only in document_prompt, started while a third holder has the
    work dir: each waits (and says so), then they run one after the other, so the index and the
    training file are wholly the last one's, as a run of it alone."""
    from hnmine.io.lock import workdir_lock

    shared = tmp_path / "shared"
    configs = {"": _config(tmp_path / "a.toml", shared, adi, ""),
               "passage: ": _config(tmp_path / "b.toml", shared, adi, "passage: ")}
    command = [sys.executable, "-m", "hnmine.cli", "run"]
    with workdir_lock(shared):
        runs = [subprocess.Popen([*command, str(c)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                for c in configs.values()]
        time.sleep(8)  # both start and reach the lock while it is held here
        assert all(run.poll() is None for run in runs)
    errors = [run.communicate(timeout=600)[1] for run in runs]
    assert all(run.returncode == 0 for run in runs), errors
    assert all("waiting for another run" in err for err in errors), errors
    import json

    last = json.loads((shared / "index" / "dense" / "manifest.json").read_text())["params"]["document_prompt"]
    alone = tmp_path / "alone"
    done = _hnmine("run", str(_config(tmp_path / "c.toml", alone, adi, last)))
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(shared / "index" / "dense" / "embeddings.npy"),
                                  np.load(alone / "index" / "dense" / "embeddings.npy"))
    assert pl.read_parquet(shared / "export" / "n-tuple.parquet").equals(pl.read_parquet(alone / "export" / "n-tuple.parquet"))


def test_a_mine_shard_never_unsettles_the_files_other_shards_read(tmp_path, adi_workdir, adi):
    """mine --shard 1/2 and score --shard 1/2 done; mine --shard 2/2 killed after it rewrote the
    shared queries.arrow (the same bytes): shard 1's score still runs, and the set completes."""
    base = ["--workdir", str(adi_workdir), "-q"]
    mine_args = ["mine", *base, "--beir", str(adi), "--split", "test", "--top-k", "10"]
    assert _hnmine(*mine_args, "--shard", "1/2").returncode == 0
    _killed_at("hnmine.stages.mine:write_table", 1, *mine_args, "--shard", "2/2")
    first = _hnmine("score", *base, "--scorer", "none", "--shard", "1/2")
    assert first.returncode == 0, first.stderr
    assert _hnmine(*mine_args, "--shard", "2/2").returncode == 0
    assert _hnmine("score", *base, "--scorer", "none", "--shard", "2/2").returncode == 0
    assert (adi_workdir / "scored" / "manifest.json").exists()


def test_a_user_file_inside_the_work_dir_is_read_as_a_user_file(tmp_path, adi):
    """A BEIR folder kept inside the work dir is input, not a stage output without a manifest."""
    workdir = tmp_path / "work"
    shutil.copytree(adi, workdir / "data")
    done = _hnmine("index", "--workdir", str(workdir), "--beir", str(workdir / "data"), "--retrievers", "bm25", "-q")
    assert done.returncode == 0, done.stderr


def test_a_killed_mine_never_lets_a_positive_become_a_negative(tmp_path, adi_workdir, adi_rows):
    """mine killed right after it wrote the new qrels (doc D now a positive of query Q, where the
    finished run had D as Q's negative): export alone must refuse, never mix the two runs."""
    corpus, queries, qrels = adi_rows
    beir = write_beir(tmp_path / "beir", corpus, queries, qrels)
    _finished(adi_workdir, beir)
    first = pl.read_ipc(adi_workdir / "negatives.arrow").row(0, named=True)
    write_beir(tmp_path / "beir", corpus, queries, [*qrels, (first["query_id"], first["doc_id"], 1)])
    _killed_at("hnmine.stages.mine:write_table", 2, "mine", "--workdir", str(adi_workdir), "--beir", str(tmp_path / "beir"),
               "--split", "test", "--top-k", "10", "-q")
    _one_line_error(_hnmine("export", "--workdir", str(adi_workdir), "-q"), "hnmine mine")


def test_a_killed_export_never_leaves_a_training_file_beside_other_ids(tmp_path, adi_workdir, adi):
    """An earlier export, then a new one killed between its two writes (ids, then training file):
    a training file that is there always matches its ids, row for row."""
    _finished(adi_workdir, adi)
    filter_stage(adi_workdir, FilterParams(num_negatives=2), progress=False)
    _killed_at("os:replace", 1, "export", "--workdir", str(adi_workdir), "-q")  # right after the ids are in place
    train, ids = adi_workdir / "export" / "n-tuple.parquet", adi_workdir / "export" / "n-tuple.ids.parquet"
    if train.exists():
        rows, sidecar = pl.read_parquet(train), pl.read_parquet(ids)
        assert rows.height == sidecar.height and rows.width == sidecar.width
    done = _hnmine("export", "--workdir", str(adi_workdir), "-q")
    assert done.returncode == 0, done.stderr
    rows, sidecar = pl.read_parquet(train), pl.read_parquet(ids)
    assert rows.width == 4 and rows.height == sidecar.height and rows.width == sidecar.width


@pytest.mark.parametrize("name", ["corpus.arrow", "candidates.arrow", "index/dense/embeddings.npy"])
def test_a_truncated_output_is_rerun_or_refused_never_reused(tmp_path, adi_workdir, adi, name):
    train = _finished(adi_workdir, adi)
    expected = pl.read_parquet(train)
    path = adi_workdir / name
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    # the stage that wrote it sees it is not what its manifest recorded: a later stage refuses it
    if name == "candidates.arrow":
        _one_line_error(_hnmine("score", "--workdir", str(adi_workdir), "--scorer", "none", "-q"), "candidates.arrow",
                        "hnmine mine")
    config = tmp_path / "run.toml"
    config.write_text(textwrap.dedent(f"""
        workdir = "{adi_workdir}"
        [data]
        beir = "{adi}"
        split = "test"
        [index]
        retrievers = ["dense", "bm25"]
        model = "{MODEL}"
        [mine]
        top_k = 10
        [score]
        scorer = "none"
        [filter]
        num_negatives = 3
    """))
    done = _hnmine("run", str(config))
    assert done.returncode == 0, done.stderr
    assert "ran nothing" not in done.stdout
    assert pl.read_parquet(train).equals(expected)


def test_a_corrupt_manifest_or_a_file_as_work_dir_is_one_line(tmp_path, adi_workdir, adi):
    _finished(adi_workdir, adi)
    (adi_workdir / "scored.manifest.json").write_text('{"stage": "sc')
    _one_line_error(_hnmine("filter", "--workdir", str(adi_workdir), "--num-negatives", "3", "-q"),
                    "scored.manifest.json")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    _one_line_error(_hnmine("index", "--workdir", str(not_a_dir), "--beir", str(adi), "-q"), str(not_a_dir))


def test_a_work_dir_that_cannot_be_made_is_one_line(tmp_path, adi):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(_hnmine("index", "--workdir", str(blocker / "work"), "--beir", str(adi), "-q"), str(blocker))


def test_temporaries_of_dead_processes_are_swept(tmp_path, adi_workdir, adi):
    """A SIGKILL leaves `NAME.tmp-PID`; the next stage on the work dir deletes it (a live
    process's temporaries are kept)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    litter = adi_workdir / "index" / "dense" / f"embeddings.npy.tmp-{dead.pid}"
    litter.write_bytes(b"\0" * 4096)
    live = adi_workdir / f"queries.arrow.tmp-{os.getppid()}"
    live.write_bytes(b"x")
    _finished(adi_workdir, adi)
    assert not litter.exists()
    assert live.exists()


def test_sigterm_ends_a_stage_like_ctrl_c(tmp_path, adi):
    workdir = tmp_path / "work"
    process = subprocess.Popen([sys.executable, "-m", "hnmine.cli", "index", "--workdir", str(workdir), "--beir",
                                str(adi), "--model", MODEL, "-q", "--chunk-size", "1", "--batch-size", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    chunks = workdir / "index" / "dense" / "chunks"
    deadline = time.time() + 240
    while time.time() < deadline and not (chunks.is_dir() and list(chunks.rglob("*.npy"))):
        time.sleep(0.02)
    assert process.poll() is None, "index finished before it could be signalled"  # 82 one-document chunks to go
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not [p for p in workdir.rglob("*") if ".tmp-" in p.name]
    assert not (workdir / "index" / "dense" / "manifest.json").exists()
