"""`hnmine score`: give candidates and positives the scores the filters compare.

`--scorer none` passes the retriever scores through. `cross-encoder` adds `ce_logit` and `ce_prob`
(sigmoid of the logit); `judge` adds `judge_score` (P(yes) of an LLM judge). Every positive is
scored, and every candidate ranked 1..top; rows outside the window get nulls. `--cascade judge`
runs the cross-encoder on all of them and the judge only on a band of its scores and the positives
(`cascade_band`), adding `judge_score`, `decided_by` and `decided_prob`. Scores go through a
cache under WORKDIR/cache/scores/, saved chunk by chunk, so an interrupted run resumes and a rerun
with the same scorer and prompt scores nothing again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from tqdm.auto import tqdm

from hnmine import schema
from hnmine.config import ScoreParams
from hnmine.errors import HnmineError
from hnmine.io.files import BatchWriter, read_table, shard_files, write_table
from hnmine.packaged.fingerprint import model_fingerprint
from hnmine.scorers.cache import ScoreCache, pair_keys
from hnmine.scorers.judge import PartialScores
from hnmine.stages.index import doc_texts
from hnmine.workdir import Done, Stage, StageResult, WorkDir, holding_lock, run_stage


def build_scorer(params: ScoreParams):
    """The scorer object for `params`: `.score(pairs)` gives [n, 1] (the column score_columns names first)."""
    if params.scorer == "cross-encoder":
        from hnmine.scorers.cross_encoder import CrossEncoderScorer

        return CrossEncoderScorer(params.model, backend=params.backend, max_length=params.max_length,
                                  batch_size=params.batch_size, device=params.device)
    from hnmine.scorers import judge

    prompt = {"system": params.system_prompt, "template": params.prompt_template, "instruction": params.instruction}
    if params.judge_backend == "http":
        if params.judge_mode != "yes-no":
            raise HnmineError("--judge-mode query-likelihood needs the local backend",
                              fix="use --judge-backend local, or --judge-mode yes-no with an http endpoint")
        if not params.base_url:
            raise HnmineError("the http judge needs a base URL", fix="pass --base-url http://HOST:PORT/v1")
        return judge.HttpJudge(params.base_url, params.judge_model, api_key_env=params.api_key_env,
                               concurrency=params.concurrency, timeout=params.timeout, max_retries=params.max_retries,
                               **prompt)
    return judge.LocalJudge(params.judge_model, batch_size=params.batch_size, max_length=params.max_length,
                            device=params.device, mode=params.judge_mode, **prompt)


def scorer_key(params: ScoreParams) -> dict:
    """What determines a score: the scorer's parameters and the content of its model (a model saved
    again under the same path is another scorer), the score cache's key."""
    model = {"cross-encoder": params.model, "judge": params.judge_model if params.judge_backend == "local" else None}
    return params.scorer_identity() | {"model_content": model_fingerprint(model.get(params.scorer))}


def score_columns(params: ScoreParams) -> list[str]:
    return {"cross-encoder": ["ce_logit", "ce_prob"], "judge": ["judge_score"]}.get(params.scorer, [])


def _copy(source: Path, out: Path) -> int:
    files = shard_files(source)
    with pa.memory_map(str(files[0])) as first:
        file_schema = ipc.open_file(first).schema
    with BatchWriter(out, file_schema) as writer:
        for file in files:
            with pa.memory_map(str(file)) as handle:
                reader = ipc.open_file(handle)
                for i in range(reader.num_record_batches):
                    writer.write(reader.get_batch(i))
    return writer.rows


