"""The work directory: every path and file name of a run, and the stage lifecycle, in one place.

`WorkDir` names every file a run reads or writes (stage outputs, shards, indexes, the score cache,
exports, manifests and sidecars); stages ask it and never build a name themselves. `run_stage`
is the lifecycle every stage shares: reuse a current output, else drop the stale manifest, run the
stage's transform under a timer, write the manifest and return the StageResult; for a shard, it
also writes the folder manifest once the shard set is complete.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hnmine.config import parse_shard
from hnmine.errors import HnmineError
from hnmine.io.files import SHARD_PATTERN, shard_name, sweep_temporaries
from hnmine.io.lock import workdir_lock
from hnmine.io.manifest import (
    MANIFEST,
    MANIFEST_SUFFIX,
    changed_files,
    identity_fingerprint,
    input_fingerprint,
    is_current,
    manifest_path,
    matches,
    read_manifest,
    write_manifest,
)
from hnmine.io.shard_sets import complete_shard_set, without_shard
from hnmine.retrievers.embedding_store import CHUNKS_DIR, EMBEDDINGS_FILE
from hnmine.retrievers.faiss_index import FAISS_FILE

ARROW = ".arrow"
JSONL_FORMATS = ("flagembedding", "tevatron", "tevatron-ids")


def ids_path(output: Path) -> Path:
    """An export's row-aligned ids: `n-tuple.parquet` -> `n-tuple.ids.parquet`; any other name keeps
    its suffix (`flagembedding.jsonl` -> `flagembedding.jsonl.ids.parquet`), so two exports that
    share a stem never share a sidecar."""
    output = Path(output)
    stem = output.name.removesuffix(".parquet") if output.name.endswith(".parquet") else output.name
    return output.with_name(stem + ".ids.parquet")


def is_shard_of(path: Path, n: int) -> bool:
    """A shard file of an n-way split, or its manifest, or the folder's own manifest."""
    name = Path(path).name
    return name == MANIFEST or name.endswith(f"-of-{n:05d}{ARROW}") or name.endswith(f"-of-{n:05d}{MANIFEST_SUFFIX}")


class WorkDir:
    """The files of one run, by what they are."""

    SHARDED = ("candidates", "scored", "negatives", "dropped")

    def __init__(self, root: Path):
        self.root = Path(root)

    # whole-run stage files
    def whole(self, name: str) -> Path:
        return self.root / f"{name}{ARROW}"

    def folder(self, name: str) -> Path:
        return self.root / name

    @property
    def corpus(self) -> Path:
        return self.whole("corpus")

    @property
    def corpus_skipped(self) -> Path:
        return self.whole("corpus.skipped")

    @property
    def queries(self) -> Path:
        return self.whole("queries")

    @property
    def qrels(self) -> Path:
        return self.whole("qrels")

    # indexes and caches
    @property
    def dense(self) -> Path:
        return self.root / "index" / "dense"

    def dense_index(self, name: str = "") -> Path:
        """The default dense index (no name), or a named one inside its folder: index/dense/NAME/."""
        return self.dense / name if name else self.dense

    @property
    def dense_embeddings(self) -> Path:
        return self.dense / EMBEDDINGS_FILE

    @property
    def dense_chunks(self) -> Path:
        return self.dense / CHUNKS_DIR

    @property
    def faiss_index(self) -> Path:
        return self.dense / FAISS_FILE

    @property
    def bm25(self) -> Path:
        return self.root / "index" / "bm25"

    @property
    def score_cache(self) -> Path:
        return self.root / "cache" / "scores"

    # exports and tools
    def export(self, fmt: str = "n-tuple") -> Path:
        """`export/<format>.parquet` (`.jsonl` for the JSONL formats): each format its own file, so
        exports of several formats share the folder (and its dataset card) without overwriting."""
        if fmt == "beir-subset":  # a folder
            return self.root / "export" / fmt
        return self.root / "export" / f"{fmt}{'.jsonl' if fmt in JSONL_FORMATS else '.parquet'}"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration"

    # shards
    def output(self, name: str, shard: str | None) -> Path:
        """`name.arrow` for a whole run; `name/shard-K-of-N.arrow` for one shard (readers take the folder)."""
        if not shard:
            return self.whole(name)
        k, n = parse_shard(shard)
        return self.folder(name) / shard_name(k + 1, n)

    def stage_input(self, name: str) -> Path:
        """The whole-run file if there is one, else the folder of shards. A whole-run file older than
        a shard beside it is from an earlier run: an error, never a silent choice of the stale one."""
        whole, folder = self.whole(name), self.folder(name)
        if not whole.exists():
            return folder
        shards = list(folder.glob(f"*{ARROW}")) if folder.is_dir() else []
        if shards and max(p.stat().st_mtime_ns for p in shards) > whole.stat().st_mtime_ns:
            raise HnmineError(f"older than the shards in {folder}", path=whole,
                              fix=f"delete {whole.name} to use the shards, or the folder {folder.name}/ to use the "
                                  "whole-run file")
        return whole

    def shard_input(self, name: str, shard: str | None) -> Path:
        """What a per-query stage reads: its own shard of `name`, or the whole run's."""
        return self.output(name, shard) if shard else self.stage_input(name)

    def clear_for_shards(self, n: int) -> None:
        """Before an n-way sharded run: remove the whole-run files of the sharded stages (they would
        be read before the folders) and any folder holding another split's shards."""
        import shutil

        for name in self.SHARDED:
            for path in (self.whole(name), manifest_path(self.whole(name))):
                path.unlink(missing_ok=True)
            folder = self.folder(name)
            if folder.is_dir() and any(not is_shard_of(p, n) for p in folder.iterdir()):
                shutil.rmtree(folder)


