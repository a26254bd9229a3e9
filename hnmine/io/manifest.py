"""Manifests: what made an output, so a rerun can tell whether it is still valid.

A manifest sits beside its output, named by `manifest_path`. Its `fingerprint` hashes only what determines the output (stage, params,
input fingerprints, hnmine version), never timings, so an unchanged rerun gives the same
fingerprint and everything downstream of it stays valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from hnmine import __version__
from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path

_VERSIONED = ("torch", "sentence-transformers", "transformers", "faiss-cpu", "faiss-gpu", "bm25s", "pyarrow", "polars", "numpy")


MANIFEST = "manifest.json"
MANIFEST_SUFFIX = ".manifest.json"


HIDDEN_DIR = ".hnmine"


def manifest_path(output: Path) -> Path:
    """`candidates.arrow` -> `candidates.manifest.json` beside it; a folder keeps `manifest.json`
    inside. Any other file is a deliverable (an export) that trainers and `datasets` read by the
    folder, so its manifest keeps out of their way in the folder's hidden `.hnmine/`, under the
    file's whole name (`.hnmine/n-tuple.parquet.manifest.json`): two files that share a stem never
    share a manifest."""
    output = Path(output)
    if output.suffix == "" or output.is_dir():
        return output / MANIFEST
    if output.suffix == ".arrow":
        return output.with_name(output.name.removesuffix(".arrow") + MANIFEST_SUFFIX)
    return output.parent / HIDDEN_DIR / (output.name + MANIFEST_SUFFIX)


COMMAND_ENV = "HNMINE_COMMAND"  # set by an executor for its tasks: the command the user ran


def command_line() -> str:
    """The command this run was started with, as a shell would take it (`hnmine mine WORKDIR ...`):
    the executor's (a Ray task's process is a worker), else this process's."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return shlex.join(argv)


_SAMPLE = 1 << 16


def file_signature(path: Path) -> dict:
    """What a manifest records of each file it describes: the size, and a hash of its first and last
    64 KiB, so a truncated or replaced file is caught without reading a large one whole."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if size > _SAMPLE:
            handle.seek(max(_SAMPLE, size - _SAMPLE))
            digest.update(handle.read(_SAMPLE))
    return {"size": size, "sample": digest.hexdigest()}


def _described_files(output: Path) -> list[Path]:
    """The files a manifest of `output` vouches for: the file, or every file under the folder but
    manifests, locks and temporaries."""
    output = Path(output)
    if not output.is_dir():
        return [output]
    return sorted(p for p in output.rglob("*") if p.is_file() and not p.name.endswith(MANIFEST_SUFFIX)
                  and p.name != MANIFEST and ".tmp-" not in p.name and not p.name.startswith(".")
                  and not _inside_other_output(p, output))


def _inside_other_output(path: Path, output: Path) -> bool:
    """A file in a subfolder with a manifest of its own (a named dense index inside index/dense/)
    belongs to that output, not to the folder around it."""
    folder = path.parent
    while folder != output:
        if (folder / MANIFEST).exists():
            return True
        folder = folder.parent
    return False


def signatures(output: Path, also: tuple[Path, ...] = ()) -> dict[str, dict]:
    """Signatures of `output`'s files and of `also` (files written with it, such as an export's ids),
    by path relative to the manifest's folder."""
    base = Path(output) if Path(output).is_dir() else Path(output).parent
    files = _described_files(output) + [Path(p) for p in also if Path(p).is_file()]
    return {os.path.relpath(p, base): file_signature(p) for p in files}


def changed_files(output: Path, manifest: dict) -> list[str]:
    """The files of `output` that are not what its manifest recorded (missing, other size or bytes).
    A manifest that recorded none (written by an earlier hnmine) vouches for nothing to compare."""
    recorded = manifest.get("files")
    if recorded is None:
        return []
    base = Path(output) if Path(output).is_dir() else Path(output).parent
    changed = []
    for name, signature in recorded.items():
        path = base / name
        try:
            if file_signature(path) != signature:
                changed.append(name)
        except OSError:
            changed.append(name)
    return changed


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def identity_fingerprint(stage: str, params: dict, inputs: dict[str, str]) -> str:
    body = _canonical({"stage": stage, "params": params, "inputs": inputs, "hnmine": __version__})
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


def input_fingerprint(path: Path) -> str:
    """A stage output is identified by its manifest's fingerprint; any other file by its bytes."""
    path = Path(path)
    if not path.exists():
        raise HnmineError("file not found", path=path, fix="run the stage that writes it first, or check the path")
    manifest = manifest_path(path)
    if manifest.exists():
        return read_manifest(manifest)["fingerprint"]
    if path.is_dir():
        digest = hashlib.blake2b(digest_size=16)
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(hash_file(child).encode())
        return digest.hexdigest()
    return hash_file(path)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "hnmine": __version__}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_manifest(
    output: Path,
    *,
    stage: str,
    params: dict,
    inputs: dict[str, str],
    outputs: dict[str, Any],
    stats: dict[str, Any],
    seconds: float,
    lineage: dict[str, str] | None = None,
    fingerprint: str | None = None,
    also: tuple[Path, ...] = (),
) -> dict:
    """Describe `output`: what made it (the fingerprint), its files' signatures, and its lineage
    (the fingerprint of every work-dir output it descends from, by path in the work dir)."""
    manifest = {
        "stage": stage,
        "fingerprint": fingerprint or identity_fingerprint(stage, params, inputs),
        "params": params,
        "inputs": inputs,
        "lineage": lineage or {},
        "files": signatures(output, also),
        "outputs": outputs,
        "stats": stats,
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(),
        "versions": package_versions(),
    }
    path = manifest_path(output)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def read_manifest(path: Path) -> dict:
    """A manifest's content; a file that is not one is the one-line error naming it."""
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or "fingerprint" not in manifest:
        raise HnmineError("is not a valid manifest (cut short or edited)", path=path,
                          fix="delete it and rerun the stage that writes it")
    return manifest


def matches(output: Path, fingerprint: str) -> bool:
    """True when `output` exists, its manifest has this fingerprint, and its files are the ones the
    manifest recorded (a truncated or replaced output is rerun, never reused)."""
    output = Path(output)
    path = manifest_path(output)
    if not output.exists() or not path.exists():
        return False
    try:
        manifest = read_manifest(path)
    except (OSError, HnmineError):
        return False
    return manifest.get("fingerprint") == fingerprint and not changed_files(output, manifest)


def is_current(output: Path, stage: str, params: dict, inputs: dict[str, str]) -> bool:
    """True when `output` matches the manifest the same stage, params and inputs would write."""
    return matches(output, identity_fingerprint(stage, params, inputs))
