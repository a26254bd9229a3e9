"""The embedding checks of the filter: a candidate's cosine to its query's positives
(near_duplicate) and near copies among the negatives taken for a query (duplicate_negative)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import FilterParams


@dataclass
class FilterContext:
    """What two rules need beyond the scored rows: the corpus (to pad short queries) and the dense
    embeddings (to find near duplicates of a positive), both in corpus order."""

    doc_ids: list[str]
    text_hashes: np.ndarray
    embeddings: np.ndarray | None = None
    _position: dict[str, int] | None = None

    def positions(self, doc_ids: list[str]) -> np.ndarray:
        if self._position is None:
            self._position = {d: i for i, d in enumerate(self.doc_ids)}
        return np.fromiter((self._position[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids))


def max_cosine_to_positives(candidates: pl.DataFrame, scored: pl.DataFrame, context: FilterContext) -> np.ndarray:
    """Per candidate row, the highest cosine between its embedding and those of its query's positives
    (-inf for a query without positives)."""
    positives = scored.filter(pl.col(schema.IS_POSITIVE)).group_by(schema.QUERY_ID).agg(pl.col(schema.DOC_ID))
    by_query = dict(zip(positives[schema.QUERY_ID].to_list(), positives[schema.DOC_ID].to_list()))
    out = np.full(candidates.height, -np.inf, dtype=np.float32)
    rows = candidates.with_row_index("_row").group_by(schema.QUERY_ID).agg(pl.col("_row"), pl.col(schema.DOC_ID))
    for qid, row_ids, doc_ids in rows.iter_rows():
        if not by_query.get(qid):
            continue
        cand = np.asarray(context.embeddings[context.positions(doc_ids)], dtype=np.float32)
        pos = np.asarray(context.embeddings[context.positions(by_query[qid])], dtype=np.float32)
        cand = cand / np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), 1e-12)
        pos = pos / np.maximum(np.linalg.norm(pos, axis=1, keepdims=True), 1e-12)
        out[np.asarray(row_ids)] = (cand @ pos.T).max(axis=1)
    return out


def duplicate_negative_mask(survivors: pl.DataFrame, params: FilterParams, context: FilterContext) -> pl.Series:
    """Walk each query's survivors in sampling order (`_key`) and mark one whose embedding cosine to a
    negative already taken is >= params.duplicate_negatives, until num_negatives are taken (the rest
    are left for `not_sampled`). True for the duplicates, in the rows' order."""
    ordered = survivors.with_row_index("_row").sort([schema.QUERY_ID, "_key"], maintain_order=True)
    groups = ordered.group_by(schema.QUERY_ID, maintain_order=True).agg(pl.col("_row"), pl.col(schema.DOC_ID))
    duplicate_rows: list[int] = []
    for _, rows, doc_ids in groups.iter_rows():
        if len(rows) < 2:
            continue
        vectors = np.asarray(context.embeddings[context.positions(doc_ids)], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        similar = (vectors @ vectors.T) >= params.duplicate_negatives
        taken: list[int] = []
        for i in range(len(rows)):
            if len(taken) == params.num_negatives:
                break
            if taken and similar[i, taken].any():
                duplicate_rows.append(rows[i])
            else:
                taken.append(i)
    is_duplicate = np.zeros(survivors.height, dtype=bool)
    is_duplicate[duplicate_rows] = True
    return pl.Series(is_duplicate)
