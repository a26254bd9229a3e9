"""`hnmine calibrate`: what each filter threshold would do to this run, before choosing it, without labels.

Margins are model-specific: a relative margin that suits one model skips most candidates with
another, and a user finds out after the run. For each threshold option (the rank window's
rank_min and the rules that compare scores: margin, max_relative, max_probability), with every
other rule as the filter parameters set it, calibrate computes from the scored candidates:

- as a function of the option's value, the share of candidates that pass the rules and the share
  of queries left with `num_negatives` of them (a curve, and a table at a few shares);
- the value that keeps a target share of the queries full (`--target-full`), checked by running
  the real filter with it (near-duplicate negatives, which the curve cannot see, can empty a few
  more queries: the check steps to a looser value until the target holds);
- the positives' score distribution on the scale the rules compare.

Per query, the curve needs one number: the option's value at which the query stops being full
(the n-th most tolerant threshold among its candidates that pass the other rules), so the whole
curve is one sort. Writes WORKDIR/calibration/calibration.json; `hnmine report` draws it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.config import CalibrateParams, FilterParams
from hnmine.errors import HnmineError
from hnmine.filtering import rules as R
from hnmine.filtering.runner import charged_reason, filter_candidates, rule_inputs
from hnmine.filtering.similarity import FilterContext
from hnmine.io.files import atomic_path, read_table
from hnmine.io.manifest import manifest_path, read_manifest
from hnmine.retrievers.embedding_store import load_embeddings
from hnmine.workdir import WorkDir, output_params

# the value an option takes while its inputs are computed (any value turns the rule on), and its
# value with the rule off
_ON = {"rank_min": 1, "margin": 0.0, "max_relative": 0.95, "max_probability": 0.5, "max_score": 0.0, "near_duplicate": 0.95}
_OFF = {"rank_min": 1, "margin": None, "max_relative": None, "max_probability": None, "max_score": None, "near_duplicate": 0}
SHARES = (1.0, 0.99, 0.95, 0.9, 0.75, 0.5)  # the table's rows (and the target): the strictest value keeping this share full
CURVE_POINTS = 200


@dataclass
class Calibration:
    """One option's calibration: the curve, the table rows and the suggested value."""

    option: str
    rule: str
    stricter: str  # "larger" or "smaller": which way of the value drops more
    current: float | None
    curve: list[dict]  # {value, queries_full, candidates_pass}, from the loosest value to the strictest
    table: list[dict]  # {share, value, queries_full, candidates_pass}
    suggested: float | None
    applied: dict | None  # the real filter at the suggested value: queries_full, candidates_kept
    note: str = ""


@dataclass
class CalibrationResult:
    summary: dict
    options: list[Calibration] = field(default_factory=list)
    output: Path | None = None


def _rule_of(option: str) -> R.Rule:
    for rule in R.threshold_rules():
        if rule.threshold_option == option:
            return rule
    raise HnmineError(f"'{option}' is not a filter threshold",
                      fix="use one of: " + ", ".join(r.threshold_option for r in R.threshold_rules()))


def _tolerance(values: np.ndarray, stricter: str) -> np.ndarray:
    """Per candidate, the option value at and past which the rule drops it; where it has none (no
    cosine under near_duplicate, say), no value drops it."""
    return np.where(np.isnan(values), np.inf if stricter == "larger" else -np.inf, values)


@dataclass(frozen=True)
class _Scale:
    """How one option's value compares with a candidate's: which way is stricter, whether a candidate
    at exactly the value passes (max_probability and max_score drop only above it, the other rules
    drop at it), and whether values are whole numbers (rank_min)."""

    stricter: str
    inclusive: bool
    integer: bool

    def passes(self, values: np.ndarray | float, threshold: float):
        if self.stricter == "larger":
            return values > threshold
        return values <= threshold if self.inclusive else values < threshold

    def looser(self, critical: float) -> float:
        """The readable value (3 significant digits) closest to `critical` at which a candidate whose
        threshold is `critical` passes."""
        if self.integer:
            return float(critical - 1)
        if not math.isfinite(critical):
            return critical
        digits = 2 - (math.floor(math.log10(abs(critical))) if critical else 0)
        unit = 10.0 ** -digits
        direction = -1 if self.stricter == "larger" else 1
        start = math.floor(critical / unit) if self.stricter == "larger" else math.ceil(critical / unit)
        for step in range(3):  # floating-point rounding can leave the first candidate a unit short
            value = round((start + direction * step) * unit, max(digits, 0))
            if self.passes(critical, value):
                return value
        return value


