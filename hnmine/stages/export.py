"""`hnmine export`: turn kept negatives into a trainer's file.

sentence-transformers layouts (Parquet, text columns only, in the order the losses read them):
  triplet  anchor, positive, negative            one row per (query, positive, negative)
  n-tuple  anchor, positive, negative_1..n       one row per (query, positive); queries with fewer
                                                 than n negatives are left out and counted
Ids go to a row-aligned sidecar `<name>.ids.parquet` (query_id, positive_id, negative_id[_i]), so
the trainer file has no column a loss would mistake for text.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from hnmine import schema
from hnmine.config import ExportParams
from hnmine.io.files import atomic_path, read_table
from hnmine.io.manifest import is_current, manifest_path, read_manifest, write_manifest
from hnmine.stages.common import StageResult, Timer, fingerprints, stage_input
from hnmine.stages.index import corpus_path


def default_output(workdir: Path) -> Path:
    return Path(workdir) / "export" / "train.parquet"


def ids_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".parquet") + ".ids.parquet")


def _doc_texts(workdir: Path, doc_ids: pl.Series) -> pl.DataFrame:
    corpus = pl.from_arrow(read_table(corpus_path(workdir), [schema.DOC_ID, schema.TITLE, schema.TEXT]))
    corpus = corpus.filter(pl.col(schema.DOC_ID).is_in(doc_ids.unique().implode()))
    joined = pl.concat_str([pl.col(schema.TITLE), pl.col(schema.TEXT)], separator=" ").str.strip_chars()
    return corpus.select(schema.DOC_ID, joined.alias("doc_text"))


def build_rows(workdir: Path, negatives: pl.DataFrame, params: ExportParams, num_negatives: int) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    queries = pl.from_arrow(read_table(Path(workdir) / "queries.arrow")).rename({schema.TEXT: "anchor"})
    qrels = pl.from_arrow(read_table(Path(workdir) / "qrels.arrow")).select(schema.QUERY_ID, pl.col(schema.DOC_ID).alias("positive_id"))
    texts = _doc_texts(workdir, pl.concat([negatives[schema.DOC_ID], qrels["positive_id"]]))
    negatives = negatives.join(texts, on=schema.DOC_ID, how="left", maintain_order="left")
    query_order = negatives.select(schema.QUERY_ID).unique(maintain_order=True)
    pairs = (query_order.join(qrels, on=schema.QUERY_ID, how="inner", maintain_order="left")
             .join(queries, on=schema.QUERY_ID, how="left", maintain_order="left")
             .join(texts.rename({schema.DOC_ID: "positive_id", "doc_text": "positive"}), on="positive_id", how="left",
                   maintain_order="left"))
    stats = {"queries_with_negatives": query_order.height}
    if params.format == "triplet":
        rows = pairs.join(
            negatives.select(schema.QUERY_ID, pl.col(schema.DOC_ID).alias("negative_id"), pl.col("doc_text").alias("negative"),
                             schema.NEGATIVE_RANK),
            on=schema.QUERY_ID, how="inner", maintain_order="left",
        )
        train = rows.select("anchor", "positive", "negative")
        ids = rows.select(schema.QUERY_ID, "positive_id", "negative_id")
    else:
        counts = negatives.group_by(schema.QUERY_ID).len()
        complete = counts.filter(pl.col("len") >= num_negatives)[schema.QUERY_ID]
        stats["queries_left_out_fewer_negatives"] = counts.height - complete.len()
        wide = (negatives.filter(pl.col(schema.QUERY_ID).is_in(complete.implode()))
                .filter(pl.col(schema.NEGATIVE_RANK) <= num_negatives)
                .pivot(on=schema.NEGATIVE_RANK, index=schema.QUERY_ID, values=[schema.DOC_ID, "doc_text"],
                       sort_columns=True, maintain_order=True))
        neg_cols = [f"negative_{i}" for i in range(1, num_negatives + 1)]
        wide = wide.rename({f"doc_text_{i}": f"negative_{i}" for i in range(1, num_negatives + 1)}
                           | {f"{schema.DOC_ID}_{i}": f"negative_{i}_id" for i in range(1, num_negatives + 1)})
        rows = pairs.join(wide, on=schema.QUERY_ID, how="inner", maintain_order="left")
        train = rows.select("anchor", "positive", *neg_cols)
        ids = rows.select(schema.QUERY_ID, "positive_id", *[f"{c}_id" for c in neg_cols])
    stats["rows"] = train.height
    stats["queries"] = ids[schema.QUERY_ID].n_unique()
    return train, ids, stats


def export(workdir: Path, params: ExportParams, progress: bool = True) -> StageResult:
    workdir = Path(workdir)
    source = stage_input(workdir, "negatives")
    output = Path(params.output) if params.output else default_output(workdir)
    inputs_fp = fingerprints({"negatives": source, "queries": workdir / "queries.arrow", "qrels": workdir / "qrels.arrow",
                              "corpus": corpus_path(workdir)})
    identity = params.identity() | {"output": str(output)}
    if is_current(output, "export", identity, inputs_fp) and ids_path(output).exists():
        return StageResult("export", {"train": output, "ids": ids_path(output)},
                           read_manifest(manifest_path(output))["stats"], reused=True)
    manifest_path(output).unlink(missing_ok=True)
    with Timer() as timer:
        negatives = pl.from_arrow(read_table(source))
        filter_manifest = read_manifest(manifest_path(source)) if manifest_path(source).exists() else {}
        num_negatives = filter_manifest.get("params", {}).get("num_negatives") or int(negatives[schema.NEGATIVE_RANK].max() or 0)
        train, ids, stats = build_rows(workdir, negatives, params, num_negatives)
        with atomic_path(ids_path(output)) as tmp:
            pq.write_table(ids.to_arrow(), tmp)
        with atomic_path(output) as tmp:
            pq.write_table(train.to_arrow(), tmp)
    warnings = []
    if stats.get("queries_left_out_fewer_negatives"):
        warnings.append(f"{stats['queries_left_out_fewer_negatives']} queries left out of the n-tuple file: "
                        f"fewer than {num_negatives} negatives")
    write_manifest(output, stage="export", params=identity, inputs=inputs_fp,
                   outputs={"train": {"rows": train.height, "path": str(output)}}, stats=stats, seconds=timer.seconds)
    return StageResult("export", {"train": output, "ids": ids_path(output)}, stats, seconds=timer.seconds, warnings=warnings)
