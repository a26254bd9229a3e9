"""`hnmine mine`: top-k candidates per query from dense, BM25, hybrid or pooled retrieval.

Reads corpus.arrow and index/<retriever>/ from `hnmine index`, plus the queries and labels.
Writes queries.arrow and qrels.arrow (the queries with positives and their positives) and
candidates.arrow: for every query its positives (is_positive, with their retriever scores) and up
to top_k candidates that are not positives by id, by normalized text, or the query's own text, and
no two of which share a normalized text.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from hnmine import schema
from hnmine.config import DataParams, MineParams
from hnmine.errors import HnmineError
from hnmine.index_names import dense_stage_name, index_name
from hnmine.io import inputs, text_hashes
from hnmine.io.exclusion import exclude, read_evaluation
from hnmine.io.files import BatchWriter, read_table, write_table
from hnmine.io.manifest import read_manifest
from hnmine.retrievers import embedding_store, encoders, faiss_index
from hnmine.retrievers.bm25 import BM25Index
from hnmine.stages import row_pool
from hnmine.stages.candidate_rows import Corpus, collect
from hnmine.stages.common import query_identity, shard_slice
from hnmine.workdir import Done, Stage, StageResult, WorkDir, holding_lock, manifest_path, run_stage


@dataclass
class _DenseIndex:
    """One dense index a mining run searches: its folder, its manifest's parameters, the embedding
    matrix, the query encoder and the searcher."""

    folder: Path
    params: dict
    embeddings: np.ndarray
    encoder: encoders.Encoder
    searcher: object
    search_kind: str


class _Retrievers:
    """The indexes one mining run searches, opened once, by column key (schema.retriever_key)."""

    def __init__(self, workdir: Path, params: MineParams, n_docs: int):
        self.keys = [schema.retriever_key(name) for name in params.retriever_names()]
        wd = WorkDir(workdir)
        self.dense: dict[str, _DenseIndex] = {}
        for name in params.retriever_names():
            if name == "bm25":
                continue
            folder = wd.dense_index(index_name(name))
            manifest = read_manifest(manifest_path(folder))
            embeddings = embedding_store.load_embeddings(folder)
            encoder = query_encoder(manifest, params.device, params.batch_size)
            searcher, kind = faiss_index.open_search(folder, manifest["params"]["faiss_factory"], embeddings,
                                                     encoder.device, nprobe=params.nprobe, ef_search=params.ef_search)
            self.dense[schema.retriever_key(name)] = _DenseIndex(folder, manifest["params"], embeddings, encoder, searcher,
                                                                    kind)
        self.bm25 = BM25Index.load(wd.bm25) if "bm25" in self.keys else None

    def query_vectors(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {key: dense.encoder.encode(texts, prompt=dense.params["query_prompt"]) for key, dense in self.dense.items()}

    def search_kinds(self) -> str | dict[str, str] | None:
        kinds = {key: dense.search_kind for key, dense in self.dense.items()}
        return next(iter(kinds.values())) if len(kinds) == 1 else kinds or None


def query_encoder(dense_manifest: dict, device: str | None, batch_size: int) -> encoders.Encoder:
    """The query encoder for a dense index: its model, length and normalization, in the runtime
    that encoded the corpus. An index encoded by ONNX Runtime (a CPU runtime) keeps it, in the
    precision it ran in (fp32 or int8), on whatever device mine runs: a CPU-built index searched
    on a GPU machine would otherwise ask ONNX for the GPU's fp16."""
    params, stats = dense_manifest["params"], dense_manifest["stats"]
    backend = stats.get("backend", params.get("backend", "auto"))
    precision = stats.get("precision", params.get("precision", "auto")) if backend == "onnx" else params.get("precision", "auto")
    return encoders.Encoder(params["model"], device, params["max_length"], batch_size=min(batch_size, 512),
                         normalize=params["normalize"], backend=backend, precision=precision)