_INCLUSIVE = {"max_probability", "max_score"}  # their rules drop candidates above the value, not at it


def _critical_values(query_ids: pl.Series, tolerance: np.ndarray, passes_others: np.ndarray, stricter: str,
                     n: int, queries: list) -> np.ndarray:
    """Per query, the option value at which it stops keeping n candidates (NaN: it never keeps n)."""
    frame = pl.DataFrame({"q": query_ids, "t": tolerance}).filter(pl.Series(passes_others))
    # larger: a candidate passes while threshold < t, so the query is full while threshold < its n-th largest t
    ordered = frame.sort("t", descending=stricter == "larger")
    nth = (ordered.group_by("q", maintain_order=True).agg(pl.col("t").head(n).alias("c"))
           .filter(pl.col("c").list.len() >= n).with_columns(pl.col("c").list.get(n - 1)))
    by_query = dict(zip(nth["q"].to_list(), nth["c"].to_list()))
    return np.array([by_query.get(q, np.nan) for q in queries], dtype=np.float64)


def _strict_to_loose(critical: np.ndarray, scale: _Scale) -> np.ndarray:
    """The queries' critical values that are reachable, from the strictest to the loosest."""
    reachable = np.sort(critical[~np.isnan(critical)])
    return reachable[::-1] if scale.stricter == "larger" else reachable


def _value_for_share(critical: np.ndarray, share: float, scale: _Scale) -> float | None:
    """The strictest readable value that leaves at least `share` of the queries full (None: unreachable)."""
    k = math.ceil(share * len(critical) - 1e-9)
    ordered = _strict_to_loose(critical, scale)
    if k > len(ordered) or k < 1:
        return None
    return scale.looser(float(ordered[k - 1]))


def _share_full(critical: np.ndarray, value: float, scale: _Scale) -> float:
    hit = critical[~np.isnan(critical)]
    return float(scale.passes(hit, value).sum() / len(critical)) if len(critical) else 0.0


def _option_value(rule: R.Rule, value: float):
    return int(value) if rule.threshold_option == "rank_min" else float(value)


def _allowed(params: FilterParams, option: str, value: float) -> bool:
    """Whether the filter takes this value of the option (max_relative must be above 0, a rank_min
    within rank_max, ...)."""
    if not math.isfinite(value):
        return False
    try:
        FilterParams.model_validate(params.model_dump() | {option: value})
    except ValueError:
        return False
    return True


def _calibrate_option(option: str, candidates: pl.DataFrame, scored: pl.DataFrame, params: FilterParams,
                      context: FilterContext | None, target: float, queries: list) -> Calibration:
    rule = _rule_of(option)
    current = getattr(params, option)
    on = params.model_copy(update={option: current if current not in (None, 0) else _ON[option]})
    if current == _OFF[option] and option != "rank_min":
        current = None  # the rule is off
    scale = _Scale(rule.stricter, option in _INCLUSIVE, option == "rank_min")
    info: dict = {}
    try:
        rows, columns = rule_inputs(candidates, scored, on, context, info)
    except HnmineError as exc:
        return Calibration(option, rule.name, rule.stricter, current, [], [], None, None, note=exc.detail)
    if not columns.has(rule.inputs):
        return Calibration(option, rule.name, rule.stricter, current, [], [], None, None,
                           note=info.get(option, "the work dir lacks what this rule reads"))
    # every other rule on, and the rule itself off: for the rank window, rank_max still holds
    others = [r for r in R.row_rules(on, columns) if r is not rule or option == "rank_min"]
    reason = charged_reason(others, on.model_copy(update={option: _OFF[option]}), columns)
    rows = rows.with_columns(reason.alias("_other"), rule.to_remove(columns).cast(pl.Float64).alias("_value"),
                             rule.drops(on, columns).fill_null(False).alias("_dropped"))
    value = rows["_value"].fill_null(np.nan).to_numpy()
    dropped_at_every_value = np.isnan(value) & rows["_dropped"].to_numpy()
    # a candidate the rule drops at every value counts as dropped by another rule: no value keeps it
    passes_others = rows["_other"].is_null().to_numpy() & ~dropped_at_every_value
    tolerance = _tolerance(value, rule.stricter)
    critical = _critical_values(rows[schema.QUERY_ID], tolerance, passes_others, rule.stricter, params.num_negatives,
                                queries)
    finite = np.unique(tolerance[passes_others & np.isfinite(tolerance)])
    # the curve: at each distinct value (thinned to CURVE_POINTS), from the loosest to the strictest
    grid = finite[:: -1] if rule.stricter == "smaller" else finite
    if len(grid) > CURVE_POINTS:
        grid = grid[np.linspace(0, len(grid) - 1, CURVE_POINTS).round().astype(int)]
    total = max(rows.height, 1)

    def point(value: float) -> dict:
        passing = passes_others & scale.passes(tolerance, value)
        return {"value": _option_value(rule, value), "queries_full": _share_full(critical, value, scale),
                "candidates_pass": float(passing.sum() / total)}

    looser = [scale.looser(float(v)) for v in grid]
    curve = [point(v) for v in looser if _allowed(params, option, _option_value(rule, v))]
    table = []
    for share in sorted({*SHARES, target}, reverse=True):
        value = _value_for_share(critical, share, scale)
        if value is not None and _allowed(params, option, _option_value(rule, value)):
            table.append({"share": share} | point(value))
    if current is not None:
        table.append({"share": "current"} | point(float(current)))
    suggested = _value_for_share(critical, target, scale)
    applied, note = None, ""
    if suggested is not None and not _allowed(params, option, _option_value(rule, suggested)):
        note = (f"the strictest value that keeps {100 * target:.0f} % of queries full, {suggested:g}, is outside what "
                f"--{option.replace('_', '-')} takes: every value it takes keeps more queries full")
        suggested = None
    elif suggested is None:
        reachable = float(np.mean(~np.isnan(critical))) if len(critical) else 0.0
        note = (f"no value keeps {100 * target:.0f} % of queries full: with the other rules, at most "
                f"{100 * reachable:.1f} % can be")
    else:
        suggested, applied = _check(option, critical, rule, scale, scored, params, context, target)
        if not applied["target_met"]:
            note = (f"the filter with {suggested:g} leaves {100 * applied['queries_full']:.1f} % of queries full, short "
                    f"of the target: near-copy negatives (--duplicate-negatives) empty more queries than any "
                    f"value can refill")
    return Calibration(option, rule.name, rule.stricter, current, curve, table, suggested, applied, note)


