"""Precomputed embeddings imported instead of encoded, float16 storage, and the recall check of approximate indexes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import MODEL

from hnmine.config import DataParams, IndexParams, MineParams
from hnmine.errors import HnmineError
from hnmine.io.files import read_table
from hnmine.retrievers.embedding_store import load_embeddings
from hnmine.stages.index import index
from hnmine.stages.mine import mine


def _encoded(adi_indexed):
    vectors = np.asarray(load_embeddings(adi_indexed / "index" / "dense"), dtype=np.float32)
    ids = read_table(adi_indexed / "corpus.arrow", ["doc_id"]).column("doc_id").to_pylist()
    return ids, vectors


def _candidates(workdir):
    return pl.from_arrow(read_table(workdir / "candidates.arrow")).select("query_id", "doc_id", "rank")


def test_imported_npy_and_parquet_give_the_encoded_run(tmp_path, adi, adi_indexed, adi_workdir):
    ids, vectors = _encoded(adi_indexed)
    mine(adi_workdir, DataParams(beir=adi), MineParams(top_k=10), progress=False)  # a copy: the indexed dir is shared
    reference = _candidates(adi_workdir)

    np.save(tmp_path / "emb.npy", vectors * 3.0)  # not normalised: index normalises
    shuffled = np.random.default_rng(0).permutation(len(ids))
    extra = pl.DataFrame({"pid": ["not-in-corpus"], "vec": [[0.5] * vectors.shape[1]]})
    pl.concat([pl.DataFrame({"pid": [ids[i] for i in shuffled], "vec": vectors[shuffled].tolist()}), extra]).write_parquet(
        tmp_path / "emb.parquet")
    for name, extra_options in (("emb.npy", {}), ("emb.parquet", {"embeddings_id_column": "pid", "embeddings_column": "vec"})):
        workdir = tmp_path / f"work-{name}"
        result = index(workdir, DataParams(beir=adi), IndexParams(model=MODEL, embeddings=tmp_path / name, **extra_options),
                       progress=False)
        stats = result.stats["dense"]
        assert stats["docs_encoded"] == 0 and stats["docs_imported"] == 82
        assert stats["imported_rows_ignored"] == (1 if name.endswith("parquet") else 0)
        np.testing.assert_allclose(np.asarray(load_embeddings(workdir / "index" / "dense")), vectors, atol=1e-6)
        mine(workdir, DataParams(beir=adi), MineParams(top_k=10), progress=False)
        assert _candidates(workdir).equals(reference)
        again = index(workdir, DataParams(beir=adi), IndexParams(model=MODEL, embeddings=tmp_path / name, **extra_options),
                      progress=False)
        assert again.reused


def test_bad_embedding_files_name_the_file_and_the_fix(tmp_path, adi, adi_indexed):
    ids, vectors = _encoded(adi_indexed)
    np.save(tmp_path / "short.npy", vectors[:-1])
    bad = vectors.copy()
    bad[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    pl.DataFrame({"_id": ids[1:], "embedding": vectors[1:].tolist()}).write_parquet(tmp_path / "missing.parquet")
    cases = {"short.npy": "81 rows, but the corpus has 82 documents", "nan.npy": "row 7 has a NaN",
             "missing.parquet": f"1 corpus documents have no embedding, the first: '{ids[0]}'"}
    for name, message in cases.items():
        with pytest.raises(HnmineError, match=message) as caught:
            index(tmp_path / f"w-{name}", DataParams(beir=adi), IndexParams(model=MODEL, embeddings=tmp_path / name),
                  progress=False)
        assert name in str(caught.value) and "fix:" in str(caught.value)
        assert not (tmp_path / f"w-{name}" / "index" / "dense" / "embeddings.npy").exists()


def test_float16_storage_and_the_recall_check_of_an_hnsw_index(tmp_path, adi, adi_indexed):
    ids, vectors = _encoded(adi_indexed)
    rng = np.random.default_rng(1)
    # 82 real documents are too few for HNSW to miss anything: add 20k vectors clustered around them, as
    # real corpora cluster (uniform random vectors are the worst case: recall about 0.5 at efSearch 128)
    centers = vectors[rng.integers(0, len(vectors), 2000)] + rng.normal(scale=0.2, size=(2000, vectors.shape[1]))
    points = centers[rng.integers(0, 2000, 20_000)] + rng.normal(scale=0.05, size=(20_000, vectors.shape[1]))
    big = np.concatenate([vectors, points.astype(np.float32)])
    big_ids = ids + [f"synthetic-{i}" for i in range(20_000)]
    pl.DataFrame({"_id": big_ids, "embedding": big.tolist()}).write_parquet(tmp_path / "big.parquet")
    corpus = tmp_path / "beir"
    (corpus / "qrels").mkdir(parents=True)
    import gzip
    import json
    import shutil

    with gzip.open(adi / "corpus.jsonl.gz", "rt") as handle:
        docs = [json.loads(line) for line in handle]
    docs += [{"_id": f"synthetic-{i}", "title": "", "text": f"filler document {i}"} for i in range(20_000)]
    (corpus / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    shutil.copy(adi / "queries.jsonl.gz", corpus / "queries.jsonl.gz")
    shutil.copy(adi / "qrels" / "test.tsv", corpus / "qrels" / "test.tsv")

    result = index(tmp_path / "w", DataParams(beir=corpus), IndexParams(
        model=MODEL, embeddings=tmp_path / "big.parquet", storage="float16", faiss_factory="HNSW16", recall_sample=300),
        progress=False)
    stats = result.stats["dense"]
    stored = load_embeddings(tmp_path / "w" / "index" / "dense")
    assert stored.dtype == np.float16 and stored.shape == (20_082, vectors.shape[1])
    assert stats["recall_queries"] == 300 and 0.9 < stats["recall@10"] <= 1.0
    assert stats["recall_search"] == {"nprobe": 16, "ef_search": 128}
    flat = index(tmp_path / "w", DataParams(beir=corpus), IndexParams(
        model=MODEL, embeddings=tmp_path / "big.parquet", storage="float16"), progress=False)
    assert "recall@10" not in flat.stats["dense"]  # exact search: nothing to check
    mined = mine(tmp_path / "w", DataParams(beir=corpus), MineParams(top_k=10), progress=False)
    assert mined.stats["queries"] == 35


def test_lossy_indexes_rescore_their_candidates_exactly_from_the_matrix():
    """IVF-PQ's codes rank neighbours roughly; fetching 4 x k and re-scoring from the saved matrix
    brings recall@10 close to exact search, and the scores returned are the exact inner products."""
    import numpy as np

    from hnmine.retrievers import faiss_index
    from hnmine.retrievers.imported import exact_top_k, recall_at_k

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(64, 64)).astype(np.float32)
    points = centres[rng.integers(0, 64, 8000)] + rng.normal(scale=0.6, size=(8000, 64)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    index = faiss_index.build_faiss(points, "IVF32,PQ16")
    assert faiss_index.rerank_factor("IVF32,PQ16") == 4 and faiss_index.rerank_factor("HNSW32") == 0
    plain = recall_at_k(faiss_index.FaissSearch(index, "cpu", 16, 128), points, sample=300)["recall@10"]
    searcher = faiss_index.FaissSearch(index, "cpu", 16, 128, points, rerank=4)
    reranked = recall_at_k(searcher, points, sample=300)["recall@10"]
    assert reranked >= 0.9 and reranked > plain + 0.2, (plain, reranked)

    queries = points[:50]
    scores, positions = searcher.search(queries, 10)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", points[positions], queries), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    exact = exact_top_k(points, queries, 10)
    assert (positions[:, 0] == exact[:, 0]).mean() >= 0.95
