"""`hnmine run CONFIG --ray ADDRESS`: the per-shard work as Ray tasks, the same files as a local run.

There is no second code path: every task calls the same stage function a local run calls, with a
`--shard K/N` (or, for encoding, a K-th share of the corpus chunks), and the stages' shard
folders are the merge: the next stage reads the folder of shards, and `export` writes the same
Parquet as a local run (tested against a real local cluster). The work dir must be on a filesystem
every Ray node sees (one machine, or a shared mount); the hnmine package must be importable on the
workers (the same environment, or a Ray runtime_env).

Order: corpus ingest (driver) -> encoding shares (tasks) -> dense assembly + BM25 (driver) ->
mine shards -> score shards -> filter shards (tasks) -> export (driver).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hnmine.errors import HnmineError
from hnmine.io.manifest import COMMAND_ENV, command_line
from hnmine.io.shard_sets import merge_shard_stats
from hnmine.run_config import RunConfig
from hnmine.workdir import StageResult, WorkDir


def _ray():
    try:
        import ray
    except ImportError:
        raise HnmineError("--ray needs Ray", fix="pip install 'hnmine[ray]'") from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """ray.init keeps retrying an address where nothing listens (minutes): fail at once instead."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise HnmineError(f"cannot reach a Ray cluster at '{address}' ({exc.strerror or exc})",
                          fix="start one with `ray start --head` and pass its address, or `--ray auto` on a node") from None


def _merged(stage: str, parts: list[StageResult], seconds: float, workdir: Path, name: str) -> StageResult:
    """One result per stage: counts summed over shards (whole-run figures once), the stage's wall
    time on the cluster."""
    stats = merge_shard_stats([part.stats for part in parts])
    return StageResult(stage, {name: WorkDir(workdir).folder(name)}, stats, reused=all(p.reused for p in parts), seconds=seconds,
                       warnings=[w for p in parts for w in p.warnings])


def run_on_ray(config: RunConfig, address: str, shards: int | None = None, progress: bool = True) -> list[StageResult]:
    ray = _ray()
    from hnmine.stages.export import export
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.index import encode_part, index, ingest_corpus
    from hnmine.stages.mine import mine
    from hnmine.stages.run import index_params as run_index_params
    from hnmine.stages.score import score

    workdir = Path(config.workdir).resolve()
    index_params = run_index_params(config)

    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise HnmineError(f"cannot reach a Ray cluster at '{address}' ({str(exc).splitlines()[0]})",
                              fix="start one with `ray start --head` and pass its address, or `--ray auto` on a node") from None
    n = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
    command = command_line()  # the manifests the tasks write name the driver's command

    @ray.remote
    def encode_task(k: int) -> dict:
        os.environ[COMMAND_ENV] = command
        return encode_part(workdir, index_params, k, n)

    @ray.remote
    def stage_task(which: str, k: int) -> StageResult:
        os.environ[COMMAND_ENV] = command
        shard = f"{k + 1}/{n}"
        if which == "mine":
            return mine(workdir, config.data, config.mine.model_copy(update={"shard": shard}), progress=False)
        if which == "score":
            return score(workdir, config.score.model_copy(update={"shard": shard}), progress=False)
        return filter_stage(workdir, config.filter.model_copy(update={"shard": shard}), progress=False)

    results = []
    began = time.perf_counter()
    ingest_corpus(workdir, config.data)
    encoded = []
    if "dense" in index_params.retrievers and index_params.embeddings is None:
        encoded = ray.get([encode_task.remote(k) for k in range(n)])
    results.append(index(workdir, config.data, index_params, progress=progress))  # assembles; BM25 on the driver
    results[-1].seconds = time.perf_counter() - began
    if encoded and not results[-1].reused:
        dense_stats = results[-1].stats.get("dense", {})
        dense_stats["docs_encoded_by_ray_tasks"] = sum(e.get("docs_encoded", 0) for e in encoded)
        dense_stats["ray_encode_tasks"] = n
    WorkDir(workdir).clear_for_shards(n)
    for stage, name in (("mine", "candidates"), ("score", "scored"), ("filter", "negatives")):
        began = time.perf_counter()
        parts = ray.get([stage_task.remote(stage, k) for k in range(n)])
        results.append(_merged(stage, parts, time.perf_counter() - began, workdir, name))
        if stage == "filter":
            results[-1].outputs["dropped"] = WorkDir(workdir).folder("dropped")
    results.append(export(workdir, config.export, progress=progress))
    return results
