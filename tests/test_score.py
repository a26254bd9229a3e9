"""Rescoring with the offline cross-encoder and the local LLM judge, through the score cache."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hnmine.config import DataParams, MineParams, ScoreParams
from hnmine.io.files import read_table
from hnmine.stages.mine import mine
from hnmine.stages.score import score


@pytest.fixture
def mined(adi_workdir, adi):
    mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10), progress=False)
    return adi_workdir


def _scored(workdir) -> pl.DataFrame:
    return pl.from_arrow(read_table(workdir / "scored.arrow"))


def test_cross_encoder_scores_positives_and_the_window_caches_and_ranks_positives_first(mined):
    first = score(mined, ScoreParams(scorer="cross-encoder", top=4, chunk_size=64), progress=False)
    table = _scored(mined)
    in_window = pl.col("is_positive") | (pl.col("rank") <= 4)
    assert table.filter(in_window)["ce_logit"].null_count() == 0
    assert table.filter(~in_window)["ce_logit"].null_count() == table.filter(~in_window).height > 0
    expected = 1 / (1 + np.exp(-table.filter(in_window)["ce_logit"].to_numpy().astype(np.float64)))
    np.testing.assert_allclose(table.filter(in_window)["ce_prob"].to_numpy(), expected, rtol=1e-5)
    assert first.stats["pairs_scored_now"] == first.stats["pairs_unique"] == 170 + 35 * 4
    assert len(list((mined / "cache" / "scores").glob("*/chunk-*.arrow"))) == -(-first.stats["pairs_scored_now"] // 64)

    # a wider window scores only the new pairs; the old ones come from the cache
    wider = score(mined, ScoreParams(scorer="cross-encoder", top=10, chunk_size=64), progress=False)
    assert wider.stats["pairs_from_cache"] == 170 + 35 * 4 and wider.stats["pairs_scored_now"] == 35 * 6
    again = _scored(mined)
    assert again.filter(in_window)["ce_logit"].equals(table.filter(in_window)["ce_logit"])

    # the same parameters again: the stage is reused as a whole
    assert score(mined, ScoreParams(scorer="cross-encoder", top=10, chunk_size=64), progress=False).reused

    # the scores rank: a positive above the median of the query's top 10 candidates
    per_query = again.group_by("query_id").agg(
        pl.col("ce_logit").filter(pl.col("is_positive")).max().alias("best_positive"),
        pl.col("ce_logit").filter(~pl.col("is_positive")).median().alias("median_candidate"),
    )
    share = (per_query["best_positive"] > per_query["median_candidate"]).mean()
    assert share >= 0.8, f"only {share:.0%} of queries have a positive above the median candidate"


def test_changed_scorer_rescores(mined):
    # short pairs (max_length 32): this is about cache keys, not scores
    score(mined, ScoreParams(scorer="cross-encoder", top=2, max_length=32), progress=False)
    onnx = score(mined, ScoreParams(scorer="cross-encoder", top=2, max_length=32, backend="onnx"), progress=False)
    assert onnx.stats["pairs_from_cache"] == 0 and onnx.stats["pairs_scored_now"] == 170 + 35 * 2
    assert len(list((mined / "cache" / "scores").iterdir())) == 2


def test_local_judge_gives_probabilities_that_do_not_depend_on_batching(adi_rows):
    """Left-padded batches must score a pair exactly as it scores alone (positions count real tokens).

    Not tested here: that SmolLM2-135M's P(yes) ranks positives above random documents. With the
    default prompt it wins 40-63% of positive-vs-random pairs on scifact, medline and adi (chance);
    the best of four other prompts, chosen on scifact train and medline, is at chance on adi and
    nfcorpus too. Query-likelihood mode, below, is the local judge that ranks with this model.
    """
    from hnmine.prompts import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM, DEFAULT_TEMPLATE
    from hnmine.scorers.judge import LocalJudge

    corpus, queries, _ = adi_rows
    pairs = [(queries[i]["text"], (corpus[j]["title"] + " " + corpus[j]["text"])[: 80 * (j + 1)])
             for i, j in ((0, 0), (1, 3), (2, 1), (3, 5), (4, 2), (5, 4))]
    judge = LocalJudge("SmolLM2-135M-Instruct", system=DEFAULT_SYSTEM, template=DEFAULT_TEMPLATE,
                       instruction=DEFAULT_INSTRUCTION, batch_size=3, max_length=512, device="cpu")
    batched = judge.score(pairs)[:, 0]
    judge.batch_size = 1
    alone = judge.score(pairs)[:, 0]
    assert np.all((batched > 0) & (batched < 1))
    np.testing.assert_allclose(batched, alone, atol=2e-3)


def test_local_judge_query_likelihood_ranks_positives_above_random_documents(adi_rows):
    """Every adi query, one labeled positive against one random non-positive document (seeded).

    Measured with this model (max_length 256): the positive wins 80% of pairs here (83% with
    another seed), 97.5% on scifact test, 87-90% on medline, 68-70% on nfcorpus (40 queries each,
    two seeds). The threshold leaves a margin of 0.1 under the adi figure.
    """
    import random

    from hnmine.prompts import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM, DEFAULT_TEMPLATE
    from hnmine.scorers.judge import LocalJudge
    from hnmine.text import document_text

    corpus, queries, qrels = adi_rows
    text = {d["_id"]: document_text(d.get("title"), d["text"]) for d in corpus}
    positives: dict[str, list[str]] = {}
    for q, d, s in qrels:
        if s >= 1:
            positives.setdefault(q, []).append(d)
    rng = random.Random(0)
    ids = sorted(text)
    pairs_pos, pairs_rand = [], []
    for query in queries:
        if query["_id"] not in positives:
            continue
        pos = rng.choice(sorted(positives[query["_id"]]))
        other = rng.choice([d for d in ids if d not in positives[query["_id"]]])
        pairs_pos.append((query["text"], text[pos]))
        pairs_rand.append((query["text"], text[other]))
    judge = LocalJudge("SmolLM2-135M-Instruct", system=DEFAULT_SYSTEM, template=DEFAULT_TEMPLATE,
                       instruction=DEFAULT_INSTRUCTION, batch_size=8, max_length=256, device="cpu",
                       mode="query-likelihood")
    scores = judge.score(pairs_pos + pairs_rand)[:, 0]
    n = len(pairs_pos)
    assert n == 35 and np.all((scores > 0) & (scores < 1))
    wins = float(np.mean((scores[:n] > scores[n:]) + 0.5 * (scores[:n] == scores[n:])))
    assert wins >= 0.7, f"the positive won only {wins:.0%} of pairs"
    # batching does not change a score (left padding, positions of real tokens only)
    judge.batch_size = 1
    np.testing.assert_allclose(judge.score(pairs_pos[:4])[:, 0], scores[:4], rtol=2e-3)


def test_a_second_cache_in_the_same_process_keeps_the_first_ones_chunks(tmp_path):
    """Two score runs in one process (a reused Ray worker, a notebook, hnmine as PID 1 in a
    container) each open their own cache object: the second's chunks must not replace the first's."""
    from hnmine.scorers.cache import ScoreCache, pair_keys

    identity = {"scorer": "cross-encoder", "model": "m"}
    first = ScoreCache(tmp_path, identity, ["ce_logit"])
    first_keys = pair_keys(first.digest, ["q1", "q2"], ["d1", "d2"])
    first.add(first_keys, np.array([1.0, 2.0]))
    second = ScoreCache(tmp_path, identity, ["ce_logit"])
    second_keys = pair_keys(second.digest, ["q3"], ["d3"])
    second.add(second_keys, np.array([3.0]))
    reopened = ScoreCache(tmp_path, identity, ["ce_logit"])
    assert reopened.missing(first_keys + second_keys) == []
    np.testing.assert_array_equal(reopened.lookup(first_keys + second_keys)[:, 0], [1.0, 2.0, 3.0])
