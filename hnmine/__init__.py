"""hnmine: offline hard-negative mining for embedding and reranker training data."""

__version__ = "0.1.0"