# the stage lifecycle


@dataclass
class StageResult:
    stage: str
    outputs: dict[str, Path]
    stats: dict = field(default_factory=dict)
    reused: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    parts: list[StageResult] = field(default_factory=list)  # sub-outputs (index: corpus, dense, bm25)


@dataclass
class Done:
    """What a transform returns: its stats, row counts per output for the manifest, warnings, and
    outputs beyond the stage's own (mine also writes queries and qrels)."""

    stats: dict
    rows: dict[str, dict]
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class Stage:
    """One stage run: its name in the manifest, its output (the file the manifest describes), the
    parameters and input files that identify it, the other files a reuse needs, and its shard.

    `root` is the work dir: an input inside it is another stage's output, and must have a manifest
    that still describes its bytes and agrees with the other inputs on what they descend from.
    `sidecars` are files the stage writes beside its output that other stages read, each with a
    manifest of its own (mine's queries and qrels, filter's dropped candidates)."""

    name: str
    output: Path
    params: dict
    inputs: dict[str, Path]
    outputs: dict[str, Path]
    root: Path
    needs: tuple[Path, ...] = ()
    shard: str | None = None
    sidecars: tuple[Path, ...] = ()


# which command writes each work-dir output (by its first path part), for the fix of an error
_WRITERS = {"corpus": "hnmine index", "index": "hnmine index", "queries": "hnmine mine", "qrels": "hnmine mine",
            "candidates": "hnmine mine", "scored": "hnmine score", "negatives": "hnmine filter",
            "dropped": "hnmine filter"}


def _key(path: Path, root: Path) -> str:
    """A work-dir output's name in a lineage: its path inside the work dir. Links inside the work
    dir are not followed (a round's corpus and indexes link to its parent's and are still the
    round's); the resolved paths decide only when the two are given through different links."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def _inside(path: Path, root: Path) -> bool:
    try:
        _key(path, root)
        return True
    except ValueError:
        return False


def _writer(key: str) -> str:
    return _WRITERS.get(key.split("/")[0].removesuffix(ARROW), "the stage that wrote it")


def _is_output(path: Path, root: Path) -> bool:
    """A stage output of this work dir (a user file that happens to sit inside it is not one)."""
    return _inside(path, root) and _key(path, root).split("/")[0].removesuffix(ARROW) in _WRITERS


def verified_manifest(path: Path, root: Path) -> dict:
    """The manifest of a work-dir output another stage is about to read: it must exist (a stage
    that did not finish leaves none) and still describe the output's bytes."""
    key = _key(path, root)
    manifest_file = manifest_path(path)
    if not Path(path).exists():
        raise HnmineError("file not found", path=path,
                          fix=f"run the stage that writes it first: `{_writer(key)}`, or `hnmine run`")
    if not manifest_file.exists():
        raise HnmineError("has no manifest: the stage that writes it did not finish (killed, or failed)", path=path,
                          fix=f"rerun `{_writer(key)}` (or `hnmine run`)")
    manifest = read_manifest(manifest_file)
    changed = changed_files(path, manifest)
    if changed:
        raise HnmineError(f"is not the file its manifest describes ({', '.join(changed[:3])}: cut short or replaced "
                          "since it was written)", path=path, fix=f"rerun `{_writer(key)}` (or `hnmine run`)")
    return manifest


def _upstream(stage: Stage) -> tuple[dict[str, str], dict[str, str]]:
    """The fingerprints of the stage's inputs, and the lineage they carry: every work-dir output
    they descend from, by fingerprint. Two inputs made from different versions of one output (a
    killed or newer upstream run between them) are an error, never a silent mix."""
    fingerprints: dict[str, str] = {}
    lineage: dict[str, str] = {}
    origin: dict[str, str] = {}
    for name, path in stage.inputs.items():
        if not _is_output(path, stage.root):
            fingerprints[name] = input_fingerprint(path)
            continue
        manifest = verified_manifest(path, stage.root)
        fingerprints[name] = manifest["fingerprint"]
        carried = {**manifest.get("lineage", {}), _key(path, stage.root): manifest["fingerprint"]}
        for key, fingerprint in carried.items():
            if lineage.setdefault(key, fingerprint) != fingerprint:
                raise HnmineError(f"was made from another version of {key} than {origin[key]} was (an earlier stage "
                                  "reran, or was killed, since one of them was written)", path=path,
                                  fix=f"rerun the stages after `{_writer(key)}`, or `hnmine run`")
            origin.setdefault(key, Path(path).name)
    return fingerprints, lineage


