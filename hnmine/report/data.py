"""What `hnmine report` reads from a work dir, the numbers behind its charts, and the text of its values.

The work dir: scored.arrow, negatives.arrow, dropped.arrow, the query and document texts, and every
stage's manifest. The sections (`SECTIONS`) each renderer writes:

  scores  histograms of positives, kept negatives and dropped candidates, per score column
  ranks   the retrieval ranks of the kept negatives
  drops   how many candidates each filter rule dropped
  stages  every manifest: counts, timings and parameters
  calibration  what `hnmine calibrate` wrote: per threshold, the share of queries left full and of
          candidates passing as a function of its value, and the suggested value
  rounds  a re-mining round's negatives against its parent's, and the parent's against each round's
  sample  a seeded sample of queries with their positives, kept negatives and dropped candidates
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.io.manifest import HIDDEN_DIR, manifest_path, read_manifest
from hnmine.rounds import ROUNDS, compare_runs, describe, parent_of
from hnmine.workdir import WorkDir

# every score column a stage may write, in the order the report shows them
SCORE_COLUMNS = (schema.score_column("dense"), schema.score_column("bm25"), schema.FUSED_SCORE,
                 "ce_logit", "ce_prob", "judge_score", schema.DECIDED_PROB)
GROUPS = ("positives", "kept", "dropped")
SECTIONS = {
    "scores": "Score histograms",
    "ranks": "Ranks of kept negatives",
    "drops": "Drops per filter rule",
    "stages": "Stages",
    "calibration": "Calibration of the thresholds",
    "rounds": "Re-mining rounds",
    "sample": "Sample of queries",
}
STAGE_ORDER = ("corpus", "dense", "bm25", "mine", "score", "filter", "export")


@dataclass
class RunData:
    """What the report reads from a work dir, loaded once."""

    workdir: Path
    queries: pl.DataFrame  # query_id, text: the scored queries, in work-dir order
    positives: pl.DataFrame  # scored rows of the labeled positives
    kept: pl.DataFrame  # negatives.arrow
    dropped: pl.DataFrame  # dropped.arrow, with dropped_by
    score_columns: list[str]
    dropped_by: dict[str, int]  # from the filter manifest(s)
    candidates: int
    manifests: list[tuple[Path, dict]]
    calibration: dict | None = None  # WORKDIR/calibration/calibration.json, when `hnmine calibrate` wrote it
    calibration_current: bool = True  # whether it was computed on the scored file the work dir has now
    rounds: list[tuple[str, list[str]]] = field(default_factory=list)  # (which two runs, their comparison)


@dataclass
class QuerySample:
    query_id: str
    text: str
    positives: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# reading the work dir


def _require(workdir: Path, name: str, command: str) -> Path:
    """The whole-run file or shard folder of `name`, or a one-line error naming the command that writes it."""
    path = WorkDir(workdir).stage_input(name)
    if not path.exists():
        raise HnmineError("not found (the report reads it)", path=workdir / f"{name}.arrow",
                          fix=f"run `hnmine {command} --workdir {workdir}` first")
    return path


def score_columns(scored: pl.DataFrame) -> list[str]:
    """The score columns that hold values; fused_score only where it is not a copy of a retriever's score
    (it is, up to float rounding, unless mine ran hybrid)."""
    present = [c for c in SCORE_COLUMNS if c in scored.columns and scored[c].drop_nulls().drop_nans().len()]
    if schema.FUSED_SCORE in present:
        fused = pl.col(schema.FUSED_SCORE)
        for other in present:
            same = ((fused - pl.col(other)).abs() <= 1e-5 * (1 + pl.col(other).abs())).fill_null(False)
            if other != schema.FUSED_SCORE and scored.select((fused.is_null() | same).all()).item():
                present.remove(schema.FUSED_SCORE)
                break
    return present


def find_manifests(workdir: Path) -> list[tuple[Path, dict]]:
    """Every stage manifest in the work dir (shard and export folders included, the score cache not),
    in pipeline order."""
    paths: set[Path] = set()
    for pattern in ("*.manifest.json", "*/manifest.json", "*/*.manifest.json", "*/*/manifest.json", "index/dense/*/manifest.json",
                    f"{HIDDEN_DIR}/*.manifest.json", f"*/{HIDDEN_DIR}/*.manifest.json"):
        paths.update(p for p in workdir.glob(pattern) if p.relative_to(workdir).parts[0] != "cache")
    found = []
    for path in paths:
        try:
            manifest = read_manifest(path)
        except (OSError, HnmineError):
            continue
        if isinstance(manifest, dict) and "stage" in manifest:
            found.append((path, manifest))

    def order(item: tuple[Path, dict]) -> tuple[int, str]:
        stage = item[1]["stage"].partition(":")[0]  # dense:NAME, a named dense index, sits with dense
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), str(item[0]))

    return sorted(found, key=order)


def _drop_counts(negatives_source: Path, dropped: pl.DataFrame) -> dict[str, int]:
    """stats.dropped_by of the filter manifest, summed over shards; counted from dropped.arrow when
    no manifest is there."""
    if negatives_source.is_dir():
        manifests = sorted(negatives_source.glob("*.manifest.json"))
    else:
        manifests = [manifest_path(negatives_source)]
    counts: dict[str, int] = {}
    seen = False
    for path in manifests:
        if path.exists():
            seen = True
            for rule, n in read_manifest(path).get("stats", {}).get("dropped_by", {}).items():
                counts[rule] = counts.get(rule, 0) + int(n)
    if not seen:
        counts = {rule: int(n) for rule, n in dropped.group_by(schema.DROPPED_BY).len().iter_rows()}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def load_run(workdir: Path) -> RunData:
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise HnmineError("work dir not found", path=workdir, fix="pass the work directory the stages wrote to")
    negatives_source = _require(workdir, "negatives", "filter")
    dropped_source = _require(workdir, "dropped", "filter")
    scored_source = _require(workdir, "scored", "score")
    queries_source = _require(workdir, "queries", "mine")
    if not WorkDir(workdir).corpus.exists():
        raise HnmineError("not found (the report reads the document texts from it)", path=WorkDir(workdir).corpus,
                          fix=f"run `hnmine index --workdir {workdir}` first")
    scored = pl.from_arrow(read_table(scored_source))
    kept = pl.from_arrow(read_table(negatives_source))
    dropped = pl.from_arrow(read_table(dropped_source))
    order = scored.select(schema.QUERY_ID).unique(maintain_order=True)
    queries = order.join(pl.from_arrow(read_table(queries_source)).select(schema.QUERY_ID, schema.TEXT),
                         on=schema.QUERY_ID, how="left", maintain_order="left")
    calibration_file = WorkDir(workdir).calibration / "calibration.json"
    calibration = json.loads(calibration_file.read_text()) if calibration_file.exists() else None
    current = calibration is None or calibration.get("scored_fingerprint") == read_manifest(
        manifest_path(scored_source)).get("fingerprint")
    return RunData(
        workdir=workdir, queries=queries, positives=scored.filter(pl.col(schema.IS_POSITIVE)), kept=kept,
        dropped=dropped, score_columns=score_columns(scored), dropped_by=_drop_counts(negatives_source, dropped),
        candidates=scored.filter(~pl.col(schema.IS_POSITIVE)).height, manifests=find_manifests(workdir),
        calibration=calibration, calibration_current=current, rounds=round_comparisons(workdir))


def round_comparisons(workdir: Path) -> list[tuple[str, list[str]]]:
    """This round against its parent, or this work dir against each of its filtered rounds."""
    parent = parent_of(workdir)
    pairs = [(parent, workdir, "the parent", f"round {workdir.name}")] if parent else []
    folder = Path(workdir) / ROUNDS
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if WorkDir(child).stage_input("negatives").exists():
            pairs.append((Path(workdir), child, "this run", f"round {child.name}"))
    return [(f"{a_name} → {b_name}", describe(compare_runs(a, b), a_name, b_name)) for a, b, a_name, b_name in pairs]


# ---------------------------------------------------------------------------------------------
# numbers behind the charts


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.empty(0)
    return frame[column].cast(pl.Float64).drop_nulls().drop_nans().to_numpy()


def score_histogram(run: RunData, column: str, bins: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Shared bin edges for the three groups of one score column, each group's counts and its values."""
    values = {"positives": _values(run.positives, column), "kept": _values(run.kept, column),
              "dropped": _values(run.dropped, column)}
    everything = np.concatenate(list(values.values()))
    lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return edges, {g: np.histogram(v, edges)[0] for g, v in values.items()}, values


