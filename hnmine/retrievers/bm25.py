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
    def load(cls, out_dir: Path) -> BM25Index:
        import bm25s

        out_dir = Path(out_dir)
        if not (out_dir / "tokenizer.json").exists():
            raise HnmineError("no BM25 index", path=out_dir, fix="run `hnmine index --retrievers bm25` first")
        config = json.loads((out_dir / "tokenizer.json").read_text())
        retriever = bm25s.BM25.load(str(out_dir), show_progress=False)
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
        tokens = self.tokenize([query])[0]
        if not any(tokens):
            return [0.0] * len(positions)
        all_scores = self.retriever.get_scores(tokens)
        return [float(all_scores[p]) for p in positions]
