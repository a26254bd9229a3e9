"""Shard sets: one manifest and one set of stats for the N shards of a stage.

When all N shards of a stage are written, each with a manifest of the same stage and parameters
(the shard aside), the folder gets a manifest of its own, so readers of the folder (export,
audit, the next stage) see the set's parameters, stats and lineage as they would a whole-run file's.
"""

from __future__ import annotations

from pathlib import Path

from hnmine.errors import HnmineError
from hnmine.io.files import shard_name
from hnmine.io.manifest import identity_fingerprint, manifest_path, read_manifest, write_manifest

ARROW = ".arrow"


def without_shard(params):
    """The parameters with every `shard` entry removed (mine nests its own under "mine")."""
    if isinstance(params, dict):
        return {k: without_shard(v) for k, v in params.items() if k != "shard"}
    return params


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
    same = without_shard(params)
    manifests = []
    for k in range(1, n + 1):
        shard = folder / shard_name(k, n)
        if not shard.exists() or not manifest_path(shard).exists():
            return
        try:
            manifest = read_manifest(manifest_path(shard))
        except (OSError, HnmineError):
            return
        if manifest.get("stage") != stage or without_shard(manifest.get("params")) != same:
            return
        manifests.append(manifest)
    inputs = {shard_name(k, n).removesuffix(ARROW): m["fingerprint"] for k, m in enumerate(manifests, start=1)}
    folder_params = same | {"shards": n}
    current = manifest_path(folder)
    if current.exists():
        try:
            if read_manifest(current).get("fingerprint") == identity_fingerprint(stage, folder_params, inputs):
                return
        except (OSError, HnmineError):
            pass
    lineage: dict = {}
    for manifest in manifests:
        for key, fingerprint in manifest.get("lineage", {}).items():
            if lineage.setdefault(key, fingerprint) != fingerprint:
                return  # shards made from different versions of an upstream output are no set
    outputs: dict = {}
    for manifest in manifests:
        for name, figures in manifest.get("outputs", {}).items():
            entry = outputs.setdefault(name, {"rows": 0})
            entry["rows"] += figures.get("rows", 0)
    write_manifest(folder, stage=stage, params=folder_params, inputs=inputs, outputs=outputs,
                   stats=merge_shard_stats([m.get("stats", {}) for m in manifests]),
                   seconds=sum(m.get("seconds", 0.0) for m in manifests), lineage=lineage)
