"""Atomic Arrow IPC writes and shard-aware reads.

A stage never leaves a file that looks finished: it writes `NAME.tmp-PID` in the same folder and
renames it over `NAME` only after the last byte is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from hnmine.errors import HnmineError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it to `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_TEMPORARY = re.compile(r".+\.tmp-(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists (PermissionError: it does)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep_temporaries(root: Path) -> int:
    """Delete the temporaries (`NAME.tmp-PID`) that killed processes left under `root`; a live
    process's are kept. Returns how many were deleted."""
    swept = 0
    for path in Path(root).rglob("*.tmp-*"):
        match = _TEMPORARY.fullmatch(path.name)
        if not match or int(match[1]) == os.getpid() or _alive(int(match[1])):
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            swept += 1
        except FileNotFoundError:
            pass
    return swept


def write_table(table: pa.Table, path: Path) -> Path:
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=65536)
    return Path(path)


class BatchWriter:
    """Stream record batches into an Arrow IPC file that appears (atomically) on `close()`."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._sink = pa.OSFile(str(tmp), "wb")
        self._writer = ipc.new_file(self._sink, schema)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._writer.close()
        self._sink.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


SHARD_PATTERN = r"shard-(\d+)-of-(\d+)\.arrow"


def shard_name(k: int, n: int) -> str:
    """Shard k (1-based) of n: `shard-0000k-of-0000n.arrow` (the name SHARD_PATTERN reads back)."""
    return f"shard-{k:05d}-of-{n:05d}.arrow"


def _check_shard_set(folder: Path, files: list[Path]) -> None:
    """Shards `shard-K-of-N.arrow` of one run only, and all N of them: never a silent mix or a gap."""
    found: dict[int, set[int]] = {}
    for file in files:
        match = re.fullmatch(SHARD_PATTERN, file.name)
        if match:
            found.setdefault(int(match[2]), set()).add(int(match[1]))
    if len(found) > 1:
        raise HnmineError(f"holds shards of runs split {' and '.join(str(n) for n in sorted(found))} ways",
                          path=folder, fix="delete the folder and rerun the stage with one --shard count")
    for n, ks in found.items():
        missing = sorted(set(range(1, n + 1)) - ks)
        if missing:
            raise HnmineError(f"shard {missing[0]} of {n} is missing ({len(missing)} missing)", path=folder,
                              fix=f"run the stage with --shard {missing[0]}/{n} (and the other missing ones)")


def shard_files(path: Path) -> list[Path]:
    """The Arrow files behind `path`: the file itself, or the `*.arrow` shards of a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.arrow"))
        if not files:
            raise HnmineError("folder holds no .arrow shards", path=path, fix="run the stage that writes it first")
        _check_shard_set(path, files)
        return files
    if not path.exists():
        raise HnmineError("file not found", path=path, fix="run the stage that writes it first, or check the path")
    return [path]


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read an Arrow IPC file, or concatenate a folder of shards, memory-mapped."""
    tables = []
    for file in shard_files(path):
        with pa.memory_map(str(file), "r") as source:
            table = ipc.open_file(source).read_all()
        tables.append(table.select(columns) if columns else table)
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
