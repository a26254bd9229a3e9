"""The filter rules as objects: the README documents each in charge order, and each rule's
threshold-that-would-remove agrees with the expression that drops."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from conftest import REPO
from pydantic import ValidationError

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.filtering import rules as R
from hnmine.filtering.runner import filter_candidates
from hnmine.filtering.similarity import FilterContext, max_cosine_to_positives


def readme_filters_section() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"^### Filters\n(.*?)^### ", text, re.S | re.M).group(1)


def undocumented(section: str, rules: tuple[R.Rule, ...]) -> list[str]:
    """What the section lacks: a rule not named in backticks, named out of charge order, or an option without its flag."""
    problems, last = [], -1
    for rule in rules:
        at = section.find(f"`{rule.name}`")
        if at < 0:
            problems.append(f"rule {rule.name} is not named")
            continue
        if at < last:
            problems.append(f"rule {rule.name} is named out of charge order")
        last = at
        problems += [f"option --{o.replace('_', '-')} of {rule.name} is not named" for o in rule.options
                     if "--" + o.replace("_", "-") not in section]
    return problems


def test_readme_documents_every_rule_in_charge_order_with_its_options():
    section = readme_filters_section()
    assert undocumented(section, R.RULES) == []
    # the check can fail: a rule the README lost, or two rules swapped, are found
    assert undocumented(section.replace("`no_positive_score`", "no positive score"), R.RULES) == [
        "rule no_positive_score is not named"]
    swapped = (R.RULES[2], R.RULES[1], *R.RULES[3:])
    assert undocumented(section, swapped) == ["rule rank_window is named out of charge order"]


def test_rules_read_filter_params_options_and_every_drop_reason_is_a_rule():
    names = [rule.name for rule in R.RULES]
    assert len(set(names)) == len(names)
    for rule in R.RULES:
        assert set(rule.options) <= set(FilterParams.model_fields), rule.name
        has_threshold = rule.threshold_option is not None
        assert has_threshold == (rule.to_remove is not None) == (rule.stricter is not None) == (rule.option_value is not None)
        if has_threshold:
            assert rule.threshold_option in rule.options and rule.drops is not None
    assert {r.name for r in R.threshold_rules()} == {r.name for r in R.RULES if r.threshold_option}
    # every reason the runner writes is a rule of the list
    scored = synthetic()[0]
    _, dropped, stats = filter_candidates(scored, FilterParams(num_negatives=2, margin=0.5, max_probability=0.8,
                                                               likely_positive=0.95, short_queries="drop", rank_max=9))
    assert set(dropped[schema.DROPPED_BY].unique()) == set(stats["dropped_by"]) <= set(names)


def synthetic(seed: int = 1) -> tuple[pl.DataFrame, FilterContext]:
    """Queries with 1-3 positives and 12 ranked candidates (logits of both signs, a few unscored, some
    near copies of a positive), and embeddings for every document."""
    rng = np.random.default_rng(seed)
    rows, vectors = [], []
    for q in range(30):
        shift = rng.normal(0, 3)
        base = rng.normal(size=(3, 16))
        n_pos = int(rng.integers(1, 4))
        for p in range(n_pos):
            rows.append((f"q{q}", f"p{q}-{p}", True, None, shift + rng.normal(2, 1)))
            vectors.append(base[p])
        for r in range(1, 13):
            rows.append((f"q{q}", f"d{q}-{r}", False, r, shift + rng.normal(1 - 0.1 * r, 1.5) if r <= 10 else None))
            near = base[rng.integers(0, n_pos)] + rng.normal(scale=rng.choice([0.1, 1.0, 3.0]), size=16)
            vectors.append(near)
    scored = pl.DataFrame(rows, schema={schema.QUERY_ID: pl.String, schema.DOC_ID: pl.String,
                                        schema.IS_POSITIVE: pl.Boolean, schema.RANK: pl.Int32, "ce_logit": pl.Float32},
                          orient="row").with_columns((1 / (1 + (-pl.col("ce_logit")).exp())).alias("ce_prob"))
    context = FilterContext(scored[schema.DOC_ID].to_list(), np.arange(scored.height), np.asarray(vectors, np.float32))
    return scored, context


def _params(option: str, value: float, reference: str) -> FilterParams | None:
    try:
        return FilterParams(**{option: value, "reference_positive": reference})
    except ValidationError:
        return None  # outside the option's range: no setting of it could drop this candidate


@pytest.mark.parametrize("reference", ["min", "mean"])
@pytest.mark.parametrize("rule", R.threshold_rules(), ids=lambda r: r.name)
def test_each_threshold_to_remove_agrees_with_the_expression_that_drops(rule, reference):
    scored, context = synthetic()
    candidates = R.with_positive_reference(scored.filter(~pl.col(schema.IS_POSITIVE)), scored, "ce_logit", reference)
    candidates = candidates.with_columns(pl.Series(R.COSINE, max_cosine_to_positives(candidates, scored, context)))
    columns = R.Columns("ce_logit", "ce_prob", cosine=True)
    candidates = candidates.with_columns(rule.to_remove(columns).alias(rule.threshold_column))
    finite = candidates.filter(pl.col(rule.threshold_column).is_not_null() & pl.col(rule.threshold_column).is_not_nan())
    assert finite.height > 100
    larger = rule.stricter == "larger"
    integer = isinstance(rule.option_value(2.0), int)
    checked = 0
    for t in finite[rule.threshold_column].to_list()[::7]:
        step = 1 if integer else 1e-4 * max(abs(t), 1.0)
        stricter, looser = (t + step * (not integer), t - step) if larger else (t - step, t + step)
        row = finite.filter(pl.col(rule.threshold_column) == t).head(1)
        for value, should_drop in ((stricter, True), (looser, False)):
            params = _params(rule.threshold_option, value, reference)
            if params is None or not rule.active(params):
                continue
            dropped = row.select(rule.drops(params, columns).fill_null(False)).item()
            assert dropped == should_drop, (rule.name, t, value)
            checked += 1
        # the audit's sweep: the value it prints for threshold t drops what removes(t) counts
        params = _params(rule.threshold_option, rule.option_value(t), reference)
        if params is not None and rule.active(params):
            away = (pl.col(rule.threshold_column) - t).abs() > 1e-5 * max(abs(t), 1.0)  # float32 rounding aside
            both = finite.filter(away).select(rule.drops(params, columns).fill_null(False).alias("drops"),
                                              rule.removes(t).alias("removes"))
            assert (both["drops"] == both["removes"]).all(), (rule.name, t)
    assert checked >= 20


def test_an_audit_threshold_passed_to_filter_drops_that_candidate_alone():
    """Through the whole runner: the option set to a kept negative's threshold charges it to that rule."""
    scored, context = synthetic(2)
    base = dict(num_negatives=12, near_duplicate=0, duplicate_negatives=0)
    kept, _, _ = filter_candidates(scored, FilterParams(**base), context)
    candidates = R.with_positive_reference(kept, scored, "ce_logit", "min")
    candidates = candidates.with_columns(pl.Series(R.COSINE, max_cosine_to_positives(candidates, scored, context)))
    columns = R.Columns("ce_logit", "ce_prob", cosine=True)
    hits = {}
    for rule in R.threshold_rules():
        hits[rule.name] = 0
        values = candidates.select(schema.QUERY_ID, schema.DOC_ID, rule.to_remove(columns).alias("t")).drop_nulls()
        for qid, doc, t in values.filter(pl.col("t").is_not_nan()).head(40).iter_rows():
            value = rule.option_value(t)
            if not isinstance(value, int):  # just past the candidate's own value, the stricter way
                value = t + 1e-5 if rule.stricter == "larger" else t - 1e-5
            params = _params(rule.threshold_option, value, "min")
            if params is None:
                continue
            _, dropped, _ = filter_candidates(scored, params.model_copy(update={k: v for k, v in base.items()
                                                                              if k != rule.threshold_option}), context)
            reason = dropped.filter((pl.col(schema.QUERY_ID) == qid) & (pl.col(schema.DOC_ID) == doc))[schema.DROPPED_BY]
            assert reason.to_list() in ([rule.name], ["unscored"], ["unscored_probability"], ["no_positive_score"]), (rule.name, t)
            hits[rule.name] += reason.to_list() == [rule.name]
            if hits[rule.name] == 3:
                break
    assert all(n == 3 for n in hits.values()), hits
