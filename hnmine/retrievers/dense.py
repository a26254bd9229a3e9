"""Dense retrieval: sentence-transformers encoding saved in resumable chunks, FAISS search.

Layout of `WORKDIR/index/dense/`:
  plan.json        what the chunks belong to (model, texts, chunking); a changed plan discards them
  chunks/NNNNN.npy embeddings of the NNNNN-th slice of the length-sorted corpus, written atomically
  embeddings.npy   float32 [docs x dim] in corpus order, read memory-mapped
  faiss.index      only for non-Flat factory strings (Flat is searched straight from the memmap)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.io.mapped import release_rows
from hnmine.device import default_device
from hnmine.packaged.resolve import resolve_model

ADD_BLOCK = 65536
EXACT_BLOCK = 16384  # documents per block of the exact scan: 256 queries x 16384 x 4 bytes = 16 MB of scores


TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_precision(precision: str, device: str) -> str:
    """auto = fp16 on a GPU (twice the speed, vectors within ~1e-3 of fp32), fp32 elsewhere."""
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return precision


@functools.lru_cache(maxsize=2)
def _load_model(path: str, device: str, max_length: int | None, precision: str = "fp32"):
    """Loaded once per process: mine, tests and notebooks call the same model many times."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=device)
    except OSError as exc:
        raise HnmineError(f"cannot load model '{path}' ({str(exc).splitlines()[0]})",
                          fix="pass a local model folder, or a hub name reachable from here") from None
    # Cast explicitly: a folder saved in fp16 would otherwise load as fp16 on a CPU too.
    model.to(getattr(torch, TORCH_DTYPES[precision]))
    if max_length:
        model.max_seq_length = max_length
    return model


class Encoder:
    """A sentence-transformers model with the prompts and length limit of one index.

    backend "auto" picks ONNX Runtime on CPU when the model is a local Transformer + Pooling
    folder (the same numbers as torch to ~1e-7, faster on CPU), and torch everywhere else.
    """

    def __init__(self, model: str, device: str | None = None, max_length: int | None = None, batch_size: int = 32,
                 normalize: bool = True, backend: str = "auto", precision: str = "auto"):
        path = resolve_model(model)
        device = device or default_device()
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.backend = resolve_backend(backend, path, device, self.precision)
        self.batch_size = batch_size
        self.normalize = normalize
        self.model = self.onnx = self.fast = None
        if self.backend == "onnx":
            self.onnx = _load_onnx(path, max_length, batch_size, normalize, self.precision == "int8")
        else:
            self.model = _load_model(path, device, max_length, self.precision)
            if device.startswith("cuda") and Path(path).is_dir():
                try:
                    self.fast = PrefetchTorchEncoder(self.model, Path(path), max_length, batch_size, normalize)
                except HnmineError:  # not a plain Transformer + Pooling folder: sentence-transformers' encode
                    pass

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        if self.model is None:
            return self.onnx.encode(texts, prompt=prompt)
        if self.fast is not None:
            return self.fast.encode(texts, prompt=prompt)
        if not texts:
            return np.zeros((0, int(self.model.get_sentence_embedding_dimension())), dtype=np.float32)
        return self.model.encode(
            texts, batch_size=self.batch_size, prompt=prompt or None, normalize_embeddings=self.normalize,
            convert_to_numpy=True, show_progress_bar=False,
        ).astype(np.float32, copy=False)