@holding_lock
def score(workdir: Path, params: ScoreParams, progress: bool = True) -> StageResult:
    wd = WorkDir(workdir)
    source = wd.shard_input("candidates", params.shard)
    out = wd.output("scored", params.shard)
    names = {"candidates": source}
    if params.scorer != "none":
        names |= {"queries": wd.queries, "corpus": wd.corpus}

    def transform() -> Done:
        if params.scorer == "none":
            stats = {"scorer": "none", "rows": _copy(source, out)}
        else:
            stats = _score_rows(wd, source, out, params, progress)
        # one rate per teacher: the pairs it scored now over its model time (None: it scored nothing)
        for rate, done, seconds in (("pairs_per_second", "pairs_scored_now", "_model_seconds"),
                                    ("judge_pairs_per_second", "judge_pairs_scored_now", "_judge_model_seconds")):
            spent = stats.pop(seconds, None)
            if stats.get(done) is not None:
                stats[rate] = round(stats[done] / max(spent, 1e-9), 2) if stats[done] else None
        return Done(stats, {"scored": {"rows": stats["rows"]}})

    identity = params.identity() | ({"model_content": scorer_key(params)["model_content"]} if params.scorer != "none" else {})
    if params.cascade != "none":
        identity |= {"judge_model_content": scorer_key(params.judge())["model_content"]}
    return run_stage(Stage("score", out, identity, names, {"scored": out}, shard=params.shard, root=wd.root), transform)


def _score_rows(wd: WorkDir, source: Path, out: Path, params: ScoreParams, progress: bool) -> dict:
    table = read_table(source)
    queries = read_table(wd.queries)
    query_text = dict(zip(queries.column(schema.QUERY_ID).to_pylist(), queries.column(schema.TEXT).to_pylist(), strict=True))
    is_positive = table.column(schema.IS_POSITIVE).to_numpy(zero_copy_only=False)
    rank = table.column(schema.RANK).to_numpy(zero_copy_only=False)
    wanted = is_positive | (np.nan_to_num(rank.astype(float), nan=np.inf) <= (params.top or np.inf))
    rows = np.flatnonzero(wanted)
    qids = table.column(schema.QUERY_ID).to_pylist()
    dids = table.column(schema.DOC_ID).to_pylist()
    needed_docs = {dids[i] for i in rows}
    corpus = read_table(wd.corpus)
    corpus_ids = corpus.column(schema.DOC_ID).to_pylist()
    keep = [i for i, d in enumerate(corpus_ids) if d in needed_docs]
    doc_text = dict(zip((corpus_ids[i] for i in keep), doc_texts(corpus.take(keep)), strict=True))

    def texts(indices: np.ndarray) -> tuple[list[str], list[str]]:
        return [query_text[qids[i]] for i in indices], [doc_text[dids[i]] for i in indices]

    values, stats = _cached_scores(wd, params, *texts(rows), progress)
    columns = score_columns(params)
    full = np.full(table.num_rows, np.nan, dtype=np.float32)
    full[rows] = values
    mask = np.isnan(full)
    table = table.append_column(columns[0], pa.array(full, mask=mask))
    if params.scorer == "cross-encoder":
        prob = 1.0 / (1.0 + np.exp(-full.astype(np.float64)))
        table = table.append_column("ce_prob", pa.array(prob.astype(np.float32), mask=mask))
    if params.cascade == "judge":
        band = np.flatnonzero(cascade_band(table, params))
        judged, judge_stats = _cached_scores(wd, params.judge(), *texts(band), progress)
        judge = np.full(table.num_rows, np.nan, dtype=np.float32)
        judge[band] = judged
        by_judge = ~np.isnan(judge)
        decided = np.where(by_judge, judge, prob.astype(np.float32))
        table = table.append_column("judge_score", pa.array(judge, mask=~by_judge))
        table = table.append_column(schema.DECIDED_BY, pa.array(
            np.where(by_judge, "judge", np.where(mask, None, "cross-encoder")).tolist(), pa.string()))
        table = table.append_column(schema.DECIDED_PROB, pa.array(decided, mask=np.isnan(decided)))
        scored_candidates = int((~mask & ~is_positive).sum())
        judged_candidates = int((~is_positive[band]).sum())  # judge calls on candidates (answered or not)
        # a band pair the judge could not answer (neither yes nor no) stays the cross-encoder's
        stats |= {k: v for k, v in judge_stats.items() if k.startswith("judge_")}  # the http judge's own counts
        stats |= {"judge_pairs": len(band), "judge_candidates": judged_candidates,
                  "judge_unanswered": int(np.isnan(judged).sum()),
                  "judge_share_of_candidates": round(judged_candidates / max(scored_candidates, 1), 4),
                  "judge_pairs_scored_now": judge_stats["pairs_scored_now"],
                  "_judge_model_seconds": judge_stats["_model_seconds"]}
    write_table(table, out)
    return {"scorer": params.scorer, "rows": table.num_rows, **stats}


