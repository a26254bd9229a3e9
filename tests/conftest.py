"""Shared fixtures: real data from ../shared/data and the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODEL = "all-MiniLM-L6-v2"


def dataset(name: str) -> Path:
    path = DATA / name
    if not (path / "corpus.jsonl.gz").exists():
        pytest.fail(f"shared data set {path} is missing: tests read ../shared/data beside the repo")
    return path


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_qrels(path: Path) -> list[tuple[str, str, float]]:
    rows = []
    for line in path.read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        rows.append((q, d, float(s)))
    return rows


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple], split: str = "test") -> Path:
    """A small BEIR folder built from (edited) real rows."""
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s:g}" for q, d, s in qrels]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def adi() -> Path:
    return dataset("adi")


@pytest.fixture(scope="session")
def adi_rows(adi):
    return read_jsonl(adi / "corpus.jsonl.gz"), read_jsonl(adi / "queries.jsonl.gz"), read_qrels(adi / "qrels" / "test.tsv")


@pytest.fixture(scope="session")
def adi_indexed(tmp_path_factory, adi) -> Path:
    """A work dir with adi's corpus, dense and BM25 indexes, built once per session."""
    from hnmine.config import DataParams, IndexParams
    from hnmine.stages.index import index

    workdir = tmp_path_factory.mktemp("adi-indexed")
    index(workdir, DataParams(beir=adi), IndexParams(retrievers=["dense", "bm25"], model=MODEL), progress=False)
    return workdir


@pytest.fixture
def adi_workdir(adi_indexed, tmp_path) -> Path:
    """A private copy of the indexed adi work dir."""
    target = tmp_path / "work"
    shutil.copytree(adi_indexed, target)
    return target


@pytest.fixture
def filtered(adi_workdir, adi) -> Path:
    """adi_workdir mined (dense top 10), passed through `score --scorer none` and filtered to 3
    negatives per query: what the export tests start from."""
    from hnmine.config import DataParams, FilterParams, MineParams, ScoreParams
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10), progress=False)
    score(adi_workdir, ScoreParams(), progress=False)
    filter_stage(adi_workdir, FilterParams(num_negatives=3), progress=False)
    return adi_workdir


@pytest.fixture(scope="session")
def mined_once(adi_rows, tmp_path_factory):
    """Six adi queries over the whole adi corpus, dense top 5: what the judge tests score (a judge on
    the positives and the top candidate: about 35 pairs).

    Small on purpose: SmolLM2 on llama.cpp answers about one 300-token prompt per second here."""
    from hnmine.config import DataParams, IndexParams, MineParams
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine

    corpus, queries, qrels = adi_rows
    chosen = {q["_id"] for q in queries[:6]}
    root = tmp_path_factory.mktemp("http-judge")
    beir = write_beir(root / "beir", corpus, [q for q in queries if q["_id"] in chosen], [r for r in qrels if r[0] in chosen])
    workdir = root / "work"
    index(workdir, DataParams(beir=beir), IndexParams(model=MODEL), progress=False)
    mine(workdir, DataParams(beir=beir), MineParams(top_k=5), progress=False)
    return workdir