def _required_indexes(wd: WorkDir, params: MineParams) -> dict[str, Path]:
    needed = {"corpus": wd.corpus}
    for name in params.retriever_names():
        if name == "bm25":
            needed["bm25"] = wd.bm25
        else:
            needed[dense_stage_name(index_name(name))] = wd.dense_index(index_name(name))
    for key, path in needed.items():
        if not manifest_path(path).exists():
            named = key.partition(":")[2]
            flag = f" --name {named} --model MODEL" if named else "" if key == "corpus" else f" --retrievers {key}"
            raise HnmineError(f"no finished {key} index in the work dir", path=path,
                              fix=f"run `hnmine index{flag}` with this --workdir first")
    return needed


@holding_lock
def mine(workdir: Path, data: DataParams, params: MineParams, progress: bool = True) -> StageResult:
    wd = WorkDir(workdir)
    out = wd.output("candidates", params.shard)
    identity = {"data": query_identity(data), "mine": params.identity()}
    queries_out, qrels_out = wd.queries, wd.qrels
    evaluation_files = {name: getattr(params, name) for name in ("exclude_qrels", "exclude_queries")
                        if getattr(params, name) is not None}
    stage = Stage("mine", out, identity, {**_required_indexes(wd, params), **inputs.query_files(data),
                                          **evaluation_files},
                  {"candidates": out}, shard=params.shard, root=wd.root, sidecars=(queries_out, qrels_out))
    return run_stage(stage, lambda: _mine(wd, data, params, progress))


