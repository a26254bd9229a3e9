"""`hnmine audit`: measure false negatives against fuller labels than the run used.

A kept negative is a false negative when the audit qrels label it relevant to its query, by id or
by identical normalized text (a copy under another id). For each false negative the audit also
says, per filter rule, the loosest threshold that would have removed it, and for a few such
thresholds what they would have cost: how many clean negatives the same setting removes too.
This is docs/quality.md's measurement as a command users can run on their own held-out labels.

Writes WORKDIR/audit/ (or --output): negatives.parquet (every kept negative, its label and its
per-rule thresholds), queries.parquet (per-query counts) and audit.json (the summary).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.filtering import rules as R
from hnmine.filtering.similarity import FilterContext, max_cosine_to_positives
from hnmine.io.files import atomic_path, read_table
from hnmine.io.manifest import manifest_path, read_manifest
from hnmine.io.qrels import read_qrels
from hnmine.retrievers.embedding_store import load_embeddings
from hnmine.workdir import WorkDir, output_params


@dataclass
class AuditResult:
    summary: dict
    outputs: dict[str, Path] = field(default_factory=dict)


def _need(path: Path, command: str) -> Path:
    if not Path(path).exists():
        raise HnmineError("not found", path=path, fix=f"run `{command}` on this work dir first")
    return Path(path)


def _thresholds(kept: pl.DataFrame, scored: pl.DataFrame, filter_params: dict,
                context: FilterContext | None) -> tuple[pl.DataFrame, dict]:
    """Per kept negative, the loosest value of each rule's option that would have dropped it (the
    rules with a threshold whose inputs the run has)."""
    info: dict = {}
    probability = next((c for c in R.PROBABILITY_PREFERENCE if c in kept.columns
                        and kept[c].drop_nulls().drop_nans().len()), None)
    if probability:
        info["probability_column"] = probability
    try:
        score = R.pick_score_column(scored, filter_params.get("score") or "auto", R.SCORE_PREFERENCE)
    except HnmineError:
        score = None
    if score is not None and score in kept.columns:
        how = filter_params.get("reference_positive") or "min"
        kept = R.with_positive_reference(kept, scored, score, how)
        info |= {"score_column": score, "reference_positive": how}
    else:
        score = None
    if context is not None and context.embeddings is not None:
        kept = kept.with_columns(pl.Series(R.COSINE, max_cosine_to_positives(kept, scored, context)))
    columns = R.Columns(score, probability, cosine=R.COSINE in kept.columns)
    thresholds = [rule.to_remove(columns).alias(rule.threshold_column) for rule in R.threshold_rules()
                  if columns.has(rule.inputs)]
    return kept.with_columns(thresholds).drop(R.POSITIVE, R.COSINE, strict=False), info


def _sweep(labeled: pl.DataFrame) -> list[dict]:
    """For each rule, the thresholds that would remove 25/50/75/100 % of the false negatives and what they cost."""
    rows = []
    false = labeled.filter(pl.col("false_negative"))
    clean = labeled.filter(~pl.col("false_negative"))
    for rule in R.threshold_rules():
        column = rule.threshold_column
        if column not in labeled.columns or not false.height:
            continue
        # the loosest setting first
        values = false[column].drop_nulls().drop_nans().sort(descending=rule.stricter != "larger")
        if not values.len():
            continue
        for share in (0.25, 0.5, 0.75, 1.0):
            # the loosest setting that removes at least `share` of the false negatives
            k = max(1, int(np.ceil(share * false.height)))
            if k > values.len():
                break
            t = values[k - 1]
            removes = rule.removes(t).fill_null(False)
            rows.append({"rule": rule.name, "option": rule.flag, "threshold": rule.option_value(t),
                         "false_negatives_removed": false.filter(removes).height,
                         "clean_negatives_removed": clean.filter(removes).height})
    return rows


def audit(workdir: Path, qrels: Path, min_relevance: float = 1.0, output: Path | None = None) -> AuditResult:
    started = time.perf_counter()
    workdir = Path(workdir)
    wd = WorkDir(workdir)
    negatives_path = _need(wd.stage_input("negatives"), "hnmine filter")
    scored_path = _need(wd.stage_input("scored"), "hnmine score")
    corpus = read_table(_need(wd.corpus, "hnmine index"), [schema.DOC_ID, schema.TEXT_HASH])
    queries = read_table(_need(wd.queries, "hnmine mine"), [schema.QUERY_ID])
    doc_ids = corpus.column(schema.DOC_ID).to_pylist()
    table, qrels_stats = read_qrels(Path(qrels), set(queries.column(schema.QUERY_ID).to_pylist()), set(doc_ids),
                                    min_relevance=min_relevance, on_unknown="skip")
    labels = pl.from_arrow(table)
    context = FilterContext(doc_ids, corpus.column(schema.TEXT_HASH).to_numpy(),
                            load_embeddings(wd.dense) if wd.dense_embeddings.exists() else None)
    hash_of = dict(zip(doc_ids, context.text_hashes.tolist()))
    relevant = {(q, d) for q, d in zip(labels[schema.QUERY_ID], labels[schema.DOC_ID])}
    relevant_text = {(q, hash_of[d]) for q, d in relevant}

    kept = pl.from_arrow(read_table(negatives_path))
    scored = pl.from_arrow(read_table(scored_path))
    flags = [(q, d) in relevant or (q, hash_of[d]) in relevant_text for q, d in zip(kept[schema.QUERY_ID], kept[schema.DOC_ID])]
    kept = kept.with_columns(pl.Series("false_negative", flags, dtype=pl.Boolean))
    filter_params = output_params(negatives_path, "hnmine filter")
    labeled, info = _thresholds(kept, scored, filter_params, context)

    audited_queries = set(labels[schema.QUERY_ID].to_list())
    per_query = (labeled.group_by(schema.QUERY_ID, maintain_order=True)
                 .agg(pl.len().alias("negatives"), pl.col("false_negative").sum().alias("false_negatives"))
                 .with_columns((pl.col("false_negatives") / pl.col("negatives")).alias("false_negative_rate"),
                               pl.col(schema.QUERY_ID).is_in(list(audited_queries)).alias("has_audit_labels")))
    false = int(labeled["false_negative"].sum())
    summary = {
        "qrels": str(qrels), "min_relevance": min_relevance,
        # which negatives were audited: an export's dataset card quotes the audit only for its own
        "negatives_fingerprint": read_manifest(manifest_path(negatives_path))["fingerprint"],
        "kept_negatives": labeled.height, "false_negatives": false,
        "false_negative_rate": false / labeled.height if labeled.height else None,
        "queries": per_query.height,
        "queries_with_audit_labels": int(per_query["has_audit_labels"].sum()),
        "queries_with_a_false_negative": int((per_query["false_negatives"] > 0).sum()),
        "by_rule": _sweep(labeled), **info,
        "qrels_lines": qrels_stats["qrels_lines"],
        "qrels_skipped": {k: v for k, v in qrels_stats.items() if k.startswith("qrels_") and k != "qrels_lines" and v},
    }
    if "padded" in labeled.columns:
        summary["padded_negatives"] = int(labeled["padded"].sum())
        summary["padded_false_negatives"] = int(labeled.filter(pl.col("padded"))["false_negative"].sum())
    dropped_path = wd.stage_input("dropped")
    if dropped_path.exists():
        dropped = pl.from_arrow(read_table(dropped_path, [schema.QUERY_ID, schema.DOC_ID, schema.DROPPED_BY]))
        likely = dropped.filter(pl.col(schema.DROPPED_BY) == R.LIKELY_POSITIVE.name)
        if likely.height:
            hits = sum((q, d) in relevant or (q, hash_of[d]) in relevant_text
                       for q, d in zip(likely[schema.QUERY_ID], likely[schema.DOC_ID]))
            summary["likely_positives"] = likely.height
            summary["likely_positives_labeled_relevant"] = hits

    out = Path(output) if output else wd.audit
    out.mkdir(parents=True, exist_ok=True)
    keep = [c for c in (schema.QUERY_ID, schema.DOC_ID, schema.RANK, schema.NEGATIVE_RANK, "padded", "false_negative",
                        *(rule.threshold_column for rule in R.threshold_rules())) if c in labeled.columns]
    outputs = {"negatives": out / "negatives.parquet", "queries": out / "queries.parquet", "summary": out / "audit.json"}
    with atomic_path(outputs["negatives"]) as tmp:
        labeled.select(keep).write_parquet(tmp)
    with atomic_path(outputs["queries"]) as tmp:
        per_query.write_parquet(tmp)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    with atomic_path(outputs["summary"]) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    return AuditResult(summary, outputs)


def describe(result: AuditResult) -> list[str]:
    """The lines `hnmine audit` prints."""
    s = result.summary
    rate = "—" if s["false_negative_rate"] is None else f"{100 * s['false_negative_rate']:.1f} %"
    lines = [f"audit: {s['false_negatives']} of {s['kept_negatives']} kept negatives are labeled relevant "
             f"({rate}); {s['queries_with_a_false_negative']} of {s['queries']} queries have at least one "
             f"({s['queries_with_audit_labels']} have audit labels)"]
    if s.get("qrels_skipped"):
        lines.append("  qrels lines not used: " + ", ".join(f"{k.removeprefix('qrels_')}={v}" for k, v in s["qrels_skipped"].items()))
    if "likely_positives" in s:
        lines.append(f"  likely positives set aside: {s['likely_positives']}, of which labeled relevant: "
                     f"{s['likely_positives_labeled_relevant']}")
    if s["by_rule"]:
        lines.append("  what a stricter filter would have removed (false negatives / clean negatives):")
        for row in s["by_rule"]:
            lines.append(f"    {row['option']:<18} {row['threshold']:>12.4g}   "
                         f"{row['false_negatives_removed']:>6} / {row['clean_negatives_removed']:<6}")
    lines += [f"  {name}: {path}" for name, path in result.outputs.items()]
    return lines
