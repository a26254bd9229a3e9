"""`hnmine filter`: choose the negatives of each query from its scored candidates.

Writes negatives.arrow (the kept negatives, `negative_rank` 1..n per query) and dropped.arrow (every
other candidate with the rule that dropped it in `dropped_by`), so no candidate disappears
without a reason. Rules run in a fixed order; a candidate is charged to the first rule that drops it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table, write_table
from hnmine.retrievers.embedding_store import load_embeddings
from hnmine.workdir import Done, Stage, StageResult, WorkDir, manifest_path, run_stage

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def sampling_keys(query_ids: list[str], doc_ids: list[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random key per (query, doc): the same whatever the sharding or row order."""
    cache: dict[str, int] = {}

    def h(value: str) -> int:
        if value not in cache:
            cache[value] = int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")
        return cache[value]

    q = np.fromiter((h(v) for v in query_ids), dtype=np.uint64, count=len(query_ids))
    d = np.fromiter((h("d:" + v) for v in doc_ids), dtype=np.uint64, count=len(doc_ids))
    return _splitmix64(_splitmix64(q ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ d)


SCORE_PREFERENCE = ("ce_logit", "judge_score", "dense_score", "bm25_score")
PROBABILITY_PREFERENCE = ("ce_prob", "judge_score")


def _uses_scores(params: FilterParams) -> bool:
    return any(v is not None for v in (params.max_relative, params.margin, params.max_score, params.min_score))


def pick_score_column(table: pl.DataFrame, wanted: str, preference: tuple[str, ...], what: str = "score",
                      purpose: str = "to filter on") -> str:
    """The score column a rule (or export's labels) reads: the one named, or the first of `preference` with values."""
    if wanted != "auto":
        if wanted not in table.columns:
            raise HnmineError(f"no score column '{wanted}' {purpose} (columns: {', '.join(table.columns)})",
                              fix="run `hnmine score` with the scorer that writes it, or pick another --score")
        return wanted
    for name in preference:
        if name in table.columns and table[name].drop_nulls().drop_nans().len():
            return name
    raise HnmineError(f"no {what} column {purpose} (looked for {', '.join(preference)})",
                      fix="run `hnmine score --scorer cross-encoder` (or judge) first")


def _positive_reference(scored: pl.DataFrame, column: str, how: str) -> pl.DataFrame:
    values = pl.col(column).filter(pl.col(schema.IS_POSITIVE) & pl.col(column).is_not_nan())
    agg = {"min": values.min(), "max": values.max(), "mean": values.mean()}[how]
    return scored.group_by(schema.QUERY_ID).agg(agg.alias("_positive"))


def score_rules(params: FilterParams, column: str, probability: str | None) -> list[tuple[str, pl.Expr]]:
    """(rule name, expression true where the rule drops the candidate), in the order they are charged."""
    s, pos = pl.col(column), pl.col("_positive")
    rules = [("unscored", s.is_null() | s.is_nan())] if _uses_scores(params) else []
    if params.min_score is not None:
        rules.append(("min_score", s < params.min_score))
    if params.max_score is not None:
        rules.append(("max_score", s > params.max_score))
    if probability is not None and params.max_probability is not None:
        p = pl.col(probability)
        rules.append(("unscored_probability", p.is_null() | p.is_nan()))
        rules.append(("max_probability", p > params.max_probability))
    if params.max_relative is not None or params.margin is not None:
        rules.append(("no_positive_score", pos.is_null()))
    if params.max_relative is not None:
        # p x pos for a positive score; pos - (1-p)|pos| in general, so a negative logit is handled too
        ceiling = pos - (1 - params.max_relative) * pos.abs()
        rules.append(("max_relative", s >= ceiling))
    if params.margin is not None:
        rules.append(("margin", s >= pos - params.margin))
    return rules


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
    """Per candidate row, the highest cosine between its embedding and those of its query's positives."""
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


def split_duplicate_negatives(survivors: pl.DataFrame, params: FilterParams,
                              context: FilterContext) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Walk each query's survivors in sampling order and set aside one whose embedding cosine to a
    negative already taken is >= params.duplicate_negatives, until num_negatives are taken (the rest
    are left for `not_sampled`). Returns (survivors without the duplicates, the duplicates)."""
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
    mask = pl.Series(is_duplicate)
    duplicates = survivors.filter(mask).drop("_key").with_columns(pl.lit("duplicate_negative").alias(schema.DROPPED_BY))
    return survivors.filter(~mask), duplicates


def pad_query(qid: str, need: int, banned_ids: set[str], banned_hashes: set[int], context: FilterContext,
              seed: int) -> list[str]:
    """`need` seeded random corpus documents that are not positives (by id or text) and not repeats."""
    digest = int.from_bytes(hashlib.blake2b(qid.encode(), digest_size=8).digest(), "big")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, digest & 0xFFFFFFFF, digest >> 32])
    chosen: list[str] = []
    n = len(context.doc_ids)
    for _ in range(64):
        for position in rng.integers(0, n, size=max(4 * need, 16)).tolist():
            doc, h = context.doc_ids[position], int(context.text_hashes[position])
            if doc in banned_ids or h in banned_hashes:
                continue
            chosen.append(doc)
            banned_ids.add(doc)
            banned_hashes.add(h)
            if len(chosen) == need:
                return chosen
    return chosen  # a corpus nearly all positives: fewer pads, counted by the caller


def filter_candidates(scored: pl.DataFrame, params: FilterParams,
                      context: FilterContext | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Pure core: scored rows in, (kept, dropped, stats) out."""
    stats_extra: dict = {}
    column = probability = None
    if _uses_scores(params):
        column = pick_score_column(scored, params.score, SCORE_PREFERENCE)
        stats_extra["score_column"] = column
    if params.max_probability is not None or params.likely_positive is not None:
        probability = pick_score_column(scored, "auto", PROBABILITY_PREFERENCE, "probability")
        stats_extra["probability_column"] = probability
    candidates = scored.filter(~pl.col(schema.IS_POSITIVE)).with_row_index("_order")
    if column is not None:
        candidates = candidates.join(_positive_reference(scored, column, params.reference_positive),
                                     on=schema.QUERY_ID, how="left", maintain_order="left")
    else:
        candidates = candidates.with_columns(pl.lit(None, dtype=pl.Float64).alias("_positive"))
    rank_max = params.rank_max if params.rank_max is not None else np.iinfo(np.int32).max
    out_of_window = (pl.col(schema.RANK) < params.rank_min) | (pl.col(schema.RANK) > rank_max)
    rules = [("rank_window", out_of_window), *score_rules(params, column or "", probability)]
    if params.likely_positive is not None:
        # first, so a confident hit ranked outside the window is still marked (and exportable as a positive)
        rules.insert(0, ("likely_positive", pl.col(probability) >= params.likely_positive))
    has_embeddings = context is not None and context.embeddings is not None
    if params.near_duplicate:
        if has_embeddings:
            cosine = max_cosine_to_positives(candidates, scored, context)
            candidates = candidates.with_columns(pl.Series("_cosine", cosine))
            rules.append(("near_duplicate", pl.col("_cosine") >= params.near_duplicate))
        else:
            stats_extra["near_duplicate"] = "not checked: no dense index in the work dir"
    reason = pl.lit(None, dtype=pl.String)
    for name, drops in reversed(rules):  # the first rule that drops a candidate is the one charged
        reason = pl.when(drops.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    candidates = candidates.with_columns(reason.alias(schema.DROPPED_BY)).drop("_positive", "_cosine", strict=False)

    survivors = candidates.filter(pl.col(schema.DROPPED_BY).is_null())
    if params.sampling == "random":
        keys = sampling_keys(survivors[schema.QUERY_ID].to_list(), survivors[schema.DOC_ID].to_list(), params.seed)
        survivors = survivors.with_columns(pl.Series("_key", keys))
    elif params.sampling == "lowest-score":
        teacher = column or pick_score_column(scored, params.score, SCORE_PREFERENCE)
        stats_extra["score_column"] = teacher
        # lowest teacher score first; unscored candidates last; ties by retriever rank
        survivors = (survivors.with_columns(pl.col(teacher).cast(pl.Float64).fill_nan(None).fill_null(float("inf")).alias("_key"))
                     .sort(["_key", schema.RANK]).drop("_key").with_row_index("_key"))
    else:
        survivors = survivors.with_columns(pl.col(schema.RANK).cast(pl.UInt64).alias("_key"))
    duplicates = None
    if params.duplicate_negatives:
        if has_embeddings:
            survivors, duplicates = split_duplicate_negatives(survivors, params, context)
        else:
            stats_extra["duplicate_negatives"] = "not checked: no dense index in the work dir"
    survivors = survivors.with_columns(
        pl.col("_key").rank("ordinal").over(schema.QUERY_ID).cast(pl.Int32).alias(schema.NEGATIVE_RANK)
    )
    kept = survivors.filter(pl.col(schema.NEGATIVE_RANK) <= params.num_negatives).drop("_key", schema.DROPPED_BY)
    kept = kept.with_columns(pl.lit(False).alias(schema.PADDED))
    not_sampled = survivors.filter(pl.col(schema.NEGATIVE_RANK) > params.num_negatives).with_columns(
        pl.lit("not_sampled").alias(schema.DROPPED_BY)).drop("_key", schema.NEGATIVE_RANK)
    dropped = [candidates.filter(pl.col(schema.DROPPED_BY).is_not_null()), not_sampled]
    if duplicates is not None:
        dropped.append(duplicates)

    counts = kept.group_by(schema.QUERY_ID).len()
    short = scored.select(schema.QUERY_ID).unique().join(counts, on=schema.QUERY_ID, how="left").filter(
        pl.col("len").fill_null(0) < params.num_negatives)
    if params.short_queries == "drop" and short.height:
        is_short = pl.col(schema.QUERY_ID).is_in(short[schema.QUERY_ID].implode())
        dropped.append(kept.filter(is_short).drop(schema.NEGATIVE_RANK, schema.PADDED)
                       .with_columns(pl.lit("short_query").alias(schema.DROPPED_BY)))
        kept = kept.filter(~is_short)
        stats_extra["queries_dropped_short"] = short.height
    elif params.short_queries == "pad" and short.height:
        if context is None:
            raise HnmineError("padding short queries needs the corpus", fix="run filter in a work dir made by `hnmine index`")
        kept, stats_extra["padded_negatives"], stats_extra["queries_padded_short"] = _pad(kept, scored, short, params, context)
    # queries stay in their order; within a query, kept negatives are listed in their 1..n order
    first_row = scored.with_row_index("_first").group_by(schema.QUERY_ID).agg(pl.col("_first").min())
    kept = kept.drop("_order").join(first_row, on=schema.QUERY_ID).sort(["_first", schema.NEGATIVE_RANK]).drop("_first")
    dropped = pl.concat(dropped, how="diagonal_relaxed").sort("_order").drop("_order")

    queries = scored.select(pl.col(schema.QUERY_ID).unique()).height
    per_query = kept.group_by(schema.QUERY_ID).len()
    full = per_query.filter(pl.col("len") >= params.num_negatives).height
    stats = {
        "queries": queries,
        "candidates": candidates.height,
        "kept": kept.height,
        "dropped_by": {rule: int(n) for rule, n in dropped.group_by(schema.DROPPED_BY).len().iter_rows()},
        "queries_with_all_negatives": full,
        "queries_with_fewer_negatives": per_query.height - full,
        "queries_with_no_negatives": queries - per_query.height,
        **stats_extra,
    }
    return kept, dropped, stats


def _pad(kept: pl.DataFrame, scored: pl.DataFrame, short: pl.DataFrame, params: FilterParams,
         context: FilterContext) -> tuple[pl.DataFrame, int, int]:
    """Fill short queries up to num_negatives with random corpus documents (`padded` = true)."""
    seen = scored.group_by(schema.QUERY_ID).agg(pl.col(schema.DOC_ID), pl.col(schema.DOC_ID).filter(pl.col(schema.IS_POSITIVE)).alias("pos"))
    seen = {q: (set(d), p) for q, d, p in seen.iter_rows()}
    rows = []
    for qid, have in short.iter_rows():
        have = have or 0
        docs, positives = seen[qid]
        # never a positive (by id or text), never any candidate of the query (kept or dropped for a reason)
        new = pad_query(qid, params.num_negatives - have, set(docs), set(context.text_hashes[context.positions(positives)].tolist()), context, params.seed)
        rows += [{schema.QUERY_ID: qid, schema.DOC_ID: d, schema.IS_POSITIVE: False, schema.NEGATIVE_RANK: have + i + 1,
                  schema.PADDED: True} for i, d in enumerate(new)]
    if not rows:
        return kept, 0, 0
    padded = pl.DataFrame(rows).with_columns(pl.col(schema.NEGATIVE_RANK).cast(kept.schema[schema.NEGATIVE_RANK]))
    return pl.concat([kept, padded], how="diagonal_relaxed"), len(rows), short.height


def _no_dense_index(wd: WorkDir, params: FilterParams) -> str:
    """The embedding checks cannot run without a dense index: an error for a threshold the user
    set, a warning for the defaults."""
    for name in ("near_duplicate", "duplicate_negatives"):
        value = getattr(params, name)
        if value and value != FilterParams.model_fields[name].default:
            option = "--" + name.replace("_", "-")
            raise HnmineError(f"{option} {value} compares embeddings, and the work dir has no dense index",
                              path=wd.dense, fix=f"run `hnmine index --retrievers dense` first, or pass {option} 0")
    return ("near-duplicate checks skipped (--near-duplicate, --duplicate-negatives): no dense index in the work dir; "
            "build one with `hnmine index --retrievers dense`, or set both to 0 to silence this")


def filter_stage(workdir: Path, params: FilterParams, progress: bool = True) -> StageResult:
    wd = WorkDir(workdir)
    source = wd.shard_input("scored", params.shard)
    out = wd.output("negatives", params.shard)
    dropped_out = wd.output("dropped", params.shard)
    needed = {"scored": source}
    uses_embeddings = bool(params.near_duplicate or params.duplicate_negatives)
    if params.short_queries == "pad" or uses_embeddings:
        needed["corpus"] = wd.corpus
        if uses_embeddings and manifest_path(wd.dense).exists():
            needed["dense"] = wd.dense

    def transform() -> Done:
        warnings = [_no_dense_index(wd, params)] if uses_embeddings and "dense" not in needed else []
        scored = pl.from_arrow(read_table(source))
        top_k = scored.filter(~pl.col(schema.IS_POSITIVE)).group_by(schema.QUERY_ID).len()["len"].max() or 0
        if params.num_negatives > top_k:
            raise HnmineError(
                f"num_negatives={params.num_negatives} is more than the {top_k} candidates per query that mine kept",
                path=source, fix=f"rerun `hnmine mine` with --top-k of at least {params.num_negatives}, or lower --num-negatives",
            )
        context = None
        if "corpus" in needed:
            corpus = read_table(needed["corpus"], [schema.DOC_ID, schema.TEXT_HASH])
            context = FilterContext(corpus.column(schema.DOC_ID).to_pylist(), corpus.column(schema.TEXT_HASH).to_numpy(),
                                    load_embeddings(needed["dense"]) if "dense" in needed else None)
        kept, dropped, stats = filter_candidates(scored, params, context)
        write_table(dropped.to_arrow(), dropped_out)
        write_table(kept.to_arrow(), out)
        short = stats["queries_with_fewer_negatives"] + stats["queries_with_no_negatives"]
        if short:
            warnings.append(f"{short} of {stats['queries']} queries have fewer than {params.num_negatives} negatives "
                            f"({stats['queries_with_no_negatives']} have none)")
        return Done(stats, {"negatives": {"rows": kept.height}, "dropped": {"rows": dropped.height}}, warnings)

    stage = Stage("filter", out, params.identity(), needed, {"negatives": out, "dropped": dropped_out},
                  needs=(dropped_out,), shard=params.shard)
    return run_stage(stage, transform)
