"""Retrieval metrics with the trec_eval / pytrec_eval definitions that BEIR reports.

`run` maps query id -> ranked doc ids (best first); `qrels` maps query id -> {doc id: relevance}.
Both metrics average over every query in `qrels`: a query missing from `run` scores 0, and so does a
query whose judgements are all non-positive (trec_eval returns 0 when a query has no relevant doc).
"""

from __future__ import annotations

import math


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _dcg(gains: list[float]) -> float:
    return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))


def ndcg_at_k(run: dict[str, list[str]], qrels: dict[str, dict[str, float]], k: int = 10) -> float:
    """Mean nDCG@k: gain = relevance (negatives count as 0), discount log2(rank + 1), ideal DCG from the qrels."""
    per_query = []
    for query_id, judged in qrels.items():
        ideal = _dcg(sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:k])
        if ideal == 0:
            per_query.append(0.0)
            continue
        gains = [max(judged.get(doc_id, 0.0), 0.0) for doc_id in run.get(query_id, [])[:k]]
        per_query.append(_dcg(gains) / ideal)
    return _mean(per_query)


def recall_at_k(run: dict[str, list[str]], qrels: dict[str, dict[str, float]], k: int = 100) -> float:
    """Mean Recall@k: |top-k ∩ relevant| / |relevant|, relevant meaning relevance > 0."""
    per_query = []
    for query_id, judged in qrels.items():
        relevant = {doc_id for doc_id, rel in judged.items() if rel > 0}
        if not relevant:
            per_query.append(0.0)
            continue
        retrieved = set(run.get(query_id, [])[:k])
        per_query.append(len(retrieved & relevant) / len(relevant))
    return _mean(per_query)