def _mine(wd: WorkDir, data: DataParams, params: MineParams, progress: bool) -> Done:
    workdir, out, queries_out, qrels_out = wd.root, wd.output("candidates", params.shard), wd.queries, wd.qrels
    warnings: list[str] = []
    corpus = Corpus.read(workdir)
    skipped_docs = set(read_table(wd.corpus_skipped).column("skipped").to_pylist())
    queries, qrels, stats = inputs.load_queries(data, pa.table({schema.DOC_ID: corpus.ids}),
                                                skipped_doc_ids=skipped_docs)
    excluded_docs: frozenset[int] = frozenset()
    if params.exclude_qrels is not None:
        queries, qrels, excluded_docs = _exclude_evaluation(data, params, corpus, queries, qrels, stats)
    write_table(queries, queries_out)
    write_table(qrels, qrels_out)
    n_docs = len(corpus.ids)
    top_k = params.top_k
    if top_k > n_docs:
        warnings.append(f"top_k={top_k} is larger than the corpus ({n_docs} documents): using {n_docs}")
        stats["top_k_clamped_to"] = top_k = n_docs

    positives: dict[str, list[int]] = {}
    positions = pc.index_in(qrels.column(schema.DOC_ID), value_set=corpus.ids).to_pylist()
    for qid, position in zip(qrels.column(schema.QUERY_ID).to_pylist(), positions):
        positives.setdefault(qid, []).append(position)
    part = shard_slice(queries.num_rows, params.shard)
    query_ids = queries.column(schema.QUERY_ID).to_pylist()[part]
    query_texts = queries.column(schema.TEXT).to_pylist()[part]

    retrievers = _Retrievers(workdir, params, n_docs)
    counters = {"queries": 0, "candidates": 0, "queries_short_of_top_k": 0, "queries_searched_deeper": 0,
                "excluded_positive_by_id": 0, "excluded_positive_by_text": 0, "excluded_query_text": 0,
                "excluded_duplicate_text": 0, "excluded_eval_positive": 0}
    starts = range(0, len(query_ids), params.batch_size)
    workers = row_pool.worker_count(params.row_workers, len(starts), text_hashes.worker_count(), bool(params.shard))
    with BatchWriter(out, schema.candidates_schema(retrievers.keys)) as writer, \
            tqdm(total=len(query_ids), desc="mine", unit="query", disable=not progress) as bar, \
            _row_pool(workers, workdir, retrievers, params, top_k, excluded_docs) as pool:
        pending: deque = deque()  # batches searched, their rows being collected, in query order
        for start in starts:
            batch = _search(query_ids[start:start + params.batch_size], query_texts[start:start + params.batch_size],
                            positives, retrievers, top_k, n_docs)
            if pool is None:
                rows = collect(batch.ids, batch.texts, positives, corpus, batch.lists, params, top_k, batch.vectors,
                               retrievers, batch.depth, excluded_docs)
                pending.append((batch, lambda collected=rows: collected))
            else:
                pending.append((batch, pool.submit(batch.ids, batch.texts, positives, batch.lists, batch.vectors,
                                                   batch.depth)))
            while len(pending) > workers or (pending and start == starts[-1]):
                batch, collected = pending.popleft()
                writer.write(_finish(batch, collected(), positives, corpus, retrievers, params, top_k, counters,
                                     excluded_docs))
                bar.update(len(batch.ids))
    whole_run = sorted(set(stats) - set(counters))  # from the whole query and qrels files, and top_k
    stats.update(counters)
    stats["row_workers"] = workers
    stats["shard"] = params.shard
    if params.shard:
        stats["whole_run_stats"] = whole_run  # the same in every shard: merged once, not summed
    if retrievers.search_kinds():
        stats["dense_search"] = retrievers.search_kinds()
    if counters["queries_short_of_top_k"]:
        warnings.append(f"{counters['queries_short_of_top_k']} queries have fewer than top_k={top_k} candidates "
                        "(small corpus, or BM25 found fewer matching documents)")
    for key, label in (("queries_without_positives", "queries without positives skipped"),
                       ("queries_skipped_empty_text", "queries with empty text skipped"),
                       ("qrels_doc_skipped_empty", "qrels lines naming empty-text documents skipped"),
                       ("qrels_unknown_query", "qrels lines naming unknown queries skipped"),
                       ("qrels_unknown_doc", "qrels lines naming unknown documents skipped"),
                       ("qrels_duplicate_lines", "duplicate qrels lines skipped"),
                       ("pairs_skipped_empty_query", "pairs rows with an empty query skipped"),
                       ("queries_excluded_eval_id", "training queries left out: evaluation queries (by id)"),
                       ("queries_excluded_eval_text", "training queries left out: evaluation queries (by text)"),
                       ("positives_excluded_eval", "training positives left out: evaluation positives"),
                       ("queries_excluded_no_positive_left", "training queries left out: only evaluation positives"),
                       ("excluded_eval_positive", "candidates left out: evaluation positives"),
                       ("exclude_positives_not_in_corpus", "evaluation positives not in the corpus (nothing to "
                                                           "exclude for them)")):
        if stats.get(key):
            warnings.append(f"{stats[key]} {label}")
    return Done(stats, {"candidates": {"rows": writer.rows}, "queries": {"rows": counters["queries"]}}, warnings,
                {"queries": queries_out, "qrels": qrels_out})


def _exclude_evaluation(data: DataParams, params: MineParams, corpus: Corpus, queries: pa.Table, qrels: pa.Table,
                        stats: dict) -> tuple[pa.Table, pa.Table, frozenset[int]]:
    """The training queries and qrels without the evaluation set (hnmine.io.exclusion), with the
    counts in `stats`; and the text hashes of evaluation positives the candidates must not include."""
    files = inputs.query_files(data)
    evaluation = read_evaluation(params.exclude_qrels, params.exclude_queries, files.get("queries"), corpus.ids,
                                 corpus.hashes, min_relevance=data.min_relevance, id_column=data.query_id_column,
                                 text_column=data.query_text_column)
    stats.update(evaluation.stats)
    doc_hash_of = dict(zip(corpus.ids.to_pylist(), corpus.hashes.tolist()))
    queries, qrels, excluded = exclude(queries, qrels, evaluation, params.exclude_documents, doc_hash_of)
    stats.update(excluded)
    stats["queries"], stats["positives"] = queries.num_rows, qrels.num_rows
    if not queries.num_rows:
        raise HnmineError("every training query is an evaluation query, or has only evaluation positives",
                          path=params.exclude_qrels, fix="check that --exclude-qrels is the evaluation split, not "
                                                         "the training one (or use --exclude-documents negatives)")
    return queries, qrels, evaluation.positive_hashes if params.exclude_documents != "none" else frozenset()


