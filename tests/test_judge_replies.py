"""What `hnmine score --judge-backend http` does with replies that are not a score: a redirect to
another address, and 200s whose body is no chat completion. The real CLI in a subprocess talks to
real loopback endpoints (tests/loopback_judge.py) in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import polars as pl
import pytest
from loopback_judge import JudgeEndpoint, expected_score

from hnmine.config import DataParams, IndexParams, MineParams
from hnmine.io.files import read_table
from hnmine.prompts import DEFAULT_INSTRUCTION, DEFAULT_TEMPLATE
from hnmine.scorers.judge import render
from hnmine.stages.index import doc_texts

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def mined_once(adi, tmp_path_factory):
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine

    workdir = tmp_path_factory.mktemp("judge-replies") / "work"
    index(workdir, DataParams(beir=adi), IndexParams(retrievers=["bm25"]), progress=False)
    mine(workdir, DataParams(beir=adi), MineParams(retriever="bm25", top_k=5), progress=False)
    return workdir


@pytest.fixture
def mined(mined_once, tmp_path):
    target = tmp_path / "work"
    shutil.copytree(mined_once, target)
    return target


def score(workdir, base_url: str, *extra: str) -> subprocess.CompletedProcess:
    """`hnmine score` with the http judge, the API key in the environment."""
    args = ["score", "--workdir", str(workdir), "-q", "--scorer", "judge", "--judge-backend", "http",
            "--base-url", base_url, "--judge-model", "m", "--api-key-env", "HNMINE_TEST_JUDGE_KEY",
            "--top", "2", "--chunk-size", "16", *extra]
    return subprocess.run([sys.executable, "-m", "hnmine.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HNMINE_TEST_JUDGE_KEY": KEY})


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_key_never_reaches_the_other_address(mined, code):
    with JudgeEndpoint() as elsewhere, \
            JudgeEndpoint(redirect_to=elsewhere.url + "/v1/chat/completions", code=code) as endpoint:
        result = score(mined, endpoint.url + "/v1", "--concurrency", "2")
    line = error_line(result)
    assert f"judge endpoint {endpoint.url}/v1/chat/completions answered HTTP {code}" in line
    assert f"redirect to {elsewhere.url}/v1/chat/completions" in line and KEY not in line
    assert endpoint.requests and all(h.get("authorization") == f"Bearer {KEY}" for _, _, h in endpoint.requests)
    assert not any("authorization" in headers for _, _, headers in elsewhere.requests)
    assert elsewhere.requests == []  # not contacted at all
    assert len(endpoint.requests) <= 2  # the first refusal stops the sending
    assert not (mined / "scored.arrow").exists()


def _pairs_scored(workdir) -> tuple[dict[str, float], dict]:
    """The judge score of every scored pair by its user message, and the score manifest's stats."""
    table = pl.from_arrow(read_table(workdir / "scored.arrow")).filter(pl.col("judge_score").is_not_null())
    queries = dict(pl.from_arrow(read_table(workdir / "queries.arrow")).select("query_id", "text").iter_rows())
    corpus = read_table(workdir / "corpus.arrow")
    documents = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus), strict=True))
    scores = {render(DEFAULT_TEMPLATE, queries[q], documents[d], DEFAULT_INSTRUCTION): s
              for q, d, s in table.select("query_id", "doc_id", "judge_score").iter_rows()}
    return scores, json.loads((workdir / "scored.manifest.json").read_text())["stats"]


@pytest.mark.parametrize("body", [b"<html><body>502 Bad Gateway</body></html>",
                                  b'{"object": "error", "message": "model overloaded"}'],
                         ids=["not-json", "no-choices"])
def test_malformed_200s_fail_their_pairs_stop_the_sending_and_the_answers_before_them_stay_cached(mined, body):
    concurrency = 4
    with JudgeEndpoint(malformed_after=40, malformed_body=body) as gateway:
        first = score(mined, gateway.url + "/v1", "--concurrency", str(concurrency))
    line = error_line(first)
    assert f"judge endpoint {gateway.url}/v1/chat/completions answered 200 with no chat completion" in line
    assert 1 <= gateway.malformed <= concurrency  # the requests in flight when the first failed, no more
    assert f"; {gateway.malformed} pair{'s' if gateway.malformed > 1 else ''} failed, 40 of the " in line
    assert len(gateway.requests) == 40 + gateway.malformed  # nothing was sent after the failure
    assert not (mined / "scored.arrow").exists()

    with JudgeEndpoint() as endpoint:
        second = score(mined, endpoint.url + "/v1")
    assert second.returncode == 0, second.stderr
    paid = set(gateway.answered)
    assert len(paid) == 40 and not paid & set(endpoint.answered)  # no answered pair was asked again
    scores, stats = _pairs_scored(mined)
    assert stats["pairs_from_cache"] == 40 and stats["pairs_scored_now"] == len(endpoint.answered)
    assert set(scores) == paid | set(endpoint.answered)
    assert all(abs(s - expected_score(m)) < 1e-5 for m, s in scores.items())
