"""Exact inner-product search over the (memory-mapped) embedding matrix: a block scan on the CPU,
torch matrix products on a GPU, and the exact fp32 re-scoring of candidates an approximate index found."""

from __future__ import annotations

import numpy as np

from hnmine.device import TORCH_DTYPES
from hnmine.io.mapped import release_rows

EXACT_BLOCK = 16384  # documents per block of the exact scan: 256 queries x 16384 x 4 bytes = 16 MB of scores


class TorchExactSearch:
    """Exact inner-product search with torch matrix products on a GPU, for when faiss has no GPU build.

    The matrix sits on the GPU in blocks, in fp16 by default (half the memory: 8.8M x 384 takes
    6.8 GB). Each block's top k is merged into the running top k; the k found are then re-scored and
    re-ordered in fp32 from the memory-mapped matrix. A margin of extra candidates is fetched and
    cut after the fp32 re-scoring, so fp16 rounding does not decide who is k-th.

    The re-scoring runs on the GPU from an fp32 copy of the matrix when that fits in half the free
    GPU memory (13.5 GB for 8.8M x 384): on an H200, gathering the rows from the memory-mapped file
    on the CPU took most of the search time (1M docs, 50k queries: 3.6 s, 1.39e10 products/s).
    Otherwise the rows come from the memory-mapped file.
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