def rank_histogram(run: RunData, max_bars: int = 50) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(first rank, last rank) per bar and the kept negatives' count in each; one bar per rank when
    they fit, else ranks grouped in equal widths."""
    ranks = run.kept[schema.RANK].drop_nulls().to_numpy() if schema.RANK in run.kept.columns else np.empty(0)
    top = int(ranks.max()) if ranks.size else 1
    width = max(1, math.ceil(top / max_bars))
    spans = [(start, min(start + width - 1, top)) for start in range(1, top + 1, width)]
    counts = np.array([int(((ranks >= a) & (ranks <= b)).sum()) for a, b in spans])
    return spans, counts


def calibration_rows(option: dict) -> list[list[str]]:
    """One calibrated option's table as text cells: queries full, value, candidates passing."""
    rows = []
    for row in option["table"]:
        share = "current setting" if row["share"] == "current" else f"at least {100 * row['share']:.0f} % full"
        rows.append([share, f"{row['value']:.6g}", f"{100 * row['queries_full']:.1f} %",
                     f"{100 * row['candidates_pass']:.1f} %"])
    return rows


def calibration_notes(run: RunData) -> list[str]:
    """The lines above the calibration tables: whether it is current, the target, the positives' scores."""
    c = run.calibration
    if c is None:
        return [f"Not calibrated: `hnmine calibrate {run.workdir}` shows, per threshold, how many queries each value "
                "leaves full."]
    notes = [] if run.calibration_current else [
        "This calibration was computed on an earlier scored file: rerun `hnmine calibrate` for the current one."]
    notes.append(f"Target: {100 * c['target_full']:.0f} % of the {c['queries']} queries with {c['num_negatives']} "
                 f"negatives; the other rules as in {c['filter_params_from']}.")
    for column, d in c["positive_scores"].items():
        if d:
            notes.append(f"Positives' {column}: median {format_value(d['p50'])}, 10-90 % {format_value(d['p10'])} .. "
                         f"{format_value(d['p90'])}, min {format_value(d['p0'])}, max {format_value(d['p100'])} "
                         f"({d['count']} scored).")
    return notes


