"""Memory-mapped matrices read once, front to back, without keeping their pages in the process.

A block scan of a memory-mapped matrix (exact search, importing embeddings) touches every page once.
Those pages stay mapped, so the process's resident set grows to the whole file (1.5 GB at 1M x 384
float32): clean page cache that the kernel can reclaim, but counted as the process's memory by RSS,
by `top` and by a cluster's memory limits. Dropping each block's pages once it has been read keeps
the resident set at one block; the data stays in the page cache, so a second scan is as fast.
"""

from __future__ import annotations

import mmap

import numpy as np


def release_rows(array: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of rows [start, stop) of a C-contiguous np.memmap from this process's mapping
    (madvise MADV_DONTNEED; the next read faults them back in from the page cache). Arrays that are
    not memory-mapped are left alone."""
    mapping = getattr(array, "_mmap", None)
    if mapping is None or not array.flags.c_contiguous or stop <= start or not hasattr(mapping, "madvise"):
        return
    stop = min(stop, array.shape[0])
    row_bytes = array.strides[0]
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    first = array.ctypes.data - base + start * row_bytes
    last = array.ctypes.data - base + stop * row_bytes
    aligned = first - first % mmap.PAGESIZE
    mapping.madvise(mmap.MADV_DONTNEED, aligned, last - aligned)