def _ranked_lists(query_texts, query_vectors: dict[str, np.ndarray], retrievers: _Retrievers, k: int):
    """Per retriever key: (positions [q, k], scores [q, k]) with -1 where a list ran out."""
    lists = {}
    for key in retrievers.keys:
        if key == "bm25":
            lists[key] = retrievers.bm25.search(query_texts, k)
        else:
            scores, positions = retrievers.dense[key].searcher.search(query_vectors[key], k)
            lists[key] = positions, scores
    return lists


@dataclass
class _Batch:
    """One batch of queries, searched: their vectors, each query's list depth, the ranked lists."""

    ids: list[str]
    texts: list[str]
    vectors: dict[str, np.ndarray]
    depth: dict[str, int]
    lists: dict


def _search(batch_ids, batch_texts, positives, retrievers: _Retrievers, top_k: int, n_docs: int) -> _Batch:
    query_vectors = retrievers.query_vectors(batch_texts)
    # Each query reads its retrievers' lists to a depth of its own (more than top_k: its positives and
    # their copies are removed after the search), never the batch's: hybrid fusion over a deeper list
    # could change its order, and then the output would depend on batch size and sharding.
    depth = {q: min(n_docs, top_k + len(positives[q]) + 16) for q in batch_ids}
    lists = _ranked_lists(batch_texts, query_vectors, retrievers, max(depth.values()))
    return _Batch(batch_ids, batch_texts, query_vectors, depth, lists)


def _finish(batch: _Batch, collected, positives, corpus: Corpus, retrievers: _Retrievers, params: MineParams,
            top_k: int, counters: dict, excluded: frozenset[int] = frozenset()) -> pa.Table:
    """The batch's table from its collected rows, after searching deeper for the queries that lost
    too many candidates to copies of their positives."""
    n_docs = len(corpus.ids)
    rows, short = collected
    deeper: set[str] = set()
    while True:
        growable = [q for q in short if batch.depth[q] < n_docs]
        if not growable or retrievers.keys == ["bm25"]:  # BM25 alone (or a pool of it alone)
            break
        deeper.update(growable)
        for q in growable:
            batch.depth[q] = min(n_docs, batch.depth[q] * 2)
        batch.lists = _ranked_lists(batch.texts, batch.vectors, retrievers, max(batch.depth.values()))
        rows, short = collect(batch.ids, batch.texts, positives, corpus, batch.lists, params, top_k, batch.vectors,
                              retrievers, batch.depth, excluded)
    for key, value in rows.pop("_counts").items():
        counters[key] += value
    table = pa.table(rows, schema=schema.candidates_schema(retrievers.keys))
    counters["queries"] += len(batch.ids)
    counters["candidates"] += table.num_rows - pc.sum(table.column(schema.IS_POSITIVE)).as_py() if table.num_rows else 0
    counters["queries_short_of_top_k"] += len(short)
    counters["queries_searched_deeper"] += len(deeper)
    return table


@contextmanager
def _row_pool(workers: int, workdir: Path, retrievers: _Retrievers, params: MineParams, top_k: int,
              excluded: frozenset[int]):
    """A RowPool of `workers` processes over this run's indexes, or None (collect in this process)."""
    if not workers:
        yield None
        return
    dense = {key: index.folder for key, index in retrievers.dense.items()}
    with row_pool.RowPool(workers, workdir, retrievers.keys, dense, WorkDir(workdir).bm25 if retrievers.bm25 else None,
                          params, top_k, excluded) as pool:
        yield pool
