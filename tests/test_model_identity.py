"""A model is its content, not its path: one saved again in place is a new model for every stage
that uses it, and a relative model path in a config is relative to the config's folder."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
from conftest import MODEL

from hnmine.packaged.cross_encoder import prepare_cross_encoder
from hnmine.packaged.resolve import resolve_model
from hnmine.run_config import load_config
from hnmine.stages.run import run


def _ran(config: Path, cwd: Path) -> list[str]:
    """Run the config as `hnmine run` does, from another directory, in this process (a notebook that
    mines, trains and re-mines is one process too); the stages that ran rather than being reused."""
    here = Path.cwd()
    os.chdir(cwd)
    try:
        results = run(load_config(config), progress=False)
    finally:
        os.chdir(here)
    return [r.stage for r in results if not r.reused] or ["nothing"]


def _scored_now(workdir: Path) -> int:
    return json.loads((workdir / "scored.manifest.json").read_text())["stats"]["pairs_scored_now"]


def _config(folder: Path, adi: Path, model: str, scorer: str = "none", ce: str = "") -> Path:
    config = folder / "run.toml"
    config.write_text(textwrap.dedent(f"""
        workdir = "work"
        [data]
        beir = "{adi}"
        split = "test"
        [index]
        retrievers = ["dense"]
        model = "{model}"
        [mine]
        retriever = "dense"
        top_k = 10
        [score]
        scorer = "{scorer}"
        {f'model = "{ce}"' if ce else ''}
        {'max_length = 32' if ce else ''}
        top = 5
        [filter]
        num_negatives = 3
    """))
    return config


def _fine_tune_in_place(folder: Path) -> None:
    """What a training step does to the model folder: new weights under the same path."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    embeddings = model[0].auto_model.embeddings.word_embeddings.weight
    with __import__("torch").no_grad():
        embeddings.mul_(0.5)
    model.save(str(folder))


def test_a_model_saved_again_in_place_is_a_new_index(tmp_path, adi):
    """mine -> train -> re-mine with the model saved where it was, twice in one process: each rerun
    encodes the corpus again with the new weights (never old vectors, never a model loaded before)
    and matches a clean run. The model path is relative to the config, and the run starts from
    another directory."""
    project = tmp_path / "project"
    shutil.copytree(resolve_model(MODEL), project / "model")
    config = _config(project, adi, "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _ran(config, cwd=elsewhere)
    before = np.load(project / "work" / "index" / "dense" / "embeddings.npy")
    _fine_tune_in_place(project / "model")
    assert "index" in _ran(config, cwd=elsewhere)
    once = np.load(project / "work" / "index" / "dense" / "embeddings.npy")
    assert not np.allclose(before, once)
    # a second fine-tune in this process: the model loaded for the first one must not be served again
    _fine_tune_in_place(project / "model")
    assert "index" in _ran(config, cwd=elsewhere)
    after = np.load(project / "work" / "index" / "dense" / "embeddings.npy")
    assert not np.allclose(once, after)

    clean = tmp_path / "clean"
    shutil.copytree(project / "model", clean / "model")
    _ran(_config(clean, adi, "model"), cwd=elsewhere)
    np.testing.assert_allclose(after, np.load(clean / "work" / "index" / "dense" / "embeddings.npy"), atol=1e-6)
    assert pl.read_ipc(project / "work" / "candidates.arrow").equals(pl.read_ipc(clean / "work" / "candidates.arrow"))


def test_a_cross_encoder_saved_again_is_scored_again(tmp_path, adi):
    """The score cache is keyed by the model's content: a changed cross-encoder folder under the
    same path never answers from the scores the old one cached."""
    project = tmp_path / "project"
    shutil.copytree(prepare_cross_encoder(), project / "ce")
    config = _config(project, adi, MODEL, scorer="cross-encoder", ce="ce")
    _ran(config, cwd=tmp_path)
    pairs = _scored_now(project / "work")
    assert pairs > 0
    assert _ran(config, cwd=tmp_path) == ["nothing"]
    settings = project / "ce" / "config.json"
    settings.write_text(settings.read_text() + "\n")  # any change to its files is another model
    assert "score" in _ran(config, cwd=tmp_path)
    assert _scored_now(project / "work") == pairs
