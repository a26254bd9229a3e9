"""Batch plans: training rows grouped into batches in which no row's documents are positives of
another row's query.

MultipleNegativesRankingLoss scores each anchor against every other row's positive and negatives
in its batch. Where a query has many positives, a random batch often holds a document that is
relevant to another row's query: an in-batch false negative that no offline filter sees, and that
sentence-transformers' NoDuplicatesBatchSampler misses (it compares texts, not relevance). A plan
places rows greedily (first fit) into open batches, skipping every batch where

- one of the row's documents is *blocked* for a query already in the batch, or
- a document already in the batch is blocked for the row's query,

where a query's blocked documents are its known positives (the qrels), the likely positives the
filter set aside (`filter --likely-positive`), and the documents at cosine >= `near_duplicate` to
one of its positives; documents are compared by normalized text, so a copy under another id counts.
`clustered` first orders the rows by k-means cluster of their positive's embedding (TAS-Balanced),
so a batch's in-batch negatives come from similar queries, then plans the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import ExportParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.retrievers.embedding_store import load_embeddings
from hnmine.workdir import WorkDir

_SCAN = 512  # open batches tried per row before a new one is opened


@dataclass
class Plan:
    batch: list[int]              # per input row, its batch (0-based, in plan order)
    stats: dict = field(default_factory=dict)


def _conflicts(docs: frozenset, blocked: frozenset, batch_docs: set, batch_blocked: set) -> bool:
    return not (batch_blocked.isdisjoint(docs) and batch_docs.isdisjoint(blocked))


def plan_batches(row_queries: list, row_docs: list[frozenset], blocked: dict, batch_size: int, seed: int,
                 order: list[int] | None = None) -> Plan:
    """Batches of at most `batch_size` rows without a blocked document across rows. `row_docs` are
    each row's documents (as text keys), `blocked` maps a query to its blocked text keys; `order` is
    the order rows are placed in (default: a seeded shuffle). Every row is placed: one that fits in
    no open batch opens a new one. Batches that never fill are numbered after the full ones."""
    n = len(row_queries)
    if order is None:
        order = list(range(n))
        random.Random(seed).shuffle(order)
    empty: frozenset = frozenset()
    open_batches: list[tuple[int, list[int], set, set]] = []  # (batch id, rows, docs, blocked)
    closed: list[tuple[int, list[int]]] = []
    next_id = 0
    for row in order:
        docs, stop = row_docs[row], blocked.get(row_queries[row], empty)
        target = None
        # the oldest and the newest open batches: scanning only the oldest would never reach a new
        # batch once _SCAN old ones are stuck (each of them clashing with most rows)
        window = open_batches if len(open_batches) <= _SCAN else \
            open_batches[:_SCAN // 2] + open_batches[-(_SCAN // 2):]
        for slot in window:
            if not _conflicts(docs, stop, slot[2], slot[3]):
                target = slot
                break
        if target is None:
            target = (next_id, [], set(), set())
            next_id += 1
            open_batches.append(target)
        target[1].append(row)
        target[2].update(docs)
        target[3].update(stop)
        if len(target[1]) == batch_size:
            open_batches.remove(target)
            closed.append((target[0], target[1]))
    # full batches in the order they were opened, then the short ones: a trainer that reads the file
    # in order, batch_size rows at a time, without the sampler, still meets every full batch whole
    closed.sort()
    closed += sorted((slot[0], slot[1]) for slot in open_batches)
    batch = [0] * n
    for position, (_, rows) in enumerate(closed):
        for row in rows:
            batch[row] = position
    sizes = [len(rows) for _, rows in closed]
    return Plan(batch, {"batches": len(closed), "full_batches": sum(s == batch_size for s in sizes),
                        "rows_in_short_batches": sum(s for s in sizes if s < batch_size)})


def collisions(batches: list[list[int]], row_queries: list, row_docs: list[frozenset], blocked: dict) -> int:
    """Blocked (row, other row) pairs inside the batches: how many times a row's document is blocked
    for another row's query in its batch (each ordered pair of rows counted once)."""
    empty: frozenset = frozenset()
    count = 0
    for rows in batches:
        for i in rows:
            stop = blocked.get(row_queries[i], empty)
            count += sum(1 for j in rows if j != i and not stop.isdisjoint(row_docs[j]))
    return count


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """The batches a shuffling sampler draws (what a plan is compared with)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def cluster_order(vectors: np.ndarray, batch_size: int, seed: int) -> tuple[list[int], np.ndarray]:
    """Rows ordered cluster by cluster (k-means on `vectors`, about four batches per cluster; the
    clusters and the rows inside each in seeded random order), and each row's cluster."""
    import faiss

    n = len(vectors)
    k = max(1, min(n // max(1, 4 * batch_size), n))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if k > 1:
        kmeans = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
        kmeans.train(vectors)
        _, assigned = kmeans.index.search(vectors, 1)
        labels = assigned[:, 0]
    else:
        labels = np.zeros(n, dtype=np.int64)
    rng = random.Random(seed)
    clusters = list(range(k))
    rng.shuffle(clusters)
    order = []
    for c in clusters:
        members = np.flatnonzero(labels == c).tolist()
        rng.shuffle(members)
        order += members
    return order, labels


def purity(batch: list[int], labels: np.ndarray) -> float:
    """The share of rows that sit in their batch's most common cluster."""
    by_batch: dict[int, list[int]] = {}
    for row, b in enumerate(batch):
        by_batch.setdefault(b, []).append(int(labels[row]))
    majority = sum(max(np.bincount(members)) for members in by_batch.values())
    return majority / len(batch) if batch else 1.0


def blocked_keys(positives: dict, key_of: dict, near: dict | None = None) -> dict:
    """Per query, the text keys of its blocked documents: its positives (`positives`: query -> doc
    ids, labeled and likely) and, with `near` (doc id -> doc ids at high cosine), their near copies."""
    blocked = {}
    for query, docs in positives.items():
        keys = {key_of[d] for d in docs if d in key_of}
        if near:
            keys.update(key_of[n] for d in docs for n in near.get(d, ()) if n in key_of)
        blocked[query] = frozenset(keys)
    return blocked


def near_copies(embeddings: np.ndarray, position_of: dict, sources: list, targets: list, threshold: float,
                k: int = 16) -> dict:
    """For each source document, the target documents at cosine >= `threshold` (its `k` nearest at
    most), by exact search over the targets' embeddings."""
    from hnmine.retrievers.exact_search import exact_search

    sources = [d for d in sources if d in position_of]
    targets = [d for d in targets if d in position_of]
    if not sources or not targets:
        return {}
    target_matrix = np.asarray(embeddings[np.array([position_of[d] for d in targets])], dtype=np.float32)
    near: dict = {}
    for start in range(0, len(sources), 4096):
        block = sources[start:start + 4096]
        vectors = np.asarray(embeddings[np.array([position_of[d] for d in block])], dtype=np.float32)
        scores, positions = exact_search(target_matrix, vectors, min(k, len(targets)))
        for source, row_scores, row_positions in zip(block, scores, positions):
            hits = [targets[p] for s, p in zip(row_scores, row_positions) if p >= 0 and s >= threshold and targets[p] != source]
            if hits:
                near[source] = hits
    return near


def _row_documents(ids: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Each training row's query and documents (positive and negatives), from its ids."""
    doc_columns = [c for c in ids.columns if c == "positive_id" or (c.startswith("negative_") and c.endswith("_id"))
                   or c == "negative_id"]
    return ids[schema.QUERY_ID].to_list(), [list(r) for r in ids.select(doc_columns).iter_rows()]


def plan_rows(wd: WorkDir, ids: pl.DataFrame, params: ExportParams, likely: pl.DataFrame | None) -> tuple[list[int], dict]:
    """Each training row's batch under `params.batch_plan`, from its ids (query_id, positive_id,
    negative ids), the work dir's qrels, corpus and dense embeddings, and the filter's `likely`
    positives (query_id, doc_id) when it set some aside; and the plan's counts beside those of
    seeded random batches of the same rows."""

    queries, docs = _row_documents(ids)
    corpus = pl.from_arrow(read_table(wd.corpus, [schema.DOC_ID, schema.TEXT_HASH]))
    key_of = dict(zip(corpus[schema.DOC_ID].to_list(), corpus[schema.TEXT_HASH].to_list()))
    qrels = pl.from_arrow(read_table(wd.qrels)).select(schema.QUERY_ID, schema.DOC_ID)
    stats = {"plan": params.batch_plan, "batch_size": params.batch_size}
    if likely is not None:
        stats["likely_positives_blocked"] = likely.height
        qrels = pl.concat([qrels, likely])
    wanted = set(queries)
    positives: dict[str, list[str]] = {}
    for q, d in qrels.filter(pl.col(schema.QUERY_ID).is_in(list(wanted))).iter_rows():
        positives.setdefault(q, []).append(d)
    near = None
    embeddings = None
    if params.batch_near_duplicate > 0 or params.batch_plan == "clustered":
        if not wd.dense_embeddings.exists():
            raise HnmineError("a batch plan with near duplicates or clusters needs the dense index", path=wd.dense,
                              fix="run `hnmine index --retrievers dense`, or pass --batch-near-duplicate 0 "
                                  "(and --batch-plan no-false-negatives)")
        embeddings = load_embeddings(wd.dense)
    position_of = {d: i for i, d in enumerate(corpus[schema.DOC_ID].to_list())}
    if params.batch_near_duplicate > 0:
        used = list(dict.fromkeys(d for row in docs for d in row))
        sources = list(dict.fromkeys(d for ds in positives.values() for d in ds))
        near = near_copies(embeddings, position_of, sources, used, params.batch_near_duplicate)
        stats["near_copies_blocked"] = sum(len(v) for v in near.values())
    blocked = blocked_keys(positives, key_of, near)
    row_docs = [frozenset(key_of[d] for d in row) for row in docs]
    order = None
    labels = None
    if params.batch_plan == "clustered":
        vectors = np.asarray(embeddings[np.array([position_of[row[0]] for row in docs])], dtype=np.float32)
        order, labels = cluster_order(vectors, params.batch_size, params.seed)
        stats["clusters"] = int(labels.max()) + 1 if len(labels) else 0
    made = plan_batches(queries, row_docs, blocked, params.batch_size, params.seed, order)
    stats |= made.stats
    planned: dict[int, list[int]] = {}
    for row, b in enumerate(made.batch):
        planned.setdefault(b, []).append(row)
    stats["collisions"] = collisions(list(planned.values()), queries, row_docs, blocked)
    stats["collisions_random_batches"] = collisions(random_batches(len(queries), params.batch_size, params.seed),
                                                    queries, row_docs, blocked)
    if labels is not None:
        stats["cluster_purity"] = round(purity(made.batch, labels), 4)
    return made.batch, stats