class PrefetchTorchEncoder:
    """sentence-transformers' forward pass fed by the Rust tokenizer, one batch ahead in a thread.

    On a GPU, `SentenceTransformer.encode` spends its time in the Python tokenizer (3.6k docs/s on
    an H200 machine, the forward pass alone 49.5k: docs/gpu.md). Here `tokenizers.encode_batch`
    (all cores, no GIL) prepares the next AHEAD batches in threads while the GPU runs batch k: with
    one batch ahead an H200 machine reached 15.2k docs/s, the Rust tokenizer's parallelism spent on
    one 512-text call at a time. Same modules, same vectors.
    """

    AHEAD = 4

    def __init__(self, model, path: Path, max_length: int | None, batch_size: int, normalize: bool):
        from hnmine.retrievers.onnx_encoder import RustTokenizer, _modules

        _modules(path)
        self.model = model
        self.tokenizer = RustTokenizer(path, max_length or model.max_seq_length)
        self.batch_size = batch_size
        self.normalize = normalize

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        import torch

        texts = [prompt + t for t in texts] if prompt else list(texts)
        if not texts:
            return np.zeros((0, int(self.model.get_sentence_embedding_dimension())), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [order[s:s + self.batch_size] for s in range(0, len(texts), self.batch_size)]
        device = self.model.device
        outputs = []
        with ThreadPoolExecutor(max_workers=self.AHEAD) as pool, torch.inference_mode():
            pending = deque(pool.submit(self.tokenizer.arrays, [texts[i] for i in batch]) for batch in batches[:self.AHEAD])
            for k in range(len(batches)):
                arrays = pending.popleft().result()
                if k + self.AHEAD < len(batches):
                    pending.append(pool.submit(self.tokenizer.arrays, [texts[i] for i in batches[k + self.AHEAD]]))
                features = {name: torch.from_numpy(value).to(device, non_blocking=True) for name, value in arrays.items()}
                vectors = self.model(features)["sentence_embedding"].float()
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                outputs.append(vectors)
        out = np.empty((len(texts), outputs[0].shape[1]), dtype=np.float32)
        out[order] = torch.cat(outputs).cpu().numpy()
        return out


def resolve_backend(backend: str, model_path: str, device: str, precision: str = "fp32") -> str:
    if backend != "auto":
        if backend == "onnx" and precision not in ("fp32", "int8"):
            raise HnmineError(f"the ONNX encoder runs in fp32 or int8, not {precision}",
                              fix="use --precision fp32 or int8 with --backend onnx, or --backend torch")
        if backend == "torch" and precision == "int8":
            raise HnmineError("--precision int8 needs the ONNX encoder", fix="use --backend onnx (or auto) on a CPU")
        return backend
    if precision == "int8":
        if not device.startswith("cpu") or not Path(model_path).is_dir():
            raise HnmineError("--precision int8 runs through ONNX Runtime on a CPU, from a local model folder",
                              fix="use --device cpu with a sentence-transformers folder, or --precision fp16 on a GPU")
        return "onnx"
    if not device.startswith("cpu") or precision != "fp32" or not Path(model_path).is_dir():
        return "torch"
    try:
        import onnxruntime  # noqa: F401

        from hnmine.retrievers.onnx_encoder import _modules

        _modules(Path(model_path))
    except (ImportError, HnmineError):
        return "torch"
    return "onnx"


@functools.lru_cache(maxsize=2)
def _load_onnx(path: str, max_length: int | None, batch_size: int, normalize: bool, int8: bool = False):
    from hnmine.retrievers.onnx_encoder import OnnxSentenceEncoder

    return OnnxSentenceEncoder(path, max_length=max_length, batch_size=batch_size, normalize=normalize, int8=int8)


def _plan_digest(plan: dict) -> str:
    return hashlib.blake2b(json.dumps(plan, sort_keys=True).encode(), digest_size=16).hexdigest()


def encode_corpus(
    texts: list[str],
    out_dir: Path,
    encoder_factory: Callable[[], Encoder],
    *,
    identity: dict,
    prompt: str,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
    dtype: str = "float32",
    part: tuple[int, int] | None = None,
) -> tuple[np.ndarray | None, dict]:
    """Encode `texts` into `out_dir/embeddings.npy`, resuming from chunks an earlier run saved.

    Texts are encoded longest first (less padding per batch, and an out-of-memory error shows up
    in the first batch, not after an hour), in chunks of `chunk_size` saved as they finish.
    `part=(k, n)` encodes only the chunks c with c % n == k and returns (None, stats) without
    assembling: n workers (Ray tasks) share the encoding, and a last call with no part assembles.
    """
    out_dir = Path(out_dir)
    chunks_dir = out_dir / "chunks"
    order = np.argsort([-len(t) for t in texts], kind="stable")
    text_digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        text_digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    plan = {"identity": identity, "texts": text_digest.hexdigest(), "count": len(texts), "chunk_size": chunk_size}
    plan_file = out_dir / "plan.json"
    if plan_file.exists() and json.loads(plan_file.read_text()).get("digest") != _plan_digest(plan):
        shutil.rmtree(chunks_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(plan_file) as tmp:
        tmp.write_text(json.dumps({"digest": _plan_digest(plan), **plan}, indent=2))
    chunks_dir.mkdir(exist_ok=True)

    n_chunks = (len(texts) + chunk_size - 1) // chunk_size
    resumed = encoded = 0
    encoder = None
    dim = None
    for c in range(n_chunks):
        if part is not None and c % part[1] != part[0]:
            continue
        positions = order[c * chunk_size:(c + 1) * chunk_size]
        chunk_file = chunks_dir / f"{c:05d}.npy"
        if chunk_file.exists():
            resumed += len(positions)
        else:
            if encoder is None:
                encoder = encoder_factory()
            vectors = encoder.encode([texts[i] for i in positions], prompt=prompt)
            with atomic_path(chunk_file) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, vectors)
            encoded += len(positions)
        if progress:
            progress(len(positions))

    if part is not None:
        return None, {"docs_encoded": encoded, "docs_resumed": resumed}
    embeddings_file = out_dir / "embeddings.npy"
    for c in range(n_chunks):
        vectors = np.load(chunks_dir / f"{c:05d}.npy", mmap_mode="r")
        if dim is None:
            dim = vectors.shape[1]
            with atomic_path(embeddings_file) as tmp:
                matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(texts), dim))
                for cc in range(n_chunks):
                    matrix[order[cc * chunk_size:(cc + 1) * chunk_size]] = np.load(chunks_dir / f"{cc:05d}.npy")
                matrix.flush()
                del matrix
            break
    if dim is None:
        raise HnmineError("corpus is empty: nothing to encode", fix="check the corpus file")
    shutil.rmtree(chunks_dir, ignore_errors=True)
    return np.load(embeddings_file, mmap_mode="r"), {"docs_encoded": encoded, "docs_resumed": resumed, "dim": dim}