def _check(option: str, critical: np.ndarray, rule: R.Rule, scale: _Scale, scored: pl.DataFrame,
           params: FilterParams, context: FilterContext | None, target: float) -> tuple[float, dict]:
    """The strictest value at which the real filter leaves the target share of queries full.

    The curve cannot see near-copy negatives (--duplicate-negatives), which can empty a few more
    queries: starting from the curve's value, step looser by as many queries as are short, then
    bisect back to the strictest value that holds. Short queries are kept, never padded, here."""
    ordered = _strict_to_loose(critical, scale)
    checked = params.model_copy(update={"short_queries": "keep"})
    runs: dict[int, tuple[float, dict]] = {}

    def run(i: int) -> tuple[float, dict]:
        if i not in runs:
            value = scale.looser(float(ordered[i]))
            kept, _dropped, stats = filter_candidates(scored, checked.model_copy(update={option: _option_value(rule, value)}),
                                                      context)
            share = stats["queries_with_all_negatives"] / max(stats["queries"], 1)
            runs[i] = value, {"queries_full": share, "candidates_kept": kept.height, "target_met": share >= target - 1e-12}
        return runs[i]

    def allowed(i: int) -> bool:
        return _allowed(params, option, _option_value(rule, scale.looser(float(ordered[i]))))

    first = math.ceil(target * len(critical) - 1e-9) - 1  # the curve's value: allowed (the caller checked)
    # the loosest allowed value: the options' bounds (max_probability <= 1, ...) cut off one end only
    limit, beyond = first, len(ordered)
    while beyond - limit > 1:
        middle = (limit + beyond) // 2
        limit, beyond = (middle, beyond) if allowed(middle) else (limit, middle)
    good, bad = first, first - 1
    while not run(good)[1]["target_met"]:
        if good == limit:
            return _option_value(rule, run(good)[0]), run(good)[1]
        bad = good
        short = math.ceil((target - run(good)[1]["queries_full"]) * len(critical))
        good = min(good + max(short, 1), limit)
    while good - bad > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if run(middle)[1]["target_met"] else (good, middle)
    value, applied = run(good)
    return _option_value(rule, value), applied


def _distribution(values: pl.Series) -> dict:
    values = values.drop_nulls().drop_nans()
    if not values.len():
        return {}
    return {"count": values.len(), **{f"p{int(q * 100)}": float(values.quantile(q, "linear"))
                                       for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)}}


