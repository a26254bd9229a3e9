"""The batch tokenizer: nanotoken's arrays are `tokenizers`' arrays on every shared set's passages
and queries, and every other tokenizer (or a machine without nanotoken) takes the `tokenizers` path."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import MODEL, dataset, read_jsonl

from hnmine.errors import HnmineError
from hnmine.packaged.resolve import resolve_model
from hnmine.retrievers.tokenization import BatchTokenizer
from hnmine.text import document_text

SETS = ("scifact", "nfcorpus", "medline-glasgow", "cacm", "adi")


def _texts(name: str, n: int = 1500) -> list[str]:
    folder = dataset(name)
    docs = read_jsonl(folder / "corpus.jsonl.gz")
    passages = [document_text(d.get("title"), d.get("text")) for d in docs]
    longest = sorted(passages, key=len, reverse=True)[:100]  # the ones truncation cuts
    queries = [q["text"] for q in read_jsonl(folder / "queries.jsonl.gz")][:300]
    return passages[:n] + longest + queries


@pytest.mark.parametrize("name", SETS)
def test_nanotoken_arrays_are_the_tokenizers_arrays(name):
    path = resolve_model(MODEL)
    texts = _texts(name)
    for max_length in (128, 256, 512):
        fast, reference = BatchTokenizer(path, max_length, "nanotoken"), BatchTokenizer(path, max_length, "tokenizers")
        assert fast.engine == "nanotoken" and reference.engine == "tokenizers"
        for start in range(0, len(texts), 512):
            batch = texts[start:start + 512]
            got, want = fast.arrays(batch), reference.arrays(batch)
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                assert got[key].dtype == want[key].dtype == np.int64
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key} at {start}, {max_length}")
        # the counts a call is sorted by: each row's length in the arrays, across slices of the call
        fast.COUNT_ROWS = reference.COUNT_ROWS = 700
        counts = np.concatenate([reference.arrays(texts[s:s + 512])["attention_mask"].sum(axis=1)
                                 for s in range(0, len(texts), 512)])
        np.testing.assert_array_equal(fast.lengths(texts), counts, err_msg=f"{name} nanotoken counts, {max_length}")
        np.testing.assert_array_equal(reference.lengths(texts), counts, err_msg=f"{name} tokenizers counts, {max_length}")


def test_the_tokenizers_path_packs_what_encode_batch_gives(tmp_path, adi_rows):
    """A BPE tokenizer (nanotoken covers WordPiece only): auto takes `tokenizers`, and its arrays
    hold each row's encoding, padded with the pad id, the mask marking the real tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    docs, _, _ = adi_rows
    texts = [document_text(d.get("title"), d.get("text")) for d in docs]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>"]))
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text('{"pad_token": "<pad>"}')
    tokenizer = BatchTokenizer(tmp_path, 32)
    assert tokenizer.engine == "tokenizers"
    arrays = tokenizer.arrays(texts)
    reference = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    reference.enable_truncation(max_length=32)
    for row, encoding in enumerate(reference.encode_batch(texts)):
        n = len(encoding.ids)
        assert arrays["input_ids"][row, :n].tolist() == encoding.ids
        assert (arrays["input_ids"][row, n:] == reference.token_to_id("<pad>")).all()
        assert arrays["attention_mask"][row].sum() == n and arrays["attention_mask"][row, :n].all()
    with pytest.raises(HnmineError, match="nanotoken does not support this tokenizer"):
        BatchTokenizer(tmp_path, 32, "nanotoken")


def test_without_nanotoken_the_tokenizers_path_runs(monkeypatch):
    path = resolve_model(MODEL)
    monkeypatch.setitem(sys.modules, "nanotoken", None)  # an environment where it is not installed
    tokenizer = BatchTokenizer(path, 256)
    assert tokenizer.engine == "tokenizers"
    with pytest.raises(HnmineError, match="nanotoken is not installed"):
        BatchTokenizer(path, 256, "nanotoken")


def test_onnx_vectors_are_the_same_with_either_engine(adi_rows):
    from hnmine.retrievers.onnx_encoder import OnnxSentenceEncoder

    docs, _, _ = adi_rows
    texts = [document_text(d.get("title"), d.get("text")) for d in docs]
    encoder = OnnxSentenceEncoder(resolve_model(MODEL), max_length=None, batch_size=32, normalize=True)
    assert encoder.tokenizer.engine == "nanotoken"
    fast = encoder.encode(texts)
    assert encoder.tokenizer.parallel is False  # ONNX Runtime has the cores
    encoder.tokenizer = BatchTokenizer(resolve_model(MODEL), encoder.max_length, "tokenizers")
    np.testing.assert_array_equal(fast, encoder.encode(texts))
