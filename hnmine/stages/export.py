"""`hnmine export`: turn kept negatives into a trainer's file.

sentence-transformers (Parquet, text columns in the order the losses read them, label last):
  triplet       anchor, positive, negative                 one row per (query, positive, negative)
  n-tuple       anchor, positive, negative_1..n            one row per (query, positive); queries with
                                                           fewer than n negatives are left out, counted
  labeled-pair  anchor, document, label (1/0)              one row per (query, document)
  labeled-list  anchor, documents, labels                  one row per (query, positive): [positive, negatives...]
Distillation labels (`--labels`): margin adds `label` = positive score - negative score (a list for
n-tuple), scores adds `scores` = [positive score, negative scores...]; labeled-* put the scores in
place of the 1/0 labels (`score` / `scores`, as `mine_hard_negatives(output_scores=True)` does).
For these, ids go to a row-aligned sidecar `<name>.ids.parquet`, so the trainer file has no column
a loss would mistake for text.
`--extra-positives` adds the candidates `filter --likely-positive` set aside (RocketQA's denoised
positives) as positives in every format; the ids files then carry `labeled` (`positive_labeled`
lists for one-row-per-query formats): true for a positive from the qrels, false for a likely one.

Other trainers:
  flagembedding JSONL {query, pos: [..], neg: [..], prompt?, pos_scores?, neg_scores?}, one line per query
  tevatron      JSONL {query_id, query, positive_passages: [{docid, title, text}], negative_passages: [..]};
                `--labels scores` adds each passage's `score` (Tevatron's distillation reads it)
  tevatron-ids  JSONL {query_id, query_text, positive_document_ids, negative_document_ids} and
                `<name>.corpus.jsonl` {docid, text (the title folded in)} of the documents it names:
                current Tevatron's TrainDataset with `--corpus_name json --corpus_path` that file
  ids           Parquet query_id, positive_ids, negative_ids (+ positive_scores, negative_scores)
  beir-subset   a BEIR folder of the queries, their positives and the pooled candidates (exports.beir_subset)
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hnmine import schema
from hnmine.config import ExportParams
from hnmine.errors import HnmineError
from hnmine.exports.batch_plan import plan_rows
from hnmine.exports.beir_subset import FILES as SUBSET_FILES
from hnmine.exports.beir_subset import write_subset
from hnmine.exports.card import CARD, provenance, write_card
from hnmine.exports.portable import features, portable_table
from hnmine.filtering.rules import LIKELY_POSITIVE, SCORE_PREFERENCE, pick_score_column
from hnmine.io.files import atomic_path, read_table
from hnmine.io.manifest import MANIFEST_SUFFIX
from hnmine.workdir import (
    JSONL_FORMATS,
    Done,
    Stage,
    StageResult,
    WorkDir,
    holding_lock,
    ids_path,
    output_params,
    run_stage,
)

LABELED = "labeled"  # a positive from the qrels (true) or a likely positive the filter found (false)
# the version of what export writes for the same options (file types, names, companions): a change
# of it reruns exports an earlier layout wrote
FILE_LAYOUT = 2
SIDECAR_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list", "flagembedding")


def default_output(workdir: Path, fmt: str = "n-tuple") -> Path:
    return WorkDir(workdir).export(fmt)


def _documents(wd: WorkDir, doc_ids: pl.Series) -> pl.DataFrame:
    corpus = pl.from_arrow(read_table(wd.corpus, [schema.DOC_ID, schema.TITLE, schema.TEXT]))
    corpus = corpus.filter(pl.col(schema.DOC_ID).is_in(doc_ids.unique().implode()))
    joined = pl.concat_str([pl.col(schema.TITLE), pl.col(schema.TEXT)], separator=" ").str.strip_chars()
    return corpus.select(schema.DOC_ID, schema.TITLE, schema.TEXT, joined.alias("doc_text"))


def gather(workdir: Path | WorkDir, negatives: pl.DataFrame, params: ExportParams) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """One row per (query, positive) with the query text, the positive and the query's negatives
    as lists (id, title, text, joined text, score), in negative_rank order; and the per-query table."""
    wd = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    queries = pl.from_arrow(read_table(wd.queries)).select(schema.QUERY_ID, pl.col(schema.TEXT).alias("query"))
    qrels = pl.from_arrow(read_table(wd.qrels)).select(schema.QUERY_ID, schema.DOC_ID)
    stats: dict = {}
    if params.extra_positives:
        likely = likely_positives(wd)
        stats["likely_positives"] = likely.height
        qrels = pl.concat([qrels.with_columns(pl.lit(True).alias(LABELED)), likely.with_columns(pl.lit(False).alias(LABELED))])
    else:
        qrels = qrels.with_columns(pl.lit(True).alias(LABELED))
    docs = _documents(wd, pl.concat([negatives[schema.DOC_ID], qrels[schema.DOC_ID]]))
    score = None
    negatives = negatives.sort(schema.NEGATIVE_RANK, maintain_order=True)
    if params.labels != "none":
        scored = pl.from_arrow(read_table(wd.stage_input("scored")))
        score = pick_score_column(scored, params.score, SCORE_PREFERENCE, purpose="for the labels")
        stats["label_score"] = score
        # a likely positive's score is on its candidate row, a labeled one's on its positive row
        positive_scores = scored.select(schema.QUERY_ID, schema.DOC_ID, pl.col(score).cast(pl.Float64).alias("score")
                                        ).unique([schema.QUERY_ID, schema.DOC_ID], keep="first")
        qrels = qrels.join(positive_scores, on=[schema.QUERY_ID, schema.DOC_ID], how="left", maintain_order="left")
        negatives = negatives.with_columns(
            (pl.col(score) if score in negatives.columns else pl.lit(None)).cast(pl.Float64).alias("score"))
        missing = qrels["score"].null_count() + negatives["score"].null_count()
        if missing:
            stats["labels_missing_scores"] = missing
    else:
        qrels = qrels.with_columns(pl.lit(None, dtype=pl.Float64).alias("score"))
        negatives = negatives.with_columns(pl.lit(None, dtype=pl.Float64).alias("score"))

    negatives = negatives.join(docs, on=schema.DOC_ID, how="left", maintain_order="left")
    per_query_negatives = negatives.group_by(schema.QUERY_ID, maintain_order=True).agg(
        pl.col(schema.DOC_ID).alias("negative_ids"), pl.col(schema.TITLE).alias("negative_titles"),
        pl.col(schema.TEXT).alias("negative_bodies"), pl.col("doc_text").alias("negatives"),
        pl.col("score").alias("negative_scores"))
    positives = qrels.join(docs, on=schema.DOC_ID, how="left", maintain_order="left").select(
        schema.QUERY_ID, pl.col(schema.DOC_ID).alias("positive_id"), pl.col(schema.TITLE).alias("positive_title"),
        pl.col(schema.TEXT).alias("positive_body"), pl.col("doc_text").alias("positive"),
        pl.col("score").alias("positive_score"), LABELED)
    # queries in the order filter kept them; only queries that have negatives
    rows = (per_query_negatives.join(queries, on=schema.QUERY_ID, how="left", maintain_order="left")
            .join(positives, on=schema.QUERY_ID, how="inner", maintain_order="left"))
    per_query = rows.group_by(schema.QUERY_ID, maintain_order=True).agg(
        pl.col("query").first(), pl.col("positive_id").alias("positive_ids"), pl.col("positive_title").alias("positive_titles"),
        pl.col("positive_body").alias("positive_bodies"), pl.col("positive").alias("positives"),
        pl.col("positive_score").alias("positive_scores"), pl.col(LABELED).alias("positive_labeled"),
        *[pl.col(c).first() for c in per_query_negatives.columns[1:]])
    stats["queries_with_negatives"] = per_query.height
    return rows, per_query, stats


def likely_positives(workdir: Path | WorkDir) -> pl.DataFrame:
    """(query_id, doc_id) of the candidates `filter --likely-positive` set aside as likely positives."""
    wd = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    source = wd.stage_input("negatives")
    if output_params(source, "hnmine filter").get("likely_positive") is None:
        raise HnmineError("--extra-positives needs likely positives, and the last filter ran without --likely-positive",
                          path=source, fix="rerun `hnmine filter --likely-positive 0.9` (with your other options), "
                                           "or drop --extra-positives")
    dropped = pl.from_arrow(read_table(wd.stage_input("dropped")))
    return dropped.filter(pl.col(schema.DROPPED_BY) == LIKELY_POSITIVE.name).select(schema.QUERY_ID, schema.DOC_ID)


def _labels(params: ExportParams, n: int | None = None) -> list[pl.Expr]:
    """Distillation label columns for triplet (`n` None: one negative per row) and n-tuple (n negatives)."""
    if params.labels == "none":
        return []
    if n is None:
        if params.labels == "margin":
            return [(pl.col("positive_score") - pl.col("negative_score")).alias("label")]
        return [pl.concat_list([pl.col("positive_score"), pl.col("negative_score")]).alias("scores")]
    negatives = [pl.col("negative_scores").list.get(i) for i in range(n)]
    if params.labels == "margin":
        return [pl.concat_list([pl.col("positive_score") - score for score in negatives]).alias("label")]
    return [pl.concat_list([pl.col("positive_score"), *negatives]).alias("scores")]


def build(rows: pl.DataFrame, per_query: pl.DataFrame, params: ExportParams, num_negatives: int) -> tuple[pl.DataFrame, pl.DataFrame | None, dict]:
    fmt, stats = params.format, {}
    # with extra positives, the ids say which positives came from the labels and which from the scorer
    extra = [LABELED] if params.extra_positives else []
    extra_lists = ["positive_labeled"] if params.extra_positives else []
    if fmt == "triplet":
        long = rows.explode(["negative_ids", "negatives", "negative_scores"]).rename(
            {"negative_ids": "negative_id", "negatives": "negative", "negative_scores": "negative_score"})
        return (long.select("query", "positive", "negative", *_labels(params)).rename({"query": "anchor"}),
                long.select(schema.QUERY_ID, "positive_id", "negative_id", *extra), stats)
    if fmt == "n-tuple":
        complete = rows.filter(pl.col("negative_ids").list.len() >= num_negatives)
        stats["queries_left_out_fewer_negatives"] = rows[schema.QUERY_ID].n_unique() - complete[schema.QUERY_ID].n_unique()
        texts = [pl.col("negatives").list.get(i).alias(f"negative_{i + 1}") for i in range(num_negatives)]
        ids = [pl.col("negative_ids").list.get(i).alias(f"negative_{i + 1}_id") for i in range(num_negatives)]
        return (complete.select(pl.col("query").alias("anchor"), "positive", *texts, *_labels(params, num_negatives)),
                complete.select(schema.QUERY_ID, "positive_id", *ids, *extra), stats)
    if fmt == "labeled-pair":
        label = "score" if params.labels != "none" else "label"
        pos = per_query.explode(["positive_ids", "positives", "positive_scores"]).select(
            schema.QUERY_ID, "query", pl.col("positive_ids").alias(schema.DOC_ID), pl.col("positives").alias("document"),
            (pl.col("positive_scores") if label == "score" else pl.lit(1)).cast(pl.Float64).alias(label), pl.lit(0).alias("_side"))
        neg = per_query.explode(["negative_ids", "negatives", "negative_scores"]).select(
            schema.QUERY_ID, "query", pl.col("negative_ids").alias(schema.DOC_ID), pl.col("negatives").alias("document"),
            (pl.col("negative_scores") if label == "score" else pl.lit(0)).cast(pl.Float64).alias(label), pl.lit(1).alias("_side"))
        order = per_query.select(schema.QUERY_ID).with_row_index("_q")
        both = pl.concat([pos, neg]).join(order, on=schema.QUERY_ID).sort("_q", "_side", maintain_order=True)
        if label == "label":
            both = both.with_columns(pl.col("label").cast(pl.Int64))
        return both.select(pl.col("query").alias("anchor"), "document", label), both.select(schema.QUERY_ID, schema.DOC_ID), stats
    if fmt == "labeled-list":
        documents = pl.concat_list([pl.col("positive"), pl.col("negatives")]).alias("documents")
        if params.labels != "none":
            labels = pl.concat_list([pl.col("positive_score"), pl.col("negative_scores")]).alias("scores")
        else:
            labels = pl.concat_list([pl.lit(1), pl.col("negative_ids").list.eval(pl.lit(0))]).alias("labels")
        doc_ids = pl.concat_list([pl.col("positive_id"), pl.col("negative_ids")]).alias("doc_ids")
        return (rows.select(pl.col("query").alias("anchor"), documents, labels),
                rows.select(schema.QUERY_ID, doc_ids, *extra), stats)
    if fmt == "flagembedding":
        columns = [pl.col("query"), pl.col("positives").alias("pos"), pl.col("negatives").alias("neg")]
        if params.labels != "none":
            columns += [pl.col("positive_scores").alias("pos_scores"), pl.col("negative_scores").alias("neg_scores")]
        if params.prompt:
            columns.append(pl.lit(params.prompt).alias("prompt"))
        return (per_query.select(columns),
                per_query.select(schema.QUERY_ID, pl.col("positive_ids"), pl.col("negative_ids"), *extra_lists), stats)
    if fmt == "tevatron-ids":
        train = per_query.select(schema.QUERY_ID, pl.col("query").alias("query_text"),
                                 pl.col("positive_ids").alias("positive_document_ids"),
                                 pl.col("negative_ids").alias("negative_document_ids"))
        return train, None, stats
    if fmt == "tevatron":
        scored = params.labels != "none"  # Tevatron's distillation reads each passage's `score`

        def passages(prefix: str, ids: str) -> pl.Expr:
            fields = {"docid": pl.col(ids), "title": pl.col(f"{prefix}_titles"), "text": pl.col(f"{prefix}_bodies")}
            return pl.struct(**fields, **({"score": pl.col(f"{prefix}_scores")} if scored else {}))

        exploded_pos = per_query.select(schema.QUERY_ID, "positive_ids", "positive_titles", "positive_bodies",
                                        "positive_scores").explode(
            ["positive_ids", "positive_titles", "positive_bodies", "positive_scores"])
        exploded_neg = per_query.select(schema.QUERY_ID, "negative_ids", "negative_titles", "negative_bodies",
                                        "negative_scores").explode(
            ["negative_ids", "negative_titles", "negative_bodies", "negative_scores"])
        pos = exploded_pos.group_by(schema.QUERY_ID, maintain_order=True).agg(
            passages("positive", "positive_ids").alias("positive_passages"))
        neg = exploded_neg.group_by(schema.QUERY_ID, maintain_order=True).agg(
            passages("negative", "negative_ids").alias("negative_passages"))
        table = (per_query.select(schema.QUERY_ID, "query").join(pos, on=schema.QUERY_ID, maintain_order="left")
                 .join(neg, on=schema.QUERY_ID, maintain_order="left"))
        return table, None, stats
    # ids
    columns = [schema.QUERY_ID, "positive_ids", "negative_ids", *extra_lists]
    if params.labels != "none":
        columns += ["positive_scores", "negative_scores"]
    return per_query.select(columns), None, stats


def tevatron_corpus(workdir: Path | WorkDir, train: pl.DataFrame) -> pl.DataFrame:
    """The documents a tevatron-ids file names, as current Tevatron's TrainDataset reads its corpus:
    `docid` and `text`, the title folded into the text."""
    wd = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    named = pl.concat([train["positive_document_ids"].explode(), train["negative_document_ids"].explode()]).drop_nulls()
    docs = _documents(wd, named)
    order = named.unique(maintain_order=True).to_frame(schema.DOC_ID)
    return order.join(docs, on=schema.DOC_ID, how="left", maintain_order="left").select(
        pl.col(schema.DOC_ID).alias("docid"), pl.col("doc_text").alias("text"))


def corpus_path(output: Path) -> Path:
    """A tevatron-ids file's corpus: `tevatron-ids.jsonl` -> `tevatron-ids.corpus.jsonl`."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".corpus.jsonl")


