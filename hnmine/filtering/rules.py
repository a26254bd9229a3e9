"""The filter rules, one object each, in the order a dropped candidate is charged.

A rule knows its name, the FilterParams options it reads, what it drops, and either a row
expression that is true where it drops a candidate or, for the rules that depend on the other
candidates of the query (duplicate_negative, not_sampled, short_query), nothing: the runner applies
those itself. A rule with a threshold also knows, per candidate, the value of its option that would
have dropped that candidate and which way of that value is stricter; `hnmine audit` reads those.
`hnmine filter`, `hnmine audit`, export's score choice and the README all read `RULES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.errors import HnmineError

# the score column the score rules read (--score auto), and the probability the probability rules read
SCORE_PREFERENCE = ("ce_logit", "judge_score", "dense_score", "bm25_score")
PROBABILITY_PREFERENCE = (schema.DECIDED_PROB, "ce_prob", "judge_score")  # a cascade's decided probability first

# helper columns the runner (and the audit) add to the candidate rows before the expressions read them
POSITIVE = "_positive"  # the query's reference positive score (--reference-positive of the score column)
COSINE = "_cosine"  # the highest embedding cosine to one of the query's positives (-inf: no positive)


@dataclass(frozen=True)
class Columns:
    """Which columns of the candidate rows the expressions read: the score column (None when no score
    rule is on), the probability column (None when no probability rule is on), and whether the
    near-duplicate cosine has been computed."""

    score: str | None = None
    probability: str | None = None
    cosine: bool = False

    def has(self, inputs: tuple[str, ...]) -> bool:
        present = {"rank": True, "score": self.score is not None, "positive": self.score is not None,
                   "probability": self.probability is not None, "cosine": self.cosine}
        return all(present[i] for i in inputs)


@dataclass(frozen=True)
class Rule:
    """One filter rule. `drops(params, columns)` is the row expression true where the rule drops a
    candidate (None for the rules the runner applies over a query's candidates). For a rule with a
    threshold, `to_remove(columns)` is per candidate the value of `threshold_option` that would have
    dropped it, and `stricter` says whether a larger or a smaller value drops more."""

    name: str
    options: tuple[str, ...]  # the FilterParams fields it reads
    what: str  # what it drops, in words
    active: Callable[[FilterParams], bool]
    drops: Callable[[FilterParams, Columns], pl.Expr] | None = None
    inputs: tuple[str, ...] = ()  # what its expressions read: rank, score, positive, probability, cosine
    needs_embeddings: bool = False
    threshold_option: str | None = None
    to_remove: Callable[[Columns], pl.Expr] | None = None
    stricter: Literal["larger", "smaller"] | None = None
    option_value: Callable[[float], float] | None = None  # a threshold as the value to pass to the option

    @property
    def flag(self) -> str | None:
        return None if self.threshold_option is None else "--" + self.threshold_option.replace("_", "-")

    @property
    def threshold_column(self) -> str | None:
        return None if self.threshold_option is None else f"{self.threshold_option}_to_remove"

    def removes(self, threshold: float) -> pl.Expr:
        """True where setting the option to `threshold` drops the candidate (by its threshold column)."""
        column = pl.col(self.threshold_column)
        return column <= threshold if self.stricter == "larger" else column >= threshold


def uses_scores(params: FilterParams) -> bool:
    """Whether a rule compares the score column."""
    return any(v is not None for v in (params.max_relative, params.margin, params.max_score, params.min_score))


def _score(c: Columns) -> pl.Expr:
    return pl.col(c.score)


def _probability(c: Columns) -> pl.Expr:
    return pl.col(c.probability)


def _unscored(e: pl.Expr) -> pl.Expr:
    return e.is_null() | e.is_nan()


def _rank_window(p: FilterParams, c: Columns) -> pl.Expr:
    rank_max = p.rank_max if p.rank_max is not None else np.iinfo(np.int32).max
    return (pl.col(schema.RANK) < p.rank_min) | (pl.col(schema.RANK) > rank_max)


def _relative_ceiling(p: float) -> pl.Expr:
    # p x pos for a positive score; pos - (1-p)|pos| in general, so a negative logit is handled too
    pos = pl.col(POSITIVE)
    return pos - (1 - p) * pos.abs()


def _below(value: float) -> float:
    """A ceiling just under `value`, so the ceiling drops the candidate scoring `value`."""
    return float(np.nextafter(np.float32(value), np.float32(-np.inf)))


def _rounded(value: float) -> float:
    return round(float(value), 6)


LIKELY_POSITIVE = Rule(
    "likely_positive", ("likely_positive",),
    "candidates whose probability is at or above the threshold, whatever their rank: set aside as likely "
    "positives (first, so a confident hit outside the rank window is still marked)",
    active=lambda p: p.likely_positive is not None,
    drops=lambda p, c: _probability(c) >= p.likely_positive, inputs=("probability",))
RANK_WINDOW = Rule(
    "rank_window", ("rank_min", "rank_max"), "candidates ranked above rank_min or below rank_max",
    active=lambda p: True, drops=_rank_window, inputs=("rank",),
    threshold_option="rank_min", to_remove=lambda c: pl.col(schema.RANK) + 1, stricter="larger",
    option_value=lambda v: int(v))
UNSCORED = Rule(
    "unscored", ("score",), "candidates without a score while a score rule is on",
    active=uses_scores, drops=lambda p, c: _unscored(_score(c)), inputs=("score",))
MIN_SCORE = Rule(
    "min_score", ("min_score", "score"), "candidates scoring below min_score (too easy)",
    active=lambda p: p.min_score is not None, drops=lambda p, c: _score(c) < p.min_score, inputs=("score",))
MAX_SCORE = Rule(
    "max_score", ("max_score", "score"), "candidates scoring above max_score",
    active=lambda p: p.max_score is not None, drops=lambda p, c: _score(c) > p.max_score, inputs=("score",),
    threshold_option="max_score", to_remove=_score, stricter="smaller", option_value=_below)
UNSCORED_PROBABILITY = Rule(
    "unscored_probability", ("max_probability",), "candidates without a probability while max_probability is on",
    active=lambda p: p.max_probability is not None, drops=lambda p, c: _unscored(_probability(c)),
    inputs=("probability",))
MAX_PROBABILITY = Rule(
    "max_probability", ("max_probability",), "candidates whose probability is above max_probability (RocketQA)",
    active=lambda p: p.max_probability is not None, drops=lambda p, c: _probability(c) > p.max_probability,
    inputs=("probability",),
    threshold_option="max_probability", to_remove=_probability, stricter="smaller", option_value=_below)
NO_POSITIVE_SCORE = Rule(
    "no_positive_score", ("score", "reference_positive"),
    "candidates of a query whose positives have no score while max_relative or margin is on",
    active=lambda p: p.max_relative is not None or p.margin is not None,
    drops=lambda p, c: pl.col(POSITIVE).is_null(), inputs=("positive",))
MAX_RELATIVE = Rule(
    "max_relative", ("max_relative", "score", "reference_positive"),
    "candidates scoring at or above p x the reference positive's score, pos - (1-p)|pos| (TopK-PercPos)",
    active=lambda p: p.max_relative is not None,
    drops=lambda p, c: _score(c) >= _relative_ceiling(p.max_relative), inputs=("score", "positive"),
    threshold_option="max_relative", stricter="smaller", option_value=_rounded,
    # dropped when s >= pos - (1 - p)|pos|, i.e. p <= 1 - (pos - s)/|pos|: a smaller p keeps fewer
    to_remove=lambda c: pl.when(pl.col(POSITIVE).abs() > 0)
    .then(1 - (pl.col(POSITIVE) - _score(c)) / pl.col(POSITIVE).abs()).otherwise(None))
MARGIN = Rule(
    "margin", ("margin", "score", "reference_positive"),
    "candidates scoring at or above the reference positive's score minus the margin",
    active=lambda p: p.margin is not None, drops=lambda p, c: _score(c) >= pl.col(POSITIVE) - p.margin,
    inputs=("score", "positive"),
    threshold_option="margin", to_remove=lambda c: pl.col(POSITIVE) - _score(c), stricter="larger",
    option_value=_rounded)
NEAR_DUPLICATE = Rule(
    "near_duplicate", ("near_duplicate",), "candidates whose embedding cosine to a positive is at or above the threshold",
    active=lambda p: bool(p.near_duplicate), drops=lambda p, c: pl.col(COSINE) >= p.near_duplicate,
    inputs=("cosine",), needs_embeddings=True,
    threshold_option="near_duplicate", stricter="smaller", option_value=_rounded,
    # a query without positives has no cosine (-inf): no setting drops its candidates
    to_remove=lambda c: pl.when(pl.col(COSINE).is_finite()).then(pl.col(COSINE)).otherwise(pl.lit(np.nan, pl.Float32)))
DUPLICATE_NEGATIVE = Rule(
    "duplicate_negative", ("duplicate_negatives",),
    "survivors whose embedding cosine to a negative already taken for the query is at or above the threshold "
    "(its slot goes to the next survivor)",
    active=lambda p: bool(p.duplicate_negatives), needs_embeddings=True)
NOT_SAMPLED = Rule(
    "not_sampled", ("num_negatives", "sampling", "seed"), "survivors past the first num_negatives in sampling order",
    active=lambda p: True)
SHORT_QUERY = Rule(
    "short_query", ("short_queries",), "every negative of a query left with fewer than num_negatives (--short-queries drop)",
    active=lambda p: p.short_queries == "drop")

# the charge order: a dropped candidate is charged to the first of these that drops it
RULES: tuple[Rule, ...] = (LIKELY_POSITIVE, RANK_WINDOW, UNSCORED, MIN_SCORE, MAX_SCORE, UNSCORED_PROBABILITY,
                           MAX_PROBABILITY, NO_POSITIVE_SCORE, MAX_RELATIVE, MARGIN, NEAR_DUPLICATE,
                           DUPLICATE_NEGATIVE, NOT_SAMPLED, SHORT_QUERY)
BY_NAME = {rule.name: rule for rule in RULES}
# the order `hnmine audit` lists the rules with a threshold (its columns and rows): from the rank
# window inward to the score rules, then the embedding check
AUDIT_ORDER = ("rank_window", "max_probability", "margin", "max_relative", "max_score", "near_duplicate")


def threshold_rules() -> list[Rule]:
    """The rules with a threshold that would have removed a candidate, in the audit's order."""
    return [BY_NAME[name] for name in AUDIT_ORDER]


def row_rules(params: FilterParams, columns: Columns) -> list[Rule]:
    """The row-expression rules that are on for these params and whose inputs exist, in charge order."""
    return [r for r in RULES if r.drops is not None and r.active(params) and columns.has(r.inputs)]


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


def with_positive_reference(rows: pl.DataFrame, scored: pl.DataFrame, column: str, how: str) -> pl.DataFrame:
    """`rows` with POSITIVE: the min, max or mean score of their query's positives (null: none scored)."""
    values = pl.col(column).filter(pl.col(schema.IS_POSITIVE) & pl.col(column).is_not_nan())
    agg = {"min": values.min(), "max": values.max(), "mean": values.mean()}[how]
    reference = scored.group_by(schema.QUERY_ID).agg(agg.alias(POSITIVE))
    return rows.join(reference, on=schema.QUERY_ID, how="left", maintain_order="left")
