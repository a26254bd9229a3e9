"""Exact inner-product search on the CPU: hnmine's block scan of the memory-mapped matrix against
FAISS's IndexFlatIP (which needs the whole matrix copied into RAM as float32).

    .venv/bin/python scripts/bench_exact_search.py [--docs 200000] [--queries 256] [--k 70]

Random unit vectors (384-d, seeded), the matrix saved as .npy and memory-mapped, queries near
corpus points. Prints the best of 3 timings of each and the share of identical ids.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import faiss

    from hnmine.retrievers.exact_search import exact_search

    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--k", type=int, default=70)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((args.docs, args.dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(args.docs, args.queries, replace=False)]
    queries = np.ascontiguousarray(queries + 0.1 * rng.standard_normal(queries.shape, dtype=np.float32))
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "m.npy", docs)
        mapped = np.load(Path(folder) / "m.npy", mmap_mode="r")
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(docs)
        timings = {"block scan": [], "faiss IndexFlatIP": []}
        for _ in range(3):
            began = time.perf_counter()
            _, ours = exact_search(mapped, queries, args.k)
            timings["block scan"].append(time.perf_counter() - began)
            began = time.perf_counter()
            _, theirs = flat.search(queries, args.k)
            timings["faiss IndexFlatIP"].append(time.perf_counter() - began)
    print(f"{args.queries} queries x {args.docs:,} docs, {args.dim}-d, k {args.k}, {os.cpu_count()} CPU cores, "
          f"faiss {faiss.__version__}, numpy {np.__version__}")
    for name, values in timings.items():
        print(f"  {name}: {min(values):.2f} s (best of 3)")
    print(f"  identical ids: {np.mean(ours == theirs):.5f}")


if __name__ == "__main__":
    main()