def _write(table: pl.DataFrame, output: Path, fmt: str) -> list[dict]:
    """Write `table` (JSONL for the JSONL formats, else Parquet in portable types); its card features."""
    output.parent.mkdir(parents=True, exist_ok=True)
    arrow = portable_table(table.to_arrow())
    with atomic_path(output) as tmp:
        if fmt in JSONL_FORMATS:
            with open(tmp, "w", encoding="utf-8") as handle:
                for row in table.iter_rows(named=True):
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            pq.write_table(arrow, tmp)
    return features(arrow.schema)


@holding_lock
def export(workdir: Path, params: ExportParams, progress: bool = True) -> StageResult:
    wd = WorkDir(workdir)
    source = wd.stage_input("negatives")
    output = Path(params.output) if params.output else wd.export(params.format)
    needed = {"negatives": source, "queries": wd.queries, "qrels": wd.qrels, "corpus": wd.corpus}
    if params.labels != "none":
        needed["scored"] = wd.stage_input("scored")
    if params.extra_positives:
        needed["dropped"] = wd.stage_input("dropped")
    if params.batch_plan != "none":  # what the plan reads: the embeddings, the filter's likely positives
        if (params.batch_near_duplicate > 0 or params.batch_plan == "clustered") and wd.dense_embeddings.exists():
            needed["dense"] = wd.dense
        if source.exists() and output_params(source, "hnmine filter").get("likely_positive") is not None:
            needed["dropped"] = wd.stage_input("dropped")
    if params.format == "beir-subset":
        return _export_subset(wd, output, params)
    sidecar = ids_path(output) if params.format in SIDECAR_FORMATS else None
    corpus_file = corpus_path(output) if params.format == "tevatron-ids" else None
    upstream = {"corpus": wd.corpus, "dense": wd.dense, "bm25": wd.bm25, "negatives": source}
    for name in ("candidates", "scored"):  # for the card only: a stale whole-run file beside shards says nothing
        try:
            upstream[name] = wd.stage_input(name)
        except HnmineError:
            pass
    outputs = {"train": output} | ({"ids": sidecar} if sidecar else {}) | ({"corpus": corpus_file} if corpus_file else {})

    def transform() -> Done:
        negatives = pl.from_arrow(read_table(source))
        num_negatives = output_params(source, "hnmine filter")["num_negatives"]
        rows, per_query, stats = gather(wd, negatives, params)
        train, ids, build_stats = build(rows, per_query, params, num_negatives)
        stats |= build_stats
        if params.batch_plan != "none":  # rows in plan order; the ids say each row's batch
            with_likely = output_params(source, "hnmine filter").get("likely_positive") is not None
            batch, stats["batch_plan"] = plan_rows(wd, ids, params, likely_positives(wd) if with_likely else None)
            order = pl.Series("_batch", batch)
            train = train.with_columns(order).with_row_index("_row").sort("_batch", "_row").drop("_batch", "_row")
            ids = (ids.with_columns(order.alias("batch")).with_row_index("_row").sort("batch", "_row").drop("_row"))
        if params.extra_positives:  # those of the queries written: a query left out takes its own along
            written = ids if ids is not None and schema.QUERY_ID in ids.columns else per_query
            stats["extra_positives"] = rows.filter(
                ~pl.col(LABELED) & pl.col(schema.QUERY_ID).is_in(written[schema.QUERY_ID].unique().implode())).height
        # one unit: the old training file goes first and the new one comes last, so a training file
        # is only ever beside its own ids (a kill in between leaves no training file, never a mismatch)
        output.unlink(missing_ok=True)
        for companion in (sidecar, corpus_file):
            if companion is not None:
                companion.unlink(missing_ok=True)
        described = {}
        if ids is not None and sidecar is not None:
            described["ids"] = {"rows": ids.height, "path": str(sidecar), "features": _write(ids, sidecar, "ids")}
        if corpus_file is not None:
            documents = tevatron_corpus(wd, train)
            described["corpus"] = {"rows": documents.height, "path": str(corpus_file),
                                   "features": _write(documents, corpus_file, params.format)}
        described["train"] = {"rows": train.height, "path": str(output), "features": _write(train, output, params.format)}
        described["provenance"] = provenance(upstream, wd.audit / "audit.json")
        stats["rows"] = train.height
        stats["queries"] = train.select(pl.col(schema.QUERY_ID)).n_unique() if schema.QUERY_ID in train.columns else \
            (ids[schema.QUERY_ID].n_unique() if ids is not None else per_query.height)
        warnings = []
        if stats.get("queries_left_out_fewer_negatives"):
            warnings.append(f"{stats['queries_left_out_fewer_negatives']} queries left out of the n-tuple file: "
                            f"fewer than {num_negatives} negatives")
        if params.batch_size and stats.get("batch_plan", {}).get("rows_in_short_batches", 0) > params.batch_size:
            warnings.append(f"{stats['batch_plan']['rows_in_short_batches']} rows are in batches short of "
                            f"{params.batch_size}: their queries share positives with too many others to fill one")
        if stats.get("labels_missing_scores"):
            warnings.append(f"{stats['labels_missing_scores']} positives or negatives have no {stats['label_score']} "
                            "score: their labels are empty (score them with a wider --top, or pick another --score)")
        return Done(stats, described, warnings)

    companions = tuple(p for p in (sidecar, corpus_file) if p is not None)
    stage = Stage("export", output, params.identity() | {"output": str(output), "file_layout": FILE_LAYOUT}, needed,
                  outputs, needs=companions, root=wd.root)
    result = run_stage(stage, transform)
    # a manifest beside the file (where earlier versions wrote it) would be read as data by folder loaders
    legacy = output.with_name(output.name + MANIFEST_SUFFIX)
    if legacy.is_file():
        legacy.unlink()
    if write_card(output.parent, newest=output) is None:
        result.warnings.append(f"{output.parent / CARD} is not hnmine's: no dataset card written, so load the file by "
                               f"name (load_dataset(\"{'json' if params.format in JSONL_FORMATS else 'parquet'}\", "
                               f"data_files=\"{output}\"))")
    return result


def _export_subset(wd: WorkDir, folder: Path, params: ExportParams) -> StageResult:
    """The beir-subset format: a BEIR folder (hnmine.exports.beir_subset), its manifest inside."""
    candidates = wd.stage_input("candidates")
    needed = {"candidates": candidates, "queries": wd.queries, "qrels": wd.qrels, "corpus": wd.corpus}
    files = {name: folder / path for name, path in SUBSET_FILES.items()}

    def transform() -> Done:
        stats = write_subset(folder, wd.corpus, wd.queries, wd.qrels, candidates, params.subset_depth,
                             params.subset_min_documents, params.seed)
        return Done(stats, {"documents": {"rows": stats["documents"]}, "queries": {"rows": stats["queries"]}})

    stage = Stage("export", folder, params.identity() | {"output": str(folder), "file_layout": FILE_LAYOUT}, needed,
                  files, root=wd.root)
    return run_stage(stage, transform)
