"""corpus.arrow's text hashes, computed in worker processes while the next batch is read.

Hashing a document's normalized text (NFKC, casefold, whitespace, BLAKE2b: `hnmine.text.text_hash`)
is a Python step per document that holds the GIL, so threads cannot share it out.
Once the corpus fills a whole batch (it may have more), each batch's hashes are computed by a pool
of processes, a chunk per process, while the main process reads the next batch. The pool is
spawned, not forked: the calling process may have loaded torch or started threads. A corpus of one
partial batch is hashed in place, where starting a pool would cost more than it saves. Either way
it is the same function over the same texts, in order (tested against the in-place path).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import pyarrow as pa

from hnmine import schema
from hnmine.text import document_text, text_hash

CHUNK_ROWS = 8192  # documents per task: large enough that a task's pickling is small beside its hashing


def document_hashes(titles: pa.Array, texts: pa.Array) -> list[int]:
    """The text hash of each document: title and body joined as a model sees them. Takes Arrow
    arrays, so that a worker, not the reading process, turns them into Python strings."""
    return [text_hash(document_text(title, text)) for title, text in zip(titles.to_pylist(), texts.to_pylist())]


def worker_count() -> int:
    """The cores this process may use: the hashing workers run beside the reading process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _compact(array: pa.Array, start: int) -> pa.Array:
    """CHUNK_ROWS rows from `start` in buffers of their own: a pickled slice carries its whole parent."""
    return pa.concat_arrays([array.slice(start, CHUNK_ROWS)])


class BatchHasher:
    """`submit(batch)` starts the hashes of a CORPUS table and returns a function that waits for them."""

    def __init__(self, full_batch_rows: int, workers: int | None = None):
        self.full_batch_rows = full_batch_rows
        self.workers = worker_count() if workers is None else workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> BatchHasher:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def processes(self) -> int:
        """How many worker processes hashed (0: every batch was hashed in place)."""
        return self.workers if self.pool is not None else 0

    def submit(self, batch: pa.Table) -> Callable[[], pa.Array]:
        titles = batch.column(schema.TITLE).combine_chunks()
        texts = batch.column(schema.TEXT).combine_chunks()
        if self.pool is None and (batch.num_rows < self.full_batch_rows or self.workers < 2):
            hashes = pa.array(document_hashes(titles, texts), type=pa.uint64())
            return lambda: hashes
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        futures: list[Future] = [self.pool.submit(document_hashes, _compact(titles, s), _compact(texts, s))
                                 for s in range(0, len(texts), CHUNK_ROWS)]
        return lambda: pa.array([h for future in futures for h in future.result()], type=pa.uint64())