def calibration_verdict(option: dict) -> str:
    flag = "--" + option["option"].replace("_", "-")
    if not option["curve"]:
        return f"{flag}: not calibrated ({option['note']})."
    if option["suggested"] is None or not option["applied"]["target_met"]:
        return f"{flag}: {option['note']}."
    return (f"{flag} {option['suggested']:g} is the strictest value that keeps the target: the filter with it leaves "
            f"{100 * option['applied']['queries_full']:.1f} % of queries full ({option['stricter']} values are stricter).")


def sample_queries(run: RunData, n: int, seed: int) -> list[str]:
    """A seeded sample of query ids, listed in work-dir order; the same seed gives the same sample."""
    ids = run.queries[schema.QUERY_ID].to_list()
    chosen = set(random.Random(seed).sample(ids, min(max(n, 0), len(ids))))
    return [q for q in ids if q in chosen]


def _doc_texts(workdir: Path, doc_ids: Iterable[str]) -> dict[str, str]:
    """The texts of the sampled documents only: the corpus stays memory-mapped and only the matching
    rows are copied (converting the whole corpus would copy every text: 3.5 GB at 8.8M passages)."""
    table = read_table(WorkDir(workdir).corpus, [schema.DOC_ID, schema.TITLE, schema.TEXT])
    wanted = pa.array(sorted(set(doc_ids)), type=table.schema.field(schema.DOC_ID).type)
    corpus = pl.from_arrow(table.filter(pc.is_in(table[schema.DOC_ID], value_set=wanted)))
    joined = pl.concat_str([pl.col(schema.TITLE).fill_null(""), pl.col(schema.TEXT).fill_null("")], separator=" ")
    return dict(corpus.select(schema.DOC_ID, joined.str.strip_chars()).iter_rows())


