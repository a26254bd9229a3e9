"""A real SIGKILL in the middle of `hnmine index`, then a rerun: same embeddings, same training file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from conftest import MODEL

from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score

CHUNKING = {"chunk_size": 4, "batch_size": 4}


def _hnmine(*args: str) -> list[str]:
    return [sys.executable, "-m", "hnmine.cli", *args]


def _finish(workdir: Path, data: DataParams) -> pl.DataFrame:
    mine(workdir, data, MineParams(top_k=10), progress=False)
    score(workdir, ScoreParams(), progress=False)
    filter_stage(workdir, FilterParams(num_negatives=3), progress=False)
    return pl.read_parquet(export(workdir, ExportParams(), progress=False).outputs["train"])


def test_killed_index_resumes_to_the_same_result(tmp_path, adi):
    killed = tmp_path / "killed"
    chunks = killed / "index" / "dense" / "chunks"
    command = _hnmine("index", "--workdir", str(killed), "--beir", str(adi), "--model", MODEL, "-q",
                      "--chunk-size", "4", "--batch-size", "4")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if chunks.is_dir() and len(list(chunks.rglob("*.npy"))) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "index finished before it could be killed"
    saved = len(list(chunks.rglob("*.npy")))
    assert 3 <= saved < 21
    # nothing that looks finished: no embeddings, no manifest
    assert not (killed / "index" / "dense" / "embeddings.npy").exists()
    assert not (killed / "index" / "dense" / "manifest.json").exists()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"docs_resumed={saved * 4}" in rerun.stdout

    whole = tmp_path / "whole"
    data = DataParams(beir=adi)
    parts = index(whole, data, IndexParams(model=MODEL, **CHUNKING), progress=False).parts
    dense = next(part for part in parts if part.stage == "dense")
    # the encoder's loading and its calls are timed apart from the rest of the stage
    assert dense.stats["docs_encoded"] == 82 and 0 <= dense.stats["encoder_load_seconds"]
    assert 0 < dense.stats["encoding_seconds"] < dense.seconds - dense.stats["encoder_load_seconds"]
    resumed = np.load(killed / "index" / "dense" / "embeddings.npy")
    uninterrupted = np.load(whole / "index" / "dense" / "embeddings.npy")
    assert resumed.shape == uninterrupted.shape == (82, 384)
    np.testing.assert_allclose(resumed, uninterrupted, rtol=0, atol=1e-6)
    assert _finish(killed, data).equals(_finish(whole, data))