def _sidecar_fingerprint(stage: Stage, sidecar: Path, inputs: dict[str, str]) -> str:
    """A sidecar's identity: the stage's, less the shard, plus its place (mine's shards all write
    the same queries.arrow; a sidecar of one shard has the shard in its path)."""
    return identity_fingerprint(f"{stage.name}:{_key(sidecar, stage.root)}", without_shard(stage.params), inputs)


def _is_current(stage: Stage, inputs: dict[str, str]) -> bool:
    """The stage's output and its sidecars match what this run would write, and the files a reuse
    needs are there."""
    return is_current(stage.output, stage.name, stage.params, inputs) and \
        all(Path(p).exists() for p in stage.needs) and \
        all(matches(sidecar, _sidecar_fingerprint(stage, sidecar, inputs)) for sidecar in stage.sidecars)


def is_stage_current(stage: Stage) -> bool:
    """True when the stage would reuse its output (see `_is_current`)."""
    return _is_current(stage, _upstream(stage)[0])


def holding_lock(function):
    """For a stage's entry function: hold the work dir's lock (shared for a shard) from its first
    look at the work dir to its last write, so its checks and its run see one state of it."""

    @functools.wraps(function)
    def wrapper(workdir, *args, **kwargs):
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # a spawned worker (text hashes, candidate rows) is importing the caller's script, which
            # runs a stage at import: it would wait forever for the lock its parent holds (the flag
            # is the one multiprocessing's own spawn checks for this case)
            raise HnmineError("a worker process started by hnmine ran the calling script's stage calls",
                              fix="put the script's calls under `if __name__ == \"__main__\":`")
        shard = next((getattr(a, "shard", None) for a in (*args, *kwargs.values()) if getattr(a, "shard", None)), None)
        with workdir_lock(workdir, shared=bool(shard)):
            return function(workdir, *args, **kwargs)

    return wrapper


def run_stage(stage: Stage, transform: Callable[[], Done]) -> StageResult:
    """Under the work dir's lock: reuse `stage.output` when its manifest matches; else drop the
    stale manifests (the shard folder's and the sidecars' too), sweep dead runs' temporaries (a
    whole-run stage only), run `transform` under a timer, write the manifests, and complete the
    shard set."""
    with workdir_lock(stage.root, shared=bool(stage.shard)):
        return _run_locked(stage, transform)


def _run_locked(stage: Stage, transform: Callable[[], Done]) -> StageResult:
    inputs, lineage = _upstream(stage)
    if _is_current(stage, inputs):
        if stage.shard:
            _complete_shard_sets(stage)
        return StageResult(stage.name, dict(stage.outputs), read_manifest(manifest_path(stage.output))["stats"],
                           reused=True)
    for path in (stage.output, *stage.sidecars):
        per_shard = re.fullmatch(SHARD_PATTERN, Path(path).name) is not None
        if stage.shard and not per_shard:
            continue  # a whole-run sidecar every shard writes alike: the others' later stages may be reading it
        manifest_path(path).unlink(missing_ok=True)
        if per_shard:
            manifest_path(Path(path).parent).unlink(missing_ok=True)
    if not stage.shard:  # a shard's siblings may be writing on other hosts, whose pids mean nothing here
        sweep_temporaries(stage.root)
    start = time.perf_counter()
    done = transform()
    seconds = time.perf_counter() - start
    sidecar_fingerprints = {}
    for sidecar in stage.sidecars:
        fingerprint = _sidecar_fingerprint(stage, sidecar, inputs)
        write_manifest(sidecar, stage=stage.name, params=stage.params, inputs=inputs, outputs={}, stats={}, seconds=0.0,
                       lineage=lineage, fingerprint=fingerprint)
        sidecar_fingerprints[_key(sidecar, stage.root)] = fingerprint
    write_manifest(stage.output, stage=stage.name, params=stage.params, inputs=inputs, outputs=done.rows,
                   stats=done.stats, seconds=seconds, lineage=lineage | sidecar_fingerprints, also=stage.needs)
    if stage.shard:
        _complete_shard_sets(stage)
    return StageResult(stage.name, {**stage.outputs, **done.outputs}, done.stats, seconds=seconds,
                       warnings=done.warnings)


def _complete_shard_sets(stage: Stage) -> None:
    """The shard folders this shard belongs to: its output's, and its per-shard sidecars'."""
    for path in (stage.output, *stage.sidecars):
        if re.fullmatch(SHARD_PATTERN, Path(path).name):
            complete_shard_set(path, stage.name, stage.params)


def output_params(output: Path, command: str) -> dict:
    """The parameters the stage that wrote `output` (a file, or a complete shard folder) ran with."""
    path = manifest_path(output)
    if not path.exists():
        raise HnmineError("has no manifest: its stage did not finish, or its shards were made with different options",
                          path=output, fix=f"rerun `{command}` (every --shard K/N of it with the same options)")
    return read_manifest(path).get("params", {})