def _rows(frame: pl.DataFrame, ids: list[str], sort: list[str], columns: list[str]) -> dict[str, list[dict]]:
    chosen = frame.filter(pl.col(schema.QUERY_ID).is_in(pl.Series(ids, dtype=pl.String).implode()))
    sort = [c for c in sort if c in chosen.columns]
    if sort:
        chosen = chosen.sort(sort, nulls_last=True, maintain_order=True)
    out: dict[str, list[dict]] = {}
    for row in chosen.select([c for c in columns if c in chosen.columns]).iter_rows(named=True):
        out.setdefault(row[schema.QUERY_ID], []).append(row)
    return out


def build_sample(run: RunData, ids: list[str]) -> list[QuerySample]:
    """Each sampled query with its positives, kept negatives and dropped candidates, texts attached."""
    base = [schema.QUERY_ID, schema.DOC_ID, schema.RANK, *run.score_columns]
    positives = _rows(run.positives, ids, [], base)
    kept = _rows(run.kept, ids, [schema.NEGATIVE_RANK], [*base, schema.NEGATIVE_RANK, schema.PADDED])
    dropped = _rows(run.dropped, ids, [schema.RANK], [*base, schema.DROPPED_BY])
    doc_ids = {r[schema.DOC_ID] for group in (positives, kept, dropped) for rows in group.values() for r in rows}
    texts = _doc_texts(run.workdir, doc_ids)
    query_text = dict(run.queries.iter_rows())
    samples = []
    for qid in ids:
        sample = QuerySample(qid, query_text.get(qid) or "", positives.get(qid, []), kept.get(qid, []), dropped.get(qid, []))
        for row in (*sample.positives, *sample.kept, *sample.dropped):
            row["text"] = texts.get(row[schema.DOC_ID], "")
        samples.append(sample)
    return samples


def format_value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def flat_pairs(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested manifest dicts as (dotted key, value) pairs, nulls left out."""
    pairs = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            pairs += flat_pairs(value, f"{prefix}{key}.")
        elif value is not None:
            pairs.append((f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else format_value(value)))
    return pairs


def output_rows(manifest: dict) -> str:
    parts = []
    for name, info in manifest.get("outputs", {}).items():
        rows = info.get("rows") if isinstance(info, dict) else None
        parts.append(f"{name} {rows}" if rows is not None else name)
    return ", ".join(parts)


def short_name(workdir: Path) -> str:
    """The work dir's last two path parts: `work` alone rarely says which run it is."""
    return "/".join(workdir.resolve().parts[-2:])


def summary_pairs(run: RunData) -> list[tuple[str, str]]:
    seconds = sum(float(m.get("seconds") or 0) for _, m in run.manifests)
    return [
        ("queries", str(run.queries.height)),
        ("positives", str(run.positives.height)),
        ("candidates", str(run.candidates)),
        ("kept negatives", str(run.kept.height)),
        ("dropped", str(run.dropped.height)),
        ("score columns", ", ".join(run.score_columns) or "none"),
        ("stage time", f"{seconds:.1f} s"),
    ]


def rule_tally(dropped: list[dict]) -> str:
    """`rank_window 31, not_sampled 14`: how many of these dropped rows each rule dropped, most first."""
    rules: dict[str, int] = {}
    for row in dropped:
        rules[row[schema.DROPPED_BY]] = rules.get(row[schema.DROPPED_BY], 0) + 1
    return ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])))


def kept_columns(sample: QuerySample) -> list[tuple[str, str]]:
    """Order and rank of the kept negatives; `padded` only where the query has a padded one."""
    columns = [(schema.NEGATIVE_RANK, "#"), (schema.RANK, "rank")]
    return columns + [(schema.PADDED, "padded")] if any(r.get(schema.PADDED) for r in sample.kept) else columns