def cascade_band(table: pa.Table, params: ScoreParams) -> np.ndarray:
    """Rows the cascade's judge scores: every scored positive, and the candidates in the band of the
    cross-encoder's scores (its top --cascade-top per query, and those within --cascade-margin of the
    query's lowest positive)."""
    import polars as pl

    frame = pl.from_arrow(table.select([schema.QUERY_ID, schema.IS_POSITIVE, "ce_logit"])).with_columns(
        pl.col("ce_logit").fill_nan(None))
    candidate = ~pl.col(schema.IS_POSITIVE) & pl.col("ce_logit").is_not_null()
    band = pl.lit(False)
    if params.cascade_top is not None:
        order = pl.when(candidate).then(pl.col("ce_logit")).otherwise(None).rank("ordinal", descending=True)
        band = band | (candidate & (order.over(schema.QUERY_ID) <= params.cascade_top))
    if params.cascade_margin is not None:
        lowest = pl.col("ce_logit").filter(pl.col(schema.IS_POSITIVE)).min().over(schema.QUERY_ID)
        band = band | (candidate & (pl.col("ce_logit") >= lowest - params.cascade_margin))
    scored_positive = pl.col(schema.IS_POSITIVE) & pl.col("ce_logit").is_not_null()
    return frame.select((scored_positive | band).fill_null(False)).to_series().to_numpy()


def _cached_scores(wd: WorkDir, params: ScoreParams, pair_queries: list[str], pair_docs: list[str],
                   progress: bool) -> tuple[np.ndarray, dict]:
    """The first score column of params.scorer for each pair: read from the cache, the rest scored
    chunk by chunk and saved as each chunk finishes."""
    import time

    cache = ScoreCache(wd.score_cache, scorer_key(params), score_columns(params)[:1])
    keys = pair_keys(cache.digest, pair_queries, pair_docs)
    # Longest pairs first, so each model batch holds pairs of about one length (little padding)
    # and an out-of-memory error shows in the first chunk, not the last.
    missing = sorted(cache.missing(keys), key=lambda i: -(len(pair_queries[i]) + len(pair_docs[i])))
    model_seconds = 0.0
    scorer_stats: dict = {}
    if missing:
        scorer = build_scorer(params)
        with tqdm(total=len(missing), desc=f"score ({params.scorer})", unit="pair", disable=not progress) as bar:
            for start in range(0, len(missing), params.chunk_size):
                chunk = missing[start:start + params.chunk_size]
                began = time.perf_counter()
                try:
                    values = scorer.score([(pair_queries[i], pair_docs[i]) for i in chunk])[:, :1]
                except PartialScores as partial:
                    kept = np.flatnonzero(partial.done)
                    if len(kept):
                        cache.add([keys[chunk[j]] for j in kept], partial.values[kept, :1])
                    failed = f"{partial.failed} pair{'s' if partial.failed != 1 else ''} failed"
                    raise HnmineError(f"{partial.error.detail}; {failed}, {start + len(kept)} of the {len(missing)} "
                                      "pairs to score are done and cached",
                                      fix=f"{partial.error.fix or 'fix the cause'}, then rerun: cached pairs are not "
                                          "asked again") from None
                model_seconds += time.perf_counter() - began
                cache.add([keys[i] for i in chunk], values)
                bar.update(len(chunk))
        scorer_stats = {f"judge_{k}": v for k, v in getattr(scorer, "stats", {}).items()}
    values = cache.lookup(keys)[:, 0]
    return values, {"pairs": len(keys), "pairs_unique": len(set(keys)), "pairs_from_cache": len(set(keys)) - len(missing),
                    "pairs_scored_now": len(missing), "unscored_nan": int(np.isnan(values).sum()),
                    "_model_seconds": model_seconds, **scorer_stats}
