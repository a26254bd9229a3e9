"""The http judge against a real OpenAI-compatible server (llama.cpp serving SmolLM2) on loopback.

A counting proxy sits between hnmine and the server: it proves each pair is answered once across
a crash and a rerun, and it plays a flaky provider that answers 429 and 500 part of the time.
"""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import polars as pl
import pytest
from llama_server import MODEL_ALIAS, LlamaServer
from openai_proxy import Proxy

from hnmine.config import ScoreParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.stages.score import score

TOP = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    llama = LlamaServer(tmp_path_factory.mktemp("llama")).start()
    yield llama
    llama.kill()


@pytest.fixture
def mined(mined_once, tmp_path):
    target = tmp_path / "work"
    shutil.copytree(mined_once, target)
    return target


@pytest.fixture(scope="module")
def reference(mined_once, server, tmp_path_factory):
    """Scores from a clean run straight to the server (no proxy), to compare the other runs with."""
    workdir = tmp_path_factory.mktemp("reference") / "work"
    shutil.copytree(mined_once, workdir)
    score(workdir, params(server.base_url), progress=False)
    return _wanted(workdir)


def params(base_url: str, **overrides) -> ScoreParams:
    values = {"scorer": "judge", "judge_backend": "http", "base_url": base_url, "judge_model": MODEL_ALIAS,
              "top": TOP, "chunk_size": 16, "concurrency": 4, "max_retries": 4, **overrides}
    return ScoreParams(**values)


def _wanted(workdir) -> pl.DataFrame:
    table = pl.from_arrow(read_table(workdir / "scored.arrow"))
    return table.filter(pl.col("is_positive") | (pl.col("rank") <= TOP)).sort("query_id", "doc_id")


def upstream(server: LlamaServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_http_judge_scores_each_pair_once_and_reruns_for_free(server, mined, reference):
    with Proxy(upstream(server)) as proxy:
        result = score(mined, params(proxy.url + "/v1"), progress=False)
    table = _wanted(mined)
    answered = table["judge_score"].drop_nulls().to_numpy()
    # null only where neither "yes" nor "no" was among the top 20 tokens: counted, never silent
    assert table["judge_score"].null_count() == result.stats["unscored_nan"] <= 0.1 * table.height
    assert ((answered >= 0) & (answered <= 1)).all() and len(np.unique(answered)) > 10  # probabilities, not labels
    assert result.stats["pairs_scored_now"] == len(proxy.answered) == sum(proxy.answered.values())
    assert result.stats["judge_requests"] == result.stats["pairs_scored_now"]
    np.testing.assert_allclose(table["judge_score"].to_numpy(), reference["judge_score"].to_numpy(), atol=1e-5)

    # The same scorer again, with other execution settings: nothing is asked.
    with Proxy(upstream(server)) as proxy:
        again = score(mined, params(proxy.url + "/v1", concurrency=2, chunk_size=64), progress=False)
        (mined / "scored.arrow").unlink()
        (mined / "scored.manifest.json").unlink(missing_ok=True)
        rebuilt = score(mined, params(proxy.url + "/v1"), progress=False)
    assert again.reused and proxy.requests == 0
    assert rebuilt.stats["pairs_scored_now"] == 0 and rebuilt.stats["pairs_from_cache"] == result.stats["pairs_scored_now"]


def test_http_judge_resumes_after_the_server_is_killed_mid_run(server, mined, reference):
    total = reference.height
    with Proxy(upstream(server)) as proxy:
        def crash_after_12_answers():
            while sum(proxy.answered.values()) < 12:
                time.sleep(0.02)
            server.kill()

        killer = threading.Thread(target=crash_after_12_answers, daemon=True)
        killer.start()
        with pytest.raises(HnmineError, match="done and cached"):
            score(mined, params(proxy.url + "/v1", max_retries=2), progress=False)
        killer.join(timeout=5)
        answered_before = sum(proxy.answered.values())
        assert 12 <= answered_before < total
        assert not (mined / "scored.manifest.json").exists()  # no output that looks finished

        server.start()
        result = score(mined, params(proxy.url + "/v1"), progress=False)
    assert result.stats["pairs_from_cache"] == answered_before  # every answer before the crash was kept
    assert max(proxy.answered.values()) == 1  # no pair was scored twice
    assert sum(proxy.answered.values()) == len(proxy.answered) == total  # and none was lost
    np.testing.assert_allclose(_wanted(mined)["judge_score"].to_numpy(), reference["judge_score"].to_numpy(), atol=1e-5)


def test_http_judge_rides_out_a_flaky_server(server, mined, reference):
    with Proxy(upstream(server), failure_rate=0.3, seed=7) as proxy:
        result = score(mined, params(proxy.url + "/v1", max_retries=8), progress=False)
    assert proxy.failures_injected >= 5
    assert result.stats["judge_retries"] == proxy.failures_injected
    assert max(proxy.answered.values()) == 1
    np.testing.assert_allclose(_wanted(mined)["judge_score"].to_numpy(), reference["judge_score"].to_numpy(), atol=1e-5)


def test_a_malformed_200_is_one_error_and_the_answers_before_it_stay_cached(server, mined, reference):
    with Proxy(upstream(server), malformed_after=10) as proxy:
        with pytest.raises(HnmineError, match="no chat completion") as error:
            score(mined, params(proxy.url + "/v1", concurrency=1), progress=False)
        answered = sum(proxy.answered.values())
    assert "done and cached" in str(error.value) and "\n" not in str(error.value)
    assert answered == 10
    with Proxy(upstream(server)) as proxy:
        result = score(mined, params(proxy.url + "/v1"), progress=False)
    assert result.stats["pairs_from_cache"] == answered and max(proxy.answered.values()) == 1
    np.testing.assert_allclose(_wanted(mined)["judge_score"].to_numpy(), reference["judge_score"].to_numpy(), atol=1e-5)


@pytest.mark.parametrize("body", [b'{"object": "error", "message": "overloaded"}', b'{"choices": []}',
                                  b'{"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": 1}]}]}}]}'])
def test_a_200_without_a_chat_completion_in_it_is_an_error_naming_the_endpoint(body):
    from hnmine.prompts import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM, DEFAULT_TEMPLATE
    from hnmine.scorers.judge import HttpJudge

    judge = HttpJudge("http://127.0.0.1:9/v1", "m", system=DEFAULT_SYSTEM, template=DEFAULT_TEMPLATE,
                      instruction=DEFAULT_INSTRUCTION)
    with pytest.raises(HnmineError, match=r"http://127.0.0.1:9/v1/chat/completions answered 200 with no chat completion"):
        judge._answer(body)
