"""BM25 with bm25s (sparse matrices: indexing and retrieval in numpy, not per-document Python)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError


class BM25Index:
    def __init__(self, retriever, tokenizer):
        self.retriever = retriever
        self.tokenizer = tokenizer

    @staticmethod
    def _tokenizer(stemmer: str, stopwords: str):
        from bm25s.tokenization import Tokenizer

        stem = None
        if stemmer and stemmer != "none":
            import Stemmer

            stem = Stemmer.Stemmer(stemmer).stemWord
        return Tokenizer(stemmer=stem, stopwords=None if stopwords == "none" else stopwords)

    @classmethod
    def build(cls, texts: list[str], *, method: str, k1: float, b: float, stemmer: str, stopwords: str) -> BM25Index:
        import bm25s

        tokenizer = cls._tokenizer(stemmer, stopwords)
        tokens = tokenizer.tokenize(texts, return_as="tuple", show_progress=False)
        retriever = bm25s.BM25(method=method, k1=k1, b=b)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, tokenizer)

    def save(self, out_dir: Path, config: dict) -> None:
        out_dir = Path(out_dir)
        self.retriever.save(str(out_dir), show_progress=False)
        self.tokenizer.save_vocab(str(out_dir))
        (out_dir / "tokenizer.json").write_text(json.dumps(config))

    @classmethod
    def load(cls, out_dir: Path, mmap: bool = False) -> BM25Index:
        """The saved index; `mmap` maps its arrays instead of reading them (processes that open the
        same index share its pages)."""
        import bm25s

        out_dir = Path(out_dir)
        if not (out_dir / "tokenizer.json").exists():
            raise HnmineError("no BM25 index", path=out_dir, fix="run `hnmine index --retrievers bm25` first")
        config = json.loads((out_dir / "tokenizer.json").read_text())
        retriever = bm25s.BM25.load(str(out_dir), mmap=mmap, show_progress=False)
        tokenizer = cls._tokenizer(config["stemmer"], config["stopwords"])
        tokenizer.load_vocab(str(out_dir))
        return cls(retriever, tokenizer)

    def tokenize(self, queries: list[str]) -> list[list[str]]:
        return self.tokenizer.tokenize(queries, update_vocab=False, return_as="string", show_progress=False)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (doc positions, scores) per query; queries with no known token get -1 / -inf rows."""
        tokens = self.tokenize(queries)
        n_docs = self.retriever.scores["num_docs"]
        k = min(k, n_docs)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        known = [i for i, t in enumerate(tokens) if any(t)]  # bm25s gives [''] for a query of unknown words
        if known:
            docs, sc = self.retriever.retrieve([tokens[i] for i in known], k=k, show_progress=False)
            positions[known] = docs
            scores[known] = sc
        # bm25s pads with arbitrary documents at score 0 when fewer than k match any token
        positions[scores <= 0] = -1
        return positions, scores

    def scores_for(self, query: str, positions: list[int]) -> list[float]:
        """The query's BM25 score of each document position, looked up in the token postings.

        bm25s' `get_scores` builds a score for every document of the corpus (O(corpus) per query:
        35 MB of float32 per query at 8.8M passages) to read a few dozen of them. The postings of
        each token hold their document positions in ascending order, so a binary search finds the
        candidates. The sums run token by token in the same order and dtype as `get_scores`, so
        the scores are the same bits (tested for every BM25 variant)."""
        tokens = self.tokenize([query])[0]
        if not any(tokens):
            return [0.0] * len(positions)
        token_ids = self.retriever.get_tokens_ids(tokens)
        index = self.retriever.scores
        data, indices, indptr = index["data"], index["indices"], index["indptr"]
        wanted = np.asarray(positions, dtype=indices.dtype)
        total = np.zeros(len(wanted), dtype=data.dtype)
        for token in token_ids:
            start, end = int(indptr[token]), int(indptr[token + 1])
            if start == end:
                continue
            docs = indices[start:end]
            at = np.minimum(np.searchsorted(docs, wanted), end - start - 1)
            hit = docs[at] == wanted
            total[hit] += data[start:end][at[hit]]
        nonoccurrence = self.retriever.nonoccurrence_array  # bm25l and bm25+ score absent tokens too
        if nonoccurrence is not None and token_ids:
            total += nonoccurrence[np.asarray(token_ids)].sum()
        return total.tolist()
