"""Column names and Arrow schemas of every file a stage writes.

Rows are long-format: one row per (query, document) pair, so a stage can stream record batches and
a later stage can add a score column without reshaping.
"""

from __future__ import annotations

import pyarrow as pa

DOC_ID = "doc_id"
QUERY_ID = "query_id"
TITLE = "title"
TEXT = "text"
RELEVANCE = "relevance"

TEXT_HASH = "text_hash"  # 64-bit hash of the normalized text: finds copies of a positive under another id

CORPUS = pa.schema([(DOC_ID, pa.string()), (TITLE, pa.string()), (TEXT, pa.string())])
INDEXED_CORPUS = CORPUS.append(pa.field(TEXT_HASH, pa.uint64()))
QUERIES = pa.schema([(QUERY_ID, pa.string()), (TEXT, pa.string())])
QRELS = pa.schema([(QUERY_ID, pa.string()), (DOC_ID, pa.string()), (RELEVANCE, pa.float32())])

# candidates.arrow: mined candidates and the query's positives, each with every retriever's score.
IS_POSITIVE = "is_positive"
RANK = "rank"  # 1-based rank among the query's non-positive candidates after fusion (the fused rank); null for positives
FUSED_SCORE = "fused_score"  # reciprocal-rank fusion score (hybrid, a pool of two or more); the retriever's own score otherwise
RETRIEVERS = ("dense", "bm25")


def score_column(name: str) -> str:
    return f"{name}_score"


def rank_column(name: str) -> str:
    """Rank of the document in that retriever's full list (1-based, positives included)."""
    return f"{name}_rank"


def retriever_key(pool_name: str) -> str:
    """The column key of a retriever named in `mine --pool`: dense, bm25, or dense_NAME for the
    dense index `hnmine index --name NAME` built."""
    return pool_name if pool_name in RETRIEVERS else f"dense_{pool_name}"


FOUND_BY = "found_by"  # how many of the run's retrievers have the document in the list they were read to

CANDIDATES = pa.schema(
    [
        (QUERY_ID, pa.string()),
        (DOC_ID, pa.string()),
        (IS_POSITIVE, pa.bool_()),
        (RANK, pa.int32()),
        (FUSED_SCORE, pa.float32()),
    ]
    + [(score_column(r), pa.float32()) for r in RETRIEVERS]
    + [(rank_column(r), pa.int32()) for r in RETRIEVERS]
    + [(FOUND_BY, pa.int32())]
)


def candidates_schema(keys: list[str]) -> pa.Schema:
    """candidates.arrow for a run over these retriever keys: CANDIDATES, then a score and a rank
    column for each named dense index."""
    extra = [k for k in keys if k not in RETRIEVERS]
    return pa.schema(list(CANDIDATES) + [(score_column(k), pa.float32()) for k in extra]
                     + [(rank_column(k), pa.int32()) for k in extra])

# filter output: kept negatives, and the dropped candidates with the rule that dropped them.
DROPPED_BY = "dropped_by"
# a judge cascade (score --cascade judge): which teacher decided a candidate, and its probability
DECIDED_BY = "decided_by"  # "judge" inside the band and for positives, "cross-encoder" elsewhere
DECIDED_PROB = "decided_prob"  # judge_score where the judge decided, else ce_prob
NEGATIVE_RANK = "negative_rank"  # 1..n order of a kept negative within its query
PADDED = "padded"  # a kept negative drawn at random from the corpus for a query short of candidates
