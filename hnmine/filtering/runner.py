"""Apply the filter rules to one scored table: every candidate is kept or charged to the first rule
(in `rules.RULES` order) that drops it, and counted."""

from __future__ import annotations

import polars as pl

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.errors import HnmineError
from hnmine.filtering import rules as R
from hnmine.filtering.sampling import pad, with_sampling_key
from hnmine.filtering.similarity import FilterContext, duplicate_negative_mask, max_cosine_to_positives


def _charge(rows: pl.DataFrame, rule: R.Rule) -> pl.DataFrame:
    return rows.with_columns(pl.lit(rule.name).alias(schema.DROPPED_BY))


def rule_inputs(candidates: pl.DataFrame, scored: pl.DataFrame, params: FilterParams, context: FilterContext | None,
                stats_extra: dict) -> tuple[pl.DataFrame, R.Columns]:
    """The candidates with the helper columns the rules of `params` read (the query's reference
    positive score, the cosine to its positives), and which score columns those rules compare."""
    column = probability = None
    if R.uses_scores(params):
        column = R.pick_score_column(scored, params.score, R.SCORE_PREFERENCE)
        stats_extra["score_column"] = column
    if params.max_probability is not None or params.likely_positive is not None:
        probability = R.pick_score_column(scored, "auto", R.PROBABILITY_PREFERENCE, "probability")
        stats_extra["probability_column"] = probability
    if column is not None:
        candidates = R.with_positive_reference(candidates, scored, column, params.reference_positive)
    else:
        candidates = candidates.with_columns(pl.lit(None, dtype=pl.Float64).alias(R.POSITIVE))
    has_embeddings = context is not None and context.embeddings is not None
    if R.NEAR_DUPLICATE.active(params):
        if has_embeddings:
            candidates = candidates.with_columns(pl.Series(R.COSINE, max_cosine_to_positives(candidates, scored, context)))
        else:
            stats_extra["near_duplicate"] = "not checked: no dense index in the work dir"
    return candidates, R.Columns(column, probability, cosine=R.COSINE in candidates.columns)


def charged_reason(rules: list[R.Rule], params: FilterParams, columns: R.Columns) -> pl.Expr:
    """Per candidate, the name of the first of `rules` (in charge order) that drops it, else null."""
    reason = pl.lit(None, dtype=pl.String)
    for rule in reversed(rules):  # the first rule that drops a candidate is the one charged
        reason = pl.when(rule.drops(params, columns).fill_null(False)).then(pl.lit(rule.name)).otherwise(reason)
    return reason


def _row_rules(candidates: pl.DataFrame, scored: pl.DataFrame, params: FilterParams, context: FilterContext | None,
               stats_extra: dict) -> tuple[pl.DataFrame, R.Columns]:
    """The candidates with `dropped_by` from the row-expression rules."""
    candidates, columns = rule_inputs(candidates, scored, params, context, stats_extra)
    reason = charged_reason(R.row_rules(params, columns), params, columns)
    return candidates.with_columns(reason.alias(schema.DROPPED_BY)).drop(R.POSITIVE, R.COSINE, strict=False), columns


def filter_candidates(scored: pl.DataFrame, params: FilterParams,
                      context: FilterContext | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Pure core: scored rows in, (kept, dropped, stats) out."""
    stats_extra: dict = {}
    candidates = scored.filter(~pl.col(schema.IS_POSITIVE)).with_row_index("_order")
    candidates, columns = _row_rules(candidates, scored, params, context, stats_extra)

    survivors = candidates.filter(pl.col(schema.DROPPED_BY).is_null())
    teacher = None
    if params.sampling == "lowest-score":
        teacher = columns.score or R.pick_score_column(scored, params.score, R.SCORE_PREFERENCE)
        stats_extra["score_column"] = teacher
    survivors = with_sampling_key(survivors, params, teacher)
    duplicates = None
    if R.DUPLICATE_NEGATIVE.active(params):
        if context is not None and context.embeddings is not None:
            is_duplicate = duplicate_negative_mask(survivors, params, context)
            duplicates = _charge(survivors.filter(is_duplicate).drop("_key"), R.DUPLICATE_NEGATIVE)
            survivors = survivors.filter(~is_duplicate)
        else:
            stats_extra["duplicate_negatives"] = "not checked: no dense index in the work dir"
    survivors = survivors.with_columns(
        pl.col("_key").rank("ordinal").over(schema.QUERY_ID).cast(pl.Int32).alias(schema.NEGATIVE_RANK)
    )
    kept = survivors.filter(pl.col(schema.NEGATIVE_RANK) <= params.num_negatives).drop("_key", schema.DROPPED_BY)
    kept = kept.with_columns(pl.lit(False).alias(schema.PADDED))
    not_sampled = _charge(survivors.filter(pl.col(schema.NEGATIVE_RANK) > params.num_negatives), R.NOT_SAMPLED
                          ).drop("_key", schema.NEGATIVE_RANK)
    dropped = [candidates.filter(pl.col(schema.DROPPED_BY).is_not_null()), not_sampled]
    if duplicates is not None:
        dropped.append(duplicates)

    counts = kept.group_by(schema.QUERY_ID).len()
    short = scored.select(schema.QUERY_ID).unique().join(counts, on=schema.QUERY_ID, how="left").filter(
        pl.col("len").fill_null(0) < params.num_negatives)
    if R.SHORT_QUERY.active(params) and short.height:
        is_short = pl.col(schema.QUERY_ID).is_in(short[schema.QUERY_ID].implode())
        dropped.append(_charge(kept.filter(is_short).drop(schema.NEGATIVE_RANK, schema.PADDED), R.SHORT_QUERY))
        kept = kept.filter(~is_short)
        stats_extra["queries_dropped_short"] = short.height
    elif params.short_queries == "pad" and short.height:
        if context is None:
            raise HnmineError("padding short queries needs the corpus", fix="run filter in a work dir made by `hnmine index`")
        kept, stats_extra["padded_negatives"], stats_extra["queries_padded_short"] = pad(kept, scored, short, params, context)
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
