"""What every stage returns, and the small helpers they share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hnmine.config import DataParams, parse_shard
from hnmine.errors import HnmineError
from hnmine.io.manifest import (
    identity_fingerprint,
    input_fingerprint,
    manifest_path,
    read_manifest,
    write_manifest,
)


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


def _without_shard(params):
    """The parameters with every `shard` entry removed (mine nests its own under "mine")."""
    if isinstance(params, dict):
        return {k: _without_shard(v) for k, v in params.items() if k != "shard"}
    return params


def drop_folder_manifest(out: Path, shard: str | None) -> None:
    """A shard about to be (re)written makes its folder's manifest stale."""
    if shard:
        manifest_path(Path(out).parent).unlink(missing_ok=True)


def merge_shard_stats(parts: list[dict]) -> dict:
    """One stats dict for a set of shards: counts summed over shards, except the figures each shard
    read from whole-run files (listed in its `whole_run_stats`), which are the same in every shard
    and taken once; other values from the first shard."""
    stats: dict = {"shards": len(parts)}
    whole = set().union(*(part.get("whole_run_stats", []) for part in parts)) if parts else set()
    for part in parts:
        for key, value in part.items():
            if key in ("whole_run_stats", "shard") or isinstance(value, bool):
                continue
            if key in whole:
                stats.setdefault(key, value)
            elif isinstance(value, (int, float)):
                stats[key] = stats.get(key, 0) + value
            elif isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
                merged = stats.setdefault(key, {})
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
            elif key not in stats:
                stats[key] = value
    return stats


def complete_shard_set(out: Path, stage: str, params: dict) -> None:
    """After shard K of N is written (or found current): when all N shards are there, each with a
    manifest of this stage and these parameters (the shard aside), write the folder's manifest, so
    readers of the folder (export, audit, the next stage) see the set's parameters and stats as they
    would a whole-run file's. Idempotent: concurrent shards finishing together write the same one."""
    folder = Path(out).parent
    n = int(Path(out).stem.rsplit("-of-", 1)[1])
    same = _without_shard(params)
    manifests = []
    for k in range(1, n + 1):
        shard = folder / f"shard-{k:05d}-of-{n:05d}.arrow"
        if not shard.exists() or not manifest_path(shard).exists():
            return
        try:
            manifest = read_manifest(manifest_path(shard))
        except (OSError, ValueError):
            return
        if manifest.get("stage") != stage or _without_shard(manifest.get("params")) != same:
            return
        manifests.append(manifest)
    inputs = {f"shard-{k:05d}-of-{n:05d}": m["fingerprint"] for k, m in enumerate(manifests, start=1)}
    folder_params = same | {"shards": n}
    current = manifest_path(folder)
    if current.exists():
        try:
            if read_manifest(current).get("fingerprint") == identity_fingerprint(stage, folder_params, inputs):
                return
        except (OSError, ValueError):
            pass
    outputs: dict = {}
    for manifest in manifests:
        for name, figures in manifest.get("outputs", {}).items():
            entry = outputs.setdefault(name, {"rows": 0})
            entry["rows"] += figures.get("rows", 0)
    write_manifest(folder, stage=stage, params=folder_params, inputs=inputs, outputs=outputs,
                   stats=merge_shard_stats([m.get("stats", {}) for m in manifests]),
                   seconds=sum(m.get("seconds", 0.0) for m in manifests))


def output_params(output: Path, command: str) -> dict:
    """The parameters the stage that wrote `output` (a file, or a complete shard folder) ran with."""
    path = manifest_path(output)
    if not path.exists():
        raise HnmineError("has no manifest: its stage did not finish, or its shards were made with different options",
                          path=output, fix=f"rerun `{command}` (every --shard K/N of it with the same options)")
    return read_manifest(path).get("params", {})
