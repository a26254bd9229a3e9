import math

import pytest

from hnmine.metrics import ndcg_at_k, recall_at_k


def test_perfect_run_scores_one():
    qrels = {"q1": {"a": 2.0, "b": 1.0}, "q2": {"c": 1.0}}
    run = {"q1": ["a", "b", "x"], "q2": ["c"]}
    assert ndcg_at_k(run, qrels) == pytest.approx(1.0)
    assert recall_at_k(run, qrels) == pytest.approx(1.0)


def test_graded_two_doc_case():
    # qrels: a=1, b=2; run: a, x, b.
    # DCG  = 1/log2(2) + 2/log2(4)            = 1 + 1           = 2
    # IDCG = 2/log2(2) + 1/log2(3)            = 2 + 0.6309297536 = 2.6309297536
    # nDCG = 2 / 2.6309297536                 = 0.7601875334
    qrels = {"q": {"a": 1.0, "b": 2.0}}
    run = {"q": ["a", "x", "b"]}
    assert ndcg_at_k(run, qrels) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(run, qrels) == pytest.approx(0.7601875334)
    assert recall_at_k(run, qrels) == pytest.approx(1.0)


def test_binary_second_rank():
    # One relevant doc at rank 2: DCG = 1/log2(3) = 0.6309297536, IDCG = 1.
    assert ndcg_at_k({"q": ["x", "a"]}, {"q": {"a": 1.0}}) == pytest.approx(1 / math.log2(3))


def test_no_relevant_doc_retrieved_scores_zero():
    qrels = {"q": {"a": 1.0, "b": 1.0}}
    run = {"q": ["x", "y", "z"]}
    assert ndcg_at_k(run, qrels) == 0.0
    assert recall_at_k(run, qrels) == 0.0


def test_cutoff_applies():
    qrels = {"q": {"a": 1.0}}
    run = {"q": ["x", "a"]}
    assert ndcg_at_k(run, qrels, k=1) == 0.0
    assert recall_at_k(run, qrels, k=1) == 0.0
    assert recall_at_k(run, qrels, k=2) == 1.0


def test_recall_counts_only_positive_relevance():
    # relevant = {a, b} (c has relevance 0): one of two found -> 0.5
    qrels = {"q": {"a": 1.0, "b": 1.0, "c": 0.0}}
    run = {"q": ["a", "c"]}
    assert recall_at_k(run, qrels) == pytest.approx(0.5)


def test_mean_over_queries_with_qrels():
    # q1 perfect (1.0); q2 missing from the run (0.0); q3 in the run but not judged (ignored).
    qrels = {"q1": {"a": 1.0}, "q2": {"b": 1.0}}
    run = {"q1": ["a"], "q3": ["b"]}
    assert ndcg_at_k(run, qrels) == pytest.approx(0.5)
    assert recall_at_k(run, qrels) == pytest.approx(0.5)
