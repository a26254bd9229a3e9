"""`hnmine filter`: choose the negatives of each query from its scored candidates.

Writes negatives.arrow (the kept negatives, `negative_rank` 1..n per query) and dropped.arrow (every
other candidate with the rule that dropped it in `dropped_by`), so no candidate disappears
without a reason. The rules and the runner that charges each candidate to the first rule that
drops it are in `hnmine.filtering`; this module reads the inputs and writes the outputs.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from hnmine import schema
from hnmine.config import FilterParams
from hnmine.errors import HnmineError
from hnmine.filtering.rules import RULES
from hnmine.filtering.runner import filter_candidates
from hnmine.filtering.similarity import FilterContext
from hnmine.io.files import read_table, write_table
from hnmine.retrievers.embedding_store import load_embeddings
from hnmine.workdir import Done, Stage, StageResult, WorkDir, holding_lock, manifest_path, run_stage

# the options of the rules that compare embeddings (near_duplicate, duplicate_negatives)
_EMBEDDING_OPTIONS = tuple(option for rule in RULES if rule.needs_embeddings for option in rule.options)


def _no_dense_index(wd: WorkDir, params: FilterParams) -> str:
    """The embedding checks cannot run without a dense index: an error for a threshold the user
    set, a warning for the defaults."""
    for name in _EMBEDDING_OPTIONS:
        value = getattr(params, name)
        if value and value != FilterParams.model_fields[name].default:
            option = "--" + name.replace("_", "-")
            raise HnmineError(f"{option} {value} compares embeddings, and the work dir has no dense index",
                              path=wd.dense, fix=f"run `hnmine index --retrievers dense` first, or pass {option} 0")
    return ("near-duplicate checks skipped (--near-duplicate, --duplicate-negatives): no dense index in the work dir; "
            "build one with `hnmine index --retrievers dense`, or set both to 0 to silence this")


@holding_lock
def filter_stage(workdir: Path, params: FilterParams, progress: bool = True) -> StageResult:
    wd = WorkDir(workdir)
    source = wd.shard_input("scored", params.shard)
    out = wd.output("negatives", params.shard)
    dropped_out = wd.output("dropped", params.shard)
    needed = {"scored": source}
    uses_embeddings = any(rule.needs_embeddings and rule.active(params) for rule in RULES)
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
                  shard=params.shard, root=wd.root, sidecars=(dropped_out,))
    return run_stage(stage, transform)
