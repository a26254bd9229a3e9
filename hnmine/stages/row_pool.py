"""mine's candidate rows built in worker processes while the mining process searches the next batch.

`candidate_rows.collect` is array operations over a batch, but much of its time is Python that
holds the GIL (its own steps, the per-query products of `dense_scores`, BM25's per-query postings),
so threads cannot share it out; processes can. Each worker
opens the work dir's corpus.arrow, every dense matrix (memory-mapped, so the pages are shared) and
the BM25 index once; the mining process sends each batch's ranked lists, query vectors, depths and
positives, and writes the finished batches in order. A query that must search deeper (too many of
its list's entries were copies of its positives) is finished in the mining process, which holds the
searchers. The rows are those of an in-process run, byte for byte (tested).

The pool is spawned, not forked: the mining process may hold a GPU context and threads.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hnmine.config import MineParams
from hnmine.errors import HnmineError
from hnmine.retrievers import embedding_store
from hnmine.retrievers.bm25 import BM25Index
from hnmine.stages.candidate_rows import Corpus, collect

MIN_BATCHES = 4  # fewer batches than this are collected in the mining process: a worker's start costs more


@dataclass
class Matrix:
    """A dense index as collect reads it: its embedding matrix (the mining process's _DenseIndex
    has the same attribute, beside its encoder and searcher)."""

    embeddings: np.ndarray


@dataclass
class RowSources:
    """What collect reads besides the batch: the run's retriever keys, each dense index's matrix and
    the BM25 index, under the attribute names of the mining process's retrievers."""

    keys: list[str]
    dense: dict[str, Matrix]
    bm25: BM25Index | None


@dataclass
class _Worker:
    corpus: Corpus
    sources: RowSources
    params: MineParams
    top_k: int
    excluded: frozenset[int]


_worker: _Worker | None = None


def _start_worker(workdir: Path, keys: list[str], dense_folders: dict[str, Path], bm25_folder: Path | None,
                  params: MineParams, top_k: int, excluded: frozenset[int]) -> None:
    global _worker
    sources = RowSources(keys, {key: Matrix(embedding_store.load_embeddings(folder)) for key, folder in
                                dense_folders.items()},
                         BM25Index.load(bm25_folder, mmap=True) if bm25_folder is not None else None)
    _worker = _Worker(Corpus.read(workdir), sources, params, top_k, excluded)


def _collect(batch_ids, batch_texts, positives, lists, query_vectors, depth):
    w = _worker
    return collect(batch_ids, batch_texts, positives, w.corpus, lists, w.params, w.top_k, query_vectors, w.sources,
                   depth, w.excluded)


def worker_count(requested: int | None, batches: int, cores: int, sharded: bool = False) -> int:
    """Worker processes for a run of `batches` batches: `requested` (mine --row-workers), else one
    per 4 cores, at most 4, and none below MIN_BATCHES batches or 4 cores, or in a shard (shards run
    side by side, as Ray tasks or processes, each seeing every core). The mining process keeps a core
    for itself (and its tokenizer threads)."""
    if requested is not None:
        return requested
    if sharded or batches < MIN_BATCHES or cores < 4:
        return 0
    return min(4, cores // 4)


class RowPool:
    """`submit(...)` starts one batch's collect in a worker and returns a function that waits for its
    (columns, queries short of top_k)."""

    def __init__(self, workers: int, workdir: Path, keys: list[str], dense_folders: dict[str, Path],
                 bm25_folder: Path | None, params: MineParams, top_k: int, excluded: frozenset[int]):
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_worker,
                                        initargs=(workdir, keys, dense_folders, bm25_folder, params, top_k, excluded))

    def __enter__(self) -> RowPool:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, batch_ids, batch_texts, positives: dict[str, list[int]], lists, query_vectors,
               depth: dict[str, int]) -> Callable[[], tuple[dict, list[str]]]:
        try:
            future: Future = self.pool.submit(_collect, batch_ids, batch_texts, {q: positives[q] for q in batch_ids},
                                              lists, query_vectors, depth)
        except BrokenProcessPool as error:
            raise _broken(error) from error

        def wait():
            try:
                return future.result()
            except BrokenProcessPool as error:
                raise _broken(error) from error

        return wait


def _broken(error: BrokenProcessPool) -> HnmineError:
    return HnmineError(f"a candidate-row worker process died ({error})",
                       fix="see its error above; if it ran out of memory, use fewer: --row-workers 1, or 0 for none")
