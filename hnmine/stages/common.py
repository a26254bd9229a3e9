"""What the stages share beyond the lifecycle (`hnmine.workdir`): the identity of their data inputs and the query slice of a shard."""

from __future__ import annotations

import numpy as np

from hnmine.config import DataParams, parse_shard

# Data fields that only say where a file is: its content hash stands in the manifest's inputs.
_PATH_FIELDS = {"beir", "corpus", "queries", "qrels", "pairs"}
_CORPUS_FIELDS = {"id_column", "text_column", "title_column", "query_column", "positive_columns"}


def corpus_identity(data: DataParams) -> dict:
    ident = data.identity()
    return {k: v for k, v in ident.items() if k in _CORPUS_FIELDS} | {"layout": _layout(data)}


def query_identity(data: DataParams) -> dict:
    return {k: v for k, v in data.identity().items() if k not in _PATH_FIELDS} | {"layout": _layout(data)}


def _layout(data: DataParams) -> str:
    return "beir" if data.beir else "pairs" if data.pairs else "files"


def shard_slice(count: int, shard: str | None) -> slice:
    """Contiguous slice of `count` queries for shard K/N, so shards concatenate in query order."""
    k, n = parse_shard(shard)
    bounds = np.linspace(0, count, n + 1).round().astype(int)
    return slice(int(bounds[k]), int(bounds[k + 1]))
