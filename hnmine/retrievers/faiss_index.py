"""FAISS indexes of the embedding matrix (built, saved, loaded, searched), and the choice of searcher
for one dense index."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.retrievers.exact_search import BlockExactSearch, TorchExactSearch, rescore_exact

FAISS_FILE = "faiss.index"  # beside the embeddings in a dense index folder

ADD_BLOCK = 65536


def build_faiss(embeddings: np.ndarray, factory: str, seed: int = 0):
    """A FAISS inner-product index from a (memory-mapped) matrix, trained on a sample if needed."""
    import faiss

    n, dim = embeddings.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise HnmineError(f"FAISS cannot build '{factory}' ({str(exc).strip().splitlines()[-1]})",
                          fix="use a factory string such as Flat, HNSW32, IVF1024,Flat or IVF1024,PQ32") from None
    _no_polysemous_training(index)
    if not index.is_trained:
        sample = np.random.default_rng(seed).choice(n, size=min(n, 100_000), replace=False)
        index.train(np.ascontiguousarray(embeddings[np.sort(sample)], dtype=np.float32))
    for start in range(0, n, ADD_BLOCK):
        index.add(np.ascontiguousarray(embeddings[start:start + ADD_BLOCK], dtype=np.float32))
    return index


def _no_polysemous_training(index) -> None:
    """index_factory turns on polysemous training for 8-bit PQ. hnmine never searches with polysemous
    codes, and that training was most of an IVF-PQ build's time."""
    import faiss

    for candidate in (index, faiss.try_extract_index_ivf(index)):
        if candidate is None:
            continue
        candidate = faiss.downcast_index(candidate)
        if hasattr(candidate, "do_polysemous_training"):
            candidate.do_polysemous_training = False


def save_faiss(index, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_faiss(out_dir: Path, factory: str, embeddings: np.ndarray):
    import faiss

    if factory == "Flat":
        return build_faiss(embeddings, factory)
    return faiss.read_index(str(Path(out_dir) / FAISS_FILE))


def set_search_parameters(index, *, nprobe: int, ef_search: int) -> None:
    """nprobe for IVF indexes (capped at the number of lists), efSearch for HNSW; exact indexes ignore both."""
    import faiss

    try:
        inner = faiss.extract_index_ivf(index)
    except (RuntimeError, ValueError):  # not an IVF index
        inner = None
    if inner is not None:
        inner.nprobe = min(nprobe, inner.nlist)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = ef_search


def faiss_gpu_count() -> int:
    try:
        import faiss
    except ImportError:
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def rerank_factor(factory: str) -> int:
    """How many times k a lossy index (PQ, SQ, RQ, LSH codes) fetches before the exact re-scoring from
    the matrix; 0 for indexes that store the vectors whole (Flat, HNSW on Flat, IVF-Flat). The codes
    alone rank neighbours roughly: tests/test_imported_embeddings.py measures both."""
    return 4 if re.search(r"PQ|SQ|RQ|LSH", factory) else 0


class FaissSearch:
    """A FAISS index (on the GPU when faiss has GPU support and the device is a GPU). With `rerank`
    r > 0 it fetches r x k candidates and keeps the k best by exact score from `embeddings`."""

    def __init__(self, index, device: str, nprobe: int, ef_search: int, embeddings: np.ndarray | None = None,
                 rerank: int = 0):
        self.embeddings = embeddings
        self.rerank = rerank if embeddings is not None else 0
        self.on_gpu = False
        set_search_parameters(index, nprobe=nprobe, ef_search=ef_search)  # the GPU copy takes nprobe along
        if device.startswith("cuda") and faiss_gpu_count() > 0:
            import faiss

            try:
                index = faiss.index_cpu_to_all_gpus(index)
                self.on_gpu = True
            except RuntimeError:  # e.g. HNSW has no GPU version: search it on the CPU
                pass
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.rerank:
            scores, positions = self.index.search(queries, k)
            return scores, positions.astype(np.int64)
        _, positions = self.index.search(queries, min(self.index.ntotal, k * self.rerank))
        return rescore_exact(self.embeddings, queries, positions.astype(np.int64), k)


def open_search(out_dir: Path, factory: str, embeddings: np.ndarray, device: str, *, nprobe: int, ef_search: int):
    """The searcher for one dense index. Flat: a block scan of the memory-mapped matrix on the CPU,
    torch on the GPU when faiss has no GPU build, FAISS on the GPU when it has; other factories: FAISS.

    Returns (searcher, a name for the run's stats)."""
    on_gpu = device.startswith("cuda")
    if factory == "Flat" and not on_gpu:
        return BlockExactSearch(embeddings), "exact-block-scan"
    if factory == "Flat" and faiss_gpu_count() == 0:
        return TorchExactSearch(embeddings, device), "torch-gpu-exact"
    rerank = rerank_factor(factory)
    searcher = FaissSearch(load_faiss(out_dir, factory, embeddings), device, nprobe, ef_search, embeddings, rerank)
    kind = f"faiss-{'gpu' if searcher.on_gpu else 'cpu'}:{factory}"
    return searcher, kind + (f"+exact-rerank-x{rerank}" if rerank else "")
