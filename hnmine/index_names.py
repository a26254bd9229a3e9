"""Names of dense indexes: `hnmine index --name NAME` puts one in index/dense/NAME/."""

from __future__ import annotations

import re

INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# names a dense index cannot take: the retrievers' own, and the folders inside index/dense/
RESERVED_INDEX_NAMES = frozenset({"dense", "bm25", "hybrid", "pooled", "chunks"})


def check_index_name(name: str) -> None:
    """A dense index name: empty (the default index) or a folder-safe lower-case word."""
    if name and (not INDEX_NAME.fullmatch(name) or name in RESERVED_INDEX_NAMES):
        raise ValueError(f"index name '{name}' must be lower-case letters, digits, '-' or '_' (at most 64) and not one "
                         f"of {', '.join(sorted(RESERVED_INDEX_NAMES))} (fix: e.g. --name static)")


def index_name(pool_entry: str) -> str:
    """The index a dense `mine --pool` entry names: "" (the default index) for `dense`, else itself."""
    return "" if pool_entry == "dense" else pool_entry


def dense_stage_name(name: str) -> str:
    """The stage (and output) name of a dense index in manifests: dense, or dense:NAME."""
    return f"dense:{name}" if name else "dense"
