"""One run at a time per work directory: an advisory lock on `WORKDIR/.hnmine.lock`.

A stage holds the lock exclusively while it reads its inputs and writes its outputs, so two
whole-run stages on one work dir never interleave their writes (and one never reads a file the
other is replacing). A second run waits for the first and says once that it is waiting, naming
the last holder's pid and command. Shard stages (`--shard K/N`, Ray tasks) are meant to run side
by side: they take the lock shared, which waits for an exclusive holder and lets other shards in;
shards of two differently configured runs are not kept apart by it (the shard-set manifest is: a
folder whose shards disagree gets none). The lock is re-entrant inside a process (`hnmine run`
holds it across its stages, and each stage takes it again), and the kernel drops it when the
holder dies, so a killed run never leaves it held. A file system without `flock` runs unlocked,
with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hnmine.errors import HnmineError

LOCK_FILE = ".hnmine.lock"

# root -> [file descriptor, depth, exclusive]: the locks this process holds
_held: dict[Path, list] = {}
_warned: set[Path] = set()


def _open(root: Path) -> int:
    if root.exists() and not root.is_dir():
        raise HnmineError("is a file, not a work directory", path=root, fix="give --workdir a folder (new or earlier)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        return os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        raise HnmineError("work directory is not writable", path=root,
                          fix="give --workdir a folder you can write to, or fix its permissions") from None
    except OSError as exc:
        raise HnmineError(f"cannot open the work directory's lock: {exc.strerror}", path=root,
                          fix="give --workdir a local folder you can write to") from None


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def workdir_lock(root: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the work dir's lock for the block: exclusive, or `shared` among the shards of a stage."""
    root = Path(root).resolve()
    held = _held.get(root)
    if held is not None and (held[2] or shared):
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    if held is not None:
        raise HnmineError("a shard stage cannot run a whole-run stage inside it", path=root,
                          fix="run the whole-run stage before the shards")
    fd = _open(root)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"hnmine: waiting for another run on {root} (last started: {_holder(fd)}) to finish",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, mode)
        except OSError as exc:  # no flock on this file system (some Lustre, FUSE and NFS mounts)
            if root not in _warned:
                _warned.add(root)
                print(f"hnmine: cannot lock {root / LOCK_FILE} ({exc.strerror}): runs on this work dir are not kept "
                      "from each other", file=sys.stderr, flush=True)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".ljust(320).encode(), 0)
        _held[root] = [fd, 1, not shared]
        try:
            yield
        finally:
            del _held[root]
    finally:
        os.close(fd)  # closing the descriptor releases the lock
