"""Corpus embeddings a user already has: import them instead of encoding, and check an approximate index.

`import_embeddings` takes a `.npy` matrix (one row per corpus document, in corpus order) or a
Parquet file with an id column and a vector column (any order; matched by id), and writes the
work dir's `embeddings.npy` in corpus order, block by block, so memory stays bounded by the block.

`recall_at_k` measures an approximate FAISS index (HNSW, IVF, PQ) against exact inner-product
search, with sampled corpus vectors as queries (each one's own document left out of both lists).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.io.mapped import release_rows

BLOCK = 65536


def _normalize(block: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.maximum(norms, 1e-12)


def _check_finite(block: np.ndarray, start: int, path: Path, what: str = "row") -> None:
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise HnmineError(f"{what} {start + int(np.flatnonzero(bad)[0])} has a NaN or infinite value", path=path,
                          fix="re-export the embeddings; every document needs a finite vector")


def _vectors_of(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> np.ndarray:
    """A list / fixed-size-list column as a 2-D float32 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(array), -1)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lengths = set(array.value_lengths().unique().to_pylist())
        if len(lengths) != 1 or None in lengths:
            raise HnmineError(f"column '{name}' holds vectors of different lengths ({sorted(x for x in lengths if x is not None)})",
                              path=path, fix="every embedding must have the same dimension")
        return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(array), lengths.pop())
    raise HnmineError(f"column '{name}' is {array.type}, not a list of floats", path=path,
                      fix="store each embedding as a list<float> (or fixed_size_list) column")


def import_embeddings(path: Path, doc_ids: list[str], out_file: Path, *, normalize: bool, dtype: str,
                      id_column: str = "_id", column: str = "embedding") -> dict:
    """Write `out_file` (.npy, `dtype`) with one row per `doc_ids`, from the user's file. Returns stats."""
    path = Path(path)
    if not path.exists():
        raise HnmineError("embeddings file not found", path=path, fix="check --embeddings")
    suffix = path.name.lower()
    if suffix.endswith(".npy"):
        source = np.load(path, mmap_mode="r")
        if source.ndim != 2:
            raise HnmineError(f"expected a 2-D matrix, found shape {source.shape}", path=path,
                              fix="save one row per document: np.save(path, matrix)")
        if source.shape[0] != len(doc_ids):
            raise HnmineError(f"{source.shape[0]} rows, but the corpus has {len(doc_ids)} documents", path=path,
                              fix="write one row per corpus document in corpus order (rows with empty text are "
                                  "skipped: see corpus.skipped.arrow), or use a Parquet file with an id column")
        rows, dim = source.shape
        with atomic_path(out_file) as tmp:
            # the header from numpy, then the rows appended by plain writes: mapping the output would
            # keep all of it resident in this process (io/mapped.py)
            header = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(rows, dim))
            data_offset = header.offset
            del header
            with open(tmp, "r+b") as handle:
                handle.seek(data_offset)
                for start in range(0, rows, BLOCK):
                    block = np.array(source[start:start + BLOCK], dtype=np.float32)  # a copy, not a view:
                    release_rows(source, start, start + BLOCK)  # reading a view later would map its pages again
                    _check_finite(block, start, path)
                    handle.write(np.ascontiguousarray(_normalize(block) if normalize else block, dtype=dtype).tobytes())
        return {"imported_from": str(path), "dim": dim, "docs_imported": rows, "imported_rows_ignored": 0}
    if not suffix.endswith(".parquet"):
        raise HnmineError("embeddings must be a .npy or .parquet file", path=path, fix="convert them to one of the two")

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    for wanted, option in ((id_column, "--embeddings-id-column"), (column, "--embeddings-column")):
        if wanted not in names:
            raise HnmineError(f"no column '{wanted}' (columns: {', '.join(names)})", path=path, fix=f"name it with {option}")
    position = {d: i for i, d in enumerate(doc_ids)}
    seen = np.zeros(len(doc_ids), dtype=bool)
    ignored = 0
    matrix = None
    row = 0
    with atomic_path(out_file) as tmp:
        for batch in parquet.iter_batches(batch_size=BLOCK, columns=[id_column, column]):
            ids = [str(v) for v in batch.column(id_column).to_pylist()]
            vectors = _vectors_of(batch.column(column), path, column)
            _check_finite(vectors, row, path, what="Parquet row")
            if matrix is None:
                matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(doc_ids), vectors.shape[1]))
            elif vectors.shape[1] != matrix.shape[1]:
                raise HnmineError(f"Parquet row {row}: dimension {vectors.shape[1]}, earlier rows have {matrix.shape[1]}",
                                  path=path, fix="every embedding must have the same dimension")
            targets = np.fromiter((position.get(d, -1) for d in ids), dtype=np.int64, count=len(ids))
            known = targets >= 0
            ignored += int((~known).sum())
            dup = np.flatnonzero(known)[seen[targets[known]]]
            if len(dup) or len(set(targets[known].tolist())) != int(known.sum()):
                first = ids[int(dup[0])] if len(dup) else next(d for d in ids if ids.count(d) > 1)
                raise HnmineError(f"document id '{first}' has two embeddings", path=path, fix="keep one row per id")
            seen[targets[known]] = True
            block = vectors[known]
            matrix[targets[known]] = _normalize(block) if normalize else block
            row += len(ids)
        missing = np.flatnonzero(~seen)
        if matrix is None or len(missing):
            first = doc_ids[int(missing[0])] if len(missing) else "(the file is empty)"
            raise HnmineError(f"{len(missing)} corpus documents have no embedding, the first: '{first}'", path=path,
                              fix="embed every corpus document, or drop those documents from the corpus")
        dim = matrix.shape[1]
        matrix.flush()
        del matrix
    return {"imported_from": str(path), "dim": dim, "docs_imported": len(doc_ids), "imported_rows_ignored": ignored}


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best documents per query by inner product, scanning the matrix in blocks."""
    from hnmine.retrievers.exact_search import exact_search

    return exact_search(embeddings, queries, k)[1]


def recall_at_k(index, embeddings: np.ndarray, *, k: int = 10, sample: int = 1000, seed: int = 0) -> dict:
    """recall@k of `index` (already set up with its search parameters) against exact search."""
    n = embeddings.shape[0]
    picked = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    queries = np.asarray(embeddings[picked], dtype=np.float32)
    exact = exact_top_k(embeddings, queries, k + 1)
    _, approx = index.search(np.ascontiguousarray(queries), k + 1)
    hits = 0
    for own, e, a in zip(picked, exact, approx):
        truth = [p for p in e.tolist() if p != own][:k]
        found = [p for p in a.tolist() if p != own and p >= 0][:k]
        hits += len(set(found).intersection(truth))
    return {f"recall@{k}": round(hits / (k * len(picked)), 4), "recall_queries": len(picked)}
