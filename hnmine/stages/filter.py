"""`hnmine filter`: choose the negatives of each query from its scored candidates.

Writes negatives.arrow (the kept negatives, `negative_rank` 1..n per query) and dropped.arrow (every
other candidate with the rule that dropped it in `dropped_by`), so no candidate disappears
without a reason. Rules run in a fixed order; a candidate is charged to the first rule that drops it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table, write_table
from hnmine.io.manifest import is_current, manifest_path, read_manifest, write_manifest
from hnmine.stages.common import StageResult, Timer, fingerprints, shard_output, stage_input

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


def _column(scored: pl.DataFrame, wanted: str, preference: tuple[str, ...], what: str) -> str:
    """The score column a rule reads: the one named, or the first of `preference` that holds values."""
    if wanted != "auto":
        if wanted not in scored.columns:
            raise HnmineError(f"no score column '{wanted}' to filter on (columns: {', '.join(scored.columns)})",
                              fix="run `hnmine score` with the scorer that writes it, or pick another --score")
        return wanted
    for name in preference:
        if name in scored.columns and scored[name].drop_nulls().drop_nans().len():
            return name
    raise HnmineError(f"no {what} column to filter on (looked for {', '.join(preference)})",
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
    if probability is not None:
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


def filter_candidates(scored: pl.DataFrame, params: FilterParams) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Pure core: scored rows in, (kept, dropped, stats) out."""
    stats_extra: dict = {}
    column = probability = None
    if _uses_scores(params):
        column = _column(scored, params.score, SCORE_PREFERENCE, "score")
        stats_extra["score_column"] = column
    if params.max_probability is not None:
        probability = _column(scored, "auto", PROBABILITY_PREFERENCE, "probability")
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
    reason = pl.lit(None, dtype=pl.String)
    for name, drops in reversed(rules):  # the first rule that drops a candidate is the one charged
        reason = pl.when(drops.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    candidates = candidates.with_columns(reason.alias(schema.DROPPED_BY)).drop("_positive")

    survivors = candidates.filter(pl.col(schema.DROPPED_BY).is_null())
    if params.sampling == "random":
        keys = sampling_keys(survivors[schema.QUERY_ID].to_list(), survivors[schema.DOC_ID].to_list(), params.seed)
        survivors = survivors.with_columns(pl.Series("_key", keys))
    else:
        survivors = survivors.with_columns(pl.col(schema.RANK).cast(pl.UInt64).alias("_key"))
    survivors = survivors.with_columns(
        pl.col("_key").rank("ordinal").over(schema.QUERY_ID).cast(pl.Int32).alias(schema.NEGATIVE_RANK)
    )
    kept = survivors.filter(pl.col(schema.NEGATIVE_RANK) <= params.num_negatives).drop("_key", schema.DROPPED_BY)
    # queries stay in their order; within a query, kept negatives are listed in their 1..n order
    kept = kept.sort([pl.col("_order").min().over(schema.QUERY_ID), schema.NEGATIVE_RANK]).drop("_order")
    not_sampled = survivors.filter(pl.col(schema.NEGATIVE_RANK) > params.num_negatives).with_columns(
        pl.lit("not_sampled").alias(schema.DROPPED_BY)).drop("_key", schema.NEGATIVE_RANK)
    dropped = pl.concat([candidates.filter(pl.col(schema.DROPPED_BY).is_not_null()), not_sampled]).sort("_order").drop("_order")

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


def filter_stage(workdir: Path, params: FilterParams, progress: bool = True) -> StageResult:
    workdir = Path(workdir)
    source = shard_output(workdir, "scored", params.shard) if params.shard else stage_input(workdir, "scored")
    out = shard_output(workdir, "negatives", params.shard)
    dropped_out = shard_output(workdir, "dropped", params.shard)
    inputs_fp = fingerprints({"scored": source})
    identity = params.identity()
    if is_current(out, "filter", identity, inputs_fp) and dropped_out.exists():
        return StageResult("filter", {"negatives": out, "dropped": dropped_out},
                           read_manifest(manifest_path(out))["stats"], reused=True)
    manifest_path(out).unlink(missing_ok=True)
    with Timer() as timer:
        scored = pl.from_arrow(read_table(source))
        top_k = scored.filter(~pl.col(schema.IS_POSITIVE)).group_by(schema.QUERY_ID).len()["len"].max() or 0
        if params.num_negatives > top_k:
            raise HnmineError(
                f"num_negatives={params.num_negatives} is more than the {top_k} candidates per query that mine kept",
                path=source, fix=f"rerun `hnmine mine` with --top-k of at least {params.num_negatives}, or lower --num-negatives",
            )
        kept, dropped, stats = filter_candidates(scored, params)
        write_table(dropped.to_arrow(), dropped_out)
        write_table(kept.to_arrow(), out)
    warnings = []
    short = stats["queries_with_fewer_negatives"] + stats["queries_with_no_negatives"]
    if short:
        warnings.append(f"{short} of {stats['queries']} queries have fewer than {params.num_negatives} negatives "
                        f"({stats['queries_with_no_negatives']} have none)")
    write_manifest(out, stage="filter", params=identity, inputs=inputs_fp,
                   outputs={"negatives": {"rows": kept.height}, "dropped": {"rows": dropped.height}},
                   stats=stats, seconds=timer.seconds)
    return StageResult("filter", {"negatives": out, "dropped": dropped_out}, stats, seconds=timer.seconds, warnings=warnings)