def load_embeddings(out_dir: Path) -> np.ndarray:
    path = Path(out_dir) / "embeddings.npy"
    if not path.exists():
        raise HnmineError("no dense embeddings", path=path, fix="run `hnmine index --retrievers dense` first")
    return np.load(path, mmap_mode="r")


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
    return faiss.read_index(str(Path(out_dir) / "faiss.index"))


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


class TorchExactSearch:
    """Exact inner-product search with torch matrix products on a GPU, for when faiss has no GPU build.

    The matrix sits on the GPU in blocks, in fp16 by default (half the memory: 8.8M x 384 takes
    6.8 GB). Each block's top k is merged into the running top k; the k found are then re-scored and
    re-ordered in fp32 from the memory-mapped matrix. A margin of extra candidates is fetched and
    cut after the fp32 re-scoring, so fp16 rounding does not decide who is k-th.

    The re-scoring runs on the GPU from an fp32 copy of the matrix when that fits in half the free
    GPU memory (13.5 GB for 8.8M x 384): on an H200, gathering the rows from the memory-mapped file
    on the CPU took most of the search time (1M docs, 50k queries: 3.6 s, 1.39e10 products/s).
    Otherwise the rows come from the memory-mapped file as before.
    """

    BLOCK = 262_144

    def __init__(self, embeddings: np.ndarray, device: str, dtype: str = "fp16", rescore_on_device: bool | None = None):
        import torch

        self.torch = torch
        self.device = device
        self.dtype = getattr(torch, TORCH_DTYPES[dtype])
        self.embeddings = embeddings
        self.blocks = [torch.from_numpy(np.ascontiguousarray(embeddings[s:s + self.BLOCK], dtype=np.float32))
                       .to(device=device, dtype=self.dtype) for s in range(0, embeddings.shape[0], self.BLOCK)]
        if rescore_on_device is None:
            fp32_bytes = embeddings.shape[0] * embeddings.shape[1] * 4
            rescore_on_device = device.startswith("cuda") and fp32_bytes < torch.cuda.mem_get_info(device)[0] // 2
        self.exact = None
        if rescore_on_device:
            self.exact = torch.empty(embeddings.shape, dtype=torch.float32, device=device)
            for s in range(0, embeddings.shape[0], self.BLOCK):
                self.exact[s:s + self.BLOCK] = torch.from_numpy(
                    np.ascontiguousarray(embeddings[s:s + self.BLOCK], dtype=np.float32)).to(device)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        wanted, k = k, min(self.embeddings.shape[0], k + max(16, k // 4))
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device=self.device, dtype=self.dtype)
        best_scores = best_positions = None
        offset = 0
        for block in self.blocks:
            scores, positions = torch.topk(q @ block.T, min(k, block.shape[0]), dim=1)
            positions = positions + offset
            offset += block.shape[0]
            if best_scores is not None:
                scores = torch.cat([best_scores, scores], dim=1)
                positions = torch.cat([best_positions, positions], dim=1)
                scores, keep = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                positions = torch.gather(positions, 1, keep)
            best_scores, best_positions = scores, positions
        if self.exact is not None:
            q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
            exact = torch.bmm(self.exact[best_positions], q32.unsqueeze(2)).squeeze(2)
            exact, order = torch.sort(exact, dim=1, descending=True, stable=True)
            positions = torch.gather(best_positions, 1, order[:, :wanted])
            return exact[:, :wanted].cpu().numpy(), positions.cpu().numpy().astype(np.int64)
        return rescore_exact(self.embeddings, queries, best_positions.cpu().numpy().astype(np.int64), wanted)


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int,
                 block: int = EXACT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The k best documents per query by exact inner product, scanning the (memory-mapped, float32
    or float16) matrix a block at a time: memory is queries x block, whatever the corpus size.

    Order: score descending, then position ascending. Rows short of k (k > documents) are padded
    with -inf / -1, as FAISS does. FAISS's IndexFlatIP needs an in-RAM float32 copy of the whole
    matrix (13.5 GB for 8.8M x 384), and on the 2-core CPU of docs/benchmarks.md it was also 6.3x
    slower (scripts/bench_exact_search.py)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = embeddings.shape[0]
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_positions = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, n, block):
        scores = queries @ np.asarray(embeddings[start:start + block], dtype=np.float32).T
        release_rows(embeddings, start, start + block)
        if best_scores.shape[1] == k:  # only what beats each query's current k-th can enter
            top_scores, top = _above(scores, best_scores[:, -1], k)
        else:
            top_scores, top = _block_top(scores, k)
        if top.shape[1] == 0:
            continue
        best_scores = np.concatenate([best_scores, top_scores], axis=1)
        best_positions = np.concatenate([best_positions, np.where(top >= 0, top + start, -1)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_positions = np.take_along_axis(best_positions, keep, axis=1)
    if best_scores.shape[1] < k:
        pad = k - best_scores.shape[1]
        best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        best_positions = np.pad(best_positions, ((0, 0), (0, pad)), constant_values=-1)
    return best_scores, best_positions


def _block_top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best columns in position order (so a stable sort by score breaks ties by position)."""
    take = min(k, scores.shape[1])
    if take < scores.shape[1]:
        top = np.sort(np.argpartition(-scores, take - 1, axis=1)[:, :take], axis=1)
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.take_along_axis(scores, top, axis=1), top


def _above(scores: np.ndarray, threshold: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the entries of `scores` strictly above the row's threshold (its current k-th best; a
    later block's equal score loses the tie by position), in position order, padded to the widest
    row with -inf / -1. Once the first block has filled the top k few entries pass, so a comparison
    replaces most of the argpartitions. Where more than k pass in a row, the block falls back to the
    partition."""
    passing = scores > threshold[:, None]
    rows, cols = np.nonzero(passing)
    counts = np.bincount(rows, minlength=scores.shape[0])
    width = int(counts.max()) if len(rows) else 0
    if width > k:
        top_scores, top = _block_top(np.where(passing, scores, -np.inf), k)
        return top_scores, np.where(np.isfinite(top_scores), top, -1)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out_scores = np.full((scores.shape[0], width), -np.inf, dtype=np.float32)
    out_cols = np.full((scores.shape[0], width), -1, dtype=np.int64)
    out_scores[rows, slot] = scores[rows, cols]
    out_cols[rows, slot] = cols
    return out_scores, out_cols


class BlockExactSearch:
    """Exact search for the Flat index on the CPU: `exact_search` over the memory-mapped matrix."""

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.embeddings, queries, k)


def rerank_factor(factory: str) -> int:
    """How many times k a lossy index (PQ, SQ, RQ, LSH codes) fetches before the exact re-scoring from
    the matrix; 0 for indexes that store the vectors whole (Flat, HNSW on Flat, IVF-Flat). The codes
    alone rank neighbours roughly: tests/test_imported_embeddings.py measures both."""
    return 4 if re.search(r"PQ|SQ|RQ|LSH", factory) else 0


def rescore_exact(embeddings: np.ndarray, queries: np.ndarray, positions: np.ndarray, k: int,
                  block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each query's candidate `positions` (-1 = none) by exact fp32 inner product with
    the (memory-mapped) matrix, a block of queries at a time so the gathered rows stay small."""
    k = min(k, positions.shape[1])
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_positions = np.full((len(queries), k), -1, dtype=np.int64)
    for s in range(0, len(queries), block):
        pos = positions[s:s + block]
        valid = pos >= 0
        rows = np.asarray(embeddings[np.where(valid, pos, 0).ravel()], dtype=np.float32).reshape(*pos.shape, -1)
        scores = np.einsum("qkd,qd->qk", rows, np.asarray(queries[s:s + block], dtype=np.float32))
        scores = np.where(valid, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_scores[s:s + block] = np.take_along_axis(scores, order, 1)
        out_positions[s:s + block] = np.where(np.isfinite(out_scores[s:s + block]), np.take_along_axis(pos, order, 1), -1)
    return out_scores, out_positions


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
