"""Manifests: what made an output, so a rerun can tell whether it is still valid.

A manifest sits beside its output, named by `manifest_path`. Its `fingerprint` hashes only what determines the output (stage, params,
input fingerprints, hnmine version), never timings, so an unchanged rerun gives the same
fingerprint and everything downstream of it stays valid.
"""

from __future__ import annotations

import hashlib
import json
import platform
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


def manifest_path(output: Path) -> Path:
    """`candidates.arrow` -> `candidates.manifest.json`; any other file keeps its whole name
    (`train.parquet.manifest.json`, `x.v1.parquet.manifest.json`), so two outputs that share a stem
    never share a manifest; a folder keeps `manifest.json` inside."""
    output = Path(output)
    if output.suffix == "" or output.is_dir():
        return output / MANIFEST
    return output.with_name(output.name.removesuffix(".arrow") + MANIFEST_SUFFIX)


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
) -> dict:
    manifest = {
        "stage": stage,
        "fingerprint": identity_fingerprint(stage, params, inputs),
        "params": params,
        "inputs": inputs,
        "outputs": outputs,
        "stats": stats,
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(),
    }
    path = manifest_path(output)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def read_manifest(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def is_current(output: Path, stage: str, params: dict, inputs: dict[str, str]) -> bool:
    """True when `output` exists and its manifest was made by the same stage, params and inputs."""
    output = Path(output)
    path = manifest_path(output)
    if not output.exists() or not path.exists():
        return False
    try:
        manifest = read_manifest(path)
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("fingerprint") == identity_fingerprint(stage, params, inputs)
