"""What every stage returns, and the small helpers they share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hnmine.config import DataParams, parse_shard
from hnmine.errors import HnmineError
from hnmine.io.manifest import input_fingerprint


@dataclass
class StageResult:
    stage: str
    outputs: dict[str, Path]
    stats: dict = field(default_factory=dict)
    reused: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    parts: list[StageResult] = field(default_factory=list)  # sub-outputs (index: corpus, dense, bm25)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def fingerprints(paths: dict[str, Path]) -> dict[str, str]:
    return {name: input_fingerprint(path) for name, path in paths.items()}


# Data fields that only say where a file is: its content hash stands in the manifest's inputs.
_PATH_FIELDS = {"beir", "corpus", "queries", "qrels", "pairs"}
_CORPUS_FIELDS = {"id_column", "text_column", "title_column", "query_column", "positive_columns"}


def corpus_identity(data: DataParams) -> dict:
    ident = data.identity()
    return {k: v for k, v in ident.items() if k in _CORPUS_FIELDS} | {"layout": _layout(data)}


def query_identity(data: DataParams) -> dict:
    return {k: v for k, v in data.identity().items() if k not in _PATH_FIELDS} | {"layout": _layout(data)}


def _layout(data: DataParams) -> str:
    return "beir" if data.beir else "pairs" if data.pairs else "files"


def shard_slice(count: int, shard: str | None) -> slice:
    """Contiguous slice of `count` queries for shard K/N, so shards concatenate in query order."""
    k, n = parse_shard(shard)
    bounds = np.linspace(0, count, n + 1).round().astype(int)
    return slice(int(bounds[k]), int(bounds[k + 1]))


def shard_output(workdir: Path, name: str, shard: str | None) -> Path:
    """`name.arrow` for a whole run; `name/shard-K-of-N.arrow` for one shard (readers take the folder)."""
    if not shard:
        return Path(workdir) / f"{name}.arrow"
    k, n = parse_shard(shard)
    return Path(workdir) / name / f"shard-{k + 1:05d}-of-{n:05d}.arrow"


def stage_input(workdir: Path, name: str) -> Path:
    """The whole-run file if there is one, else the folder of shards. A whole-run file older than
    a shard beside it is from an earlier run: an error, never a silent choice of the stale one."""
    whole, folder = Path(workdir) / f"{name}.arrow", Path(workdir) / name
    if not whole.exists():
        return folder
    shards = list(folder.glob("*.arrow")) if folder.is_dir() else []
    if shards and max(p.stat().st_mtime_ns for p in shards) > whole.stat().st_mtime_ns:
        raise HnmineError(f"older than the shards in {folder}", path=whole,
                          fix=f"delete {whole.name} to use the shards, or the folder {folder.name}/ to use the whole-run file")
    return whole
