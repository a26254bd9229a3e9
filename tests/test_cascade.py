"""`score --cascade judge`: the cross-encoder on every candidate, the http judge (a real llama.cpp
server) only on the band where the cross-encoder is unsure, and every positive."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
from llama_server import MODEL_ALIAS, LlamaServer
from openai_proxy import Proxy
from pydantic import ValidationError

from hnmine.config import FilterParams, ScoreParams
from hnmine.io.files import read_table
from hnmine.stages.filter import filter_stage
from hnmine.stages.score import score


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    llama = LlamaServer(tmp_path_factory.mktemp("llama-cascade")).start()
    yield llama
    llama.kill()


def cascade(base_url: str, **band) -> ScoreParams:
    return ScoreParams(scorer="cross-encoder", backend="onnx", top=5, cascade="judge", judge_backend="http",
                       base_url=base_url, judge_model=MODEL_ALIAS, chunk_size=16, concurrency=4, **band)


def test_the_judge_scores_only_the_band_and_the_positives(server, mined_once, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(mined_once, workdir)
    with Proxy(f"http://127.0.0.1:{server.port}") as proxy:
        result = score(workdir, cascade(proxy.url + "/v1", cascade_top=1), progress=False)
    scored = pl.from_arrow(read_table(workdir / "scored.arrow"))
    candidates = scored.filter(~pl.col("is_positive"))
    positives = scored.filter(pl.col("is_positive"))
    # the band: each query's best candidate by the cross-encoder's logit
    best = candidates.sort("ce_logit", descending=True).group_by("query_id").head(1)
    judged = scored.filter(pl.col("decided_by") == "judge")
    band = set(zip(best["query_id"], best["doc_id"])) | set(zip(positives["query_id"], positives["doc_id"]))
    # a pair SmolLM2 answers with neither yes nor no stays the cross-encoder's
    unanswered = result.stats["judge_unanswered"]
    assert set(zip(judged["query_id"], judged["doc_id"])) <= band and len(band) - judged.height == unanswered
    assert len(proxy.answered) == len(band) == result.stats["judge_pairs"]  # the band's pairs, each asked
    assert result.stats["judge_candidates"] == best.height
    assert result.stats["judge_share_of_candidates"] == pytest.approx(best.height / candidates.height, abs=1e-4)
    # the decided probability is the judge's where it judged, the cross-encoder's elsewhere
    rest = scored.filter(pl.col("decided_by") == "cross-encoder")
    assert rest.height == scored.height - judged.height and rest["judge_score"].null_count() == rest.height
    assert np.allclose(rest["decided_prob"].to_numpy(), rest["ce_prob"].to_numpy())
    assert np.allclose(judged["decided_prob"].to_numpy(), judged["judge_score"].to_numpy())
    assert judged["judge_score"].is_between(0, 1).all()

    # a wider band asks the judge only for the new pairs: the judge has its own cache
    with Proxy(f"http://127.0.0.1:{server.port}") as proxy:
        wider = score(workdir, cascade(proxy.url + "/v1", cascade_top=2), progress=False)
    assert wider.stats["judge_pairs"] == len(band) + best.height
    assert len(proxy.answered) == wider.stats["judge_pairs_scored_now"] == best.height
    # the probability rules read the decided probability
    filtered = filter_stage(workdir, FilterParams(num_negatives=2, max_probability=0.5), progress=False)
    assert filtered.stats["probability_column"] == "decided_prob"


def test_a_margin_band_takes_the_candidates_near_the_positive(mined_once, tmp_path):
    from hnmine.stages.score import cascade_band

    workdir = tmp_path / "work"
    shutil.copytree(mined_once, workdir)
    score(workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=5), progress=False)
    table = read_table(workdir / "scored.arrow")
    band = cascade_band(table, ScoreParams(scorer="cross-encoder", cascade="judge", cascade_margin=1.0))
    frame = pl.from_arrow(table).with_columns(pl.Series("band", band))
    lowest = frame.filter(pl.col("is_positive")).group_by("query_id").agg(pl.col("ce_logit").min().alias("low"))
    frame = frame.join(lowest, on="query_id", how="left")
    expected = pl.col("is_positive") | (pl.col("ce_logit") >= pl.col("low") - 1.0).fill_null(False)
    assert frame["band"].to_list() == frame.select(expected.fill_null(False)).to_series().to_list()
    assert 0 < frame.filter(~pl.col("is_positive"))["band"].sum() < frame.filter(~pl.col("is_positive")).height


def test_a_cascade_needs_the_cross_encoder_and_a_band():
    with pytest.raises(ValidationError, match="needs a band"):
        ScoreParams(scorer="cross-encoder", cascade="judge")
    with pytest.raises(ValidationError, match="follows the cross-encoder"):
        ScoreParams(scorer="judge", cascade="judge", cascade_top=3)
    with pytest.raises(ValidationError, match="needs a base URL"):  # said before the cross-encoder's pass, not after
        ScoreParams(scorer="cross-encoder", cascade="judge", cascade_top=3, judge_backend="http")