def calibrate(workdir: Path, params: CalibrateParams | None = None, filter_params: FilterParams | None = None,
              output: Path | None = None, filter_source: str = "the filter parameters given") -> CalibrationResult:
    """Calibrate the threshold options of `filter_params` (default: the filter the work dir last ran,
    else the defaults) on the work dir's scored candidates; `filter_source` names where they came from."""
    started = time.perf_counter()
    params = params or CalibrateParams()
    wd = WorkDir(Path(workdir))
    scored_path = wd.stage_input("scored")
    if not scored_path.exists():
        raise HnmineError("not found (calibrate reads the scored candidates)", path=wd.whole("scored"),
                          fix=f"run `hnmine score --workdir {workdir}` first")
    if not manifest_path(scored_path).exists():  # a shard folder with shards still missing
        raise HnmineError("the scored shards are not all there", path=scored_path,
                          fix="run `hnmine score --shard K/N` for the missing shards first")
    source = filter_source
    if filter_params is None:
        negatives = wd.stage_input("negatives")
        if manifest_path(negatives).exists():
            filter_params = FilterParams.model_validate({k: v for k, v in output_params(negatives, "hnmine filter").items()
                                                         if k != "shard"})
            source = "the work dir's last filter run"
        else:
            filter_params = FilterParams()
            source = "the defaults (no filter has run in the work dir)"
    scored = pl.from_arrow(read_table(scored_path))
    context = None
    if wd.corpus.exists():
        corpus = read_table(wd.corpus, [schema.DOC_ID, schema.TEXT_HASH])
        context = FilterContext(corpus.column(schema.DOC_ID).to_pylist(), corpus.column(schema.TEXT_HASH).to_numpy(),
                                load_embeddings(wd.dense) if wd.dense_embeddings.exists() else None)
    candidates = scored.filter(~pl.col(schema.IS_POSITIVE))
    queries = scored[schema.QUERY_ID].unique(maintain_order=True).to_list()
    options = [_calibrate_option(option, candidates, scored, filter_params, context, params.target_full, queries)
               for option in params.options]
    positives = scored.filter(pl.col(schema.IS_POSITIVE))
    score_columns = [c for c in (*R.SCORE_PREFERENCE, *R.PROBABILITY_PREFERENCE)
                     if c in scored.columns and scored[c].drop_nulls().drop_nans().len()]
    summary = {
        # which scores this describes: `hnmine report` says when the work dir has been rescored since
        "scored_fingerprint": read_manifest(manifest_path(scored_path)).get("fingerprint"),
        "target_full": params.target_full, "num_negatives": filter_params.num_negatives,
        "filter_params_from": source, "filter_params": filter_params.identity(),
        "queries": len(queries), "candidates": candidates.height,
        "positive_scores": {c: _distribution(positives[c]) for c in dict.fromkeys(score_columns)},
        "options": [vars(o) for o in options],
    }
    out = Path(output) if output else wd.calibration
    out.mkdir(parents=True, exist_ok=True)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    target = out / "calibration.json"
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str))
    return CalibrationResult(summary, options, target)


def describe(result: CalibrationResult) -> list[str]:
    """The lines `hnmine calibrate` prints."""
    s = result.summary
    lines = [f"calibrate: {s['queries']} queries, {s['candidates']} candidates, {s['num_negatives']} negatives per query; "
             f"other rules as in {s['filter_params_from']}; target: {100 * s['target_full']:.0f} % of queries full"]
    for column, d in s["positive_scores"].items():
        if d:
            lines.append(f"  positives' {column}: median {d['p50']:.4g}, 10-90 % {d['p10']:.4g} .. {d['p90']:.4g} "
                         f"({d['count']} scored)")
    for o in result.options:
        flag = "--" + o.option.replace("_", "-")
        if not o.curve:
            lines.append(f"  {flag}: not calibrated ({o.note})")
            continue
        lines.append(f"  {flag} ({'larger' if o.stricter == 'larger' else 'smaller'} is stricter):")
        lines.append(f"    {'queries full':>14} {'value':>12} {'candidates pass':>16}")
        for row in o.table:
            share = "current" if row["share"] == "current" else f"≥ {100 * row['share']:.0f} %"
            lines.append(f"    {share:>8} {100 * row['queries_full']:>5.1f} % {row['value']:>12.6g} "
                         f"{100 * row['candidates_pass']:>15.1f} %")
        if o.suggested is not None and o.applied["target_met"]:
            lines.append(f"    suggested {flag} {o.suggested:g}: the filter with it leaves "
                         f"{100 * o.applied['queries_full']:.1f} % of queries full")
        if o.note:
            lines.append(f"    {o.note}")
    lines.append(f"  calibration: {result.output}")
    return lines
