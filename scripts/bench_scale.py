"""Peak memory and wall time of every stage at 10k, 100k and 1M documents (docs/scale.md).

The corpus is synthetic: passages of 2-3 sentences drawn from the shared BEIR sets (about an MS MARCO
passage each), a fixed number of queries (the opening words of one positive each). The embeddings
are random but seeded and clustered like real ones (a point = one of 4096 centres + noise), so
the retrieval stages do real work without encoding a million passages on a CPU; they are imported
with `hnmine index --embeddings`. Each stage runs as its own `hnmine` process, and its peak RSS is
measured by `_common.measure` (polled RSS of it and its children, its own high-water mark, or its
ru_maxrss where that exceeds this script's peak). The query count stays fixed while the corpus grows
100-fold, so memory
that grows with the corpus shows, and memory that would grow with queries x corpus would too.

    .venv/bin/python scripts/bench_scale.py --root /tmp/scale [--sizes 10000 100000 1000000] [--queries 5000]

Writes docs/scale.md between `<!-- BEGIN scale -->` and `<!-- END scale -->`, and the raw figures to
docs/results/scale.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
from pathlib import Path

import numpy as np
from _common import DATA, REPO, machine_line, measure, splice_section, today

DOC = REPO / "docs" / "scale.md"
RESULTS = REPO / "docs" / "results" / "scale.json"
DIM = 384
HNMINE = str(REPO / ".venv" / "bin" / "hnmine")


def sentences_file(root: Path) -> Path:
    """Sentences of the shared sets, one per line (the passages are made of them)."""
    out = root / "sentences.txt.gz"
    if out.exists():
        return out
    sentences = []
    for name in ("scifact", "nfcorpus", "medline-glasgow", "cacm"):
        with gzip.open(DATA / name / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line).get("text") or ""
                sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 40 <= len(s.strip()) <= 300]
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(sentences))
    return out


def clustered_embeddings(path: Path, n: int, seed: int = 0, block: int = 100_000) -> None:
    """n seeded unit vectors around 4096 random centres, written block by block (bounded memory)."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4096, DIM)).astype(np.float32)
    matrix = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, block):
        m = min(block, n - start)
        points = centres[rng.integers(0, 4096, m)] + rng.normal(scale=0.6, size=(m, DIM)).astype(np.float32)
        matrix[start:start + m] = points / np.linalg.norm(points, axis=1, keepdims=True)
    matrix.flush()
    del matrix
    path.with_suffix(".tmp.npy").rename(path)


def measured(cmd: list[str], log: Path) -> dict:
    """Seconds and peak RSS (MB) of one stage process, measured as every script measures (`_common.measure`)."""
    result = measure(cmd, log, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result['rc']}); see {result['stderr_path']}")
    return {"seconds": round(result["wall_s"], 2), "peak_rss_mb": round(result["peak_rss"] / 2**20, 1)}


def manifest_stats(path: Path) -> dict:
    return json.loads(path.read_text())["stats"]


def run_size(root: Path, n_docs: int, n_queries: int, ann: list[str]) -> dict:
    from bench_gpu import build_inputs

    folder = root / f"{n_docs}"
    inputs = folder / "inputs"
    if not (inputs / "qrels.tsv").exists():
        build_inputs(sentences_file(root), n_docs, n_queries, inputs)
    embeddings = folder / "embeddings.npy"
    clustered_embeddings(embeddings, n_docs)
    data = ["--corpus", str(inputs / "corpus.parquet"), "--queries", str(inputs / "queries.parquet"),
            "--qrels", str(inputs / "qrels.tsv")]
    work = folder / "work"
    figures: dict = {"docs": n_docs, "queries": n_queries}
    stages = [
        ("index", [HNMINE, "index", "-w", str(work), "-q", *data, "--embeddings", str(embeddings)]),
        ("mine", [HNMINE, "mine", "-w", str(work), "-q", *data, "--top-k", "50"]),
        ("score", [HNMINE, "score", "-w", str(work), "-q"]),
        ("filter", [HNMINE, "filter", "-w", str(work), "-q", "--rank-min", "6", "--num-negatives", "5"]),
        ("export", [HNMINE, "export", "-w", str(work), "-q", "--format", "n-tuple"]),
    ]
    for name, cmd in stages:
        figures[name] = measured(cmd, folder / f"{name}.log")
        print(n_docs, name, figures[name], flush=True)
    figures["mine"]["stats"] = {k: v for k, v in manifest_stats(work / "candidates.manifest.json").items()
                                if k in ("queries", "candidates", "dense_search")}
    for factory in ann:
        ann_work = folder / f"work-{factory.replace(',', '_')}"
        cmd = [HNMINE, "index", "-w", str(ann_work), "-q", *data, "--embeddings", str(embeddings),
               "--faiss-factory", factory, "--recall-sample", "1000"]
        result = measured(cmd, folder / f"index-{factory.replace(',', '_')}.log")
        stats = manifest_stats(ann_work / "index" / "dense" / "manifest.json")
        result |= {"recall@10": stats.get("recall@10"), "build_seconds": stats.get("faiss_build_seconds"),
                   "search": stats.get("recall_search"), "rerank": stats.get("recall_rerank", 0)}
        result["wider"] = wider_recall(ann_work, factory)
        figures[f"index {factory}"] = result
        print(n_docs, factory, result, flush=True)
    return figures


def wider_recall(work: Path, factory: str) -> dict:
    """recall@10 of the saved index with wider search settings than mine's defaults (same sample)."""
    from hnmine.retrievers import embedding_store, faiss_index
    from hnmine.retrievers.imported import recall_at_k

    embeddings = embedding_store.load_embeddings(work / "index" / "dense")
    index = faiss_index.load_faiss(work / "index" / "dense", factory, embeddings)
    settings = [("efSearch", 512)] if "HNSW" in factory else [("nprobe", 64), ("nprobe", 256)]
    out = {}
    for name, value in settings:
        searcher = faiss_index.FaissSearch(index, "cpu", value if name == "nprobe" else 16, value if name == "efSearch" else 128,
                                           embeddings, faiss_index.rerank_factor(factory))
        out[f"{name} {value}"] = recall_at_k(searcher, embeddings, k=10, sample=1000)["recall@10"]
    return out


def ann_factories(n_docs: int) -> list[str]:
    nlist = int(2 ** round(np.log2(4 * np.sqrt(n_docs))))  # about 4 sqrt(n) lists
    return ["HNSW32", f"IVF{nlist},PQ48"]


def write_doc(results: list[dict], args) -> None:
    lines = [
        f"- Command: `.venv/bin/python scripts/bench_scale.py --root DIR --sizes {' '.join(map(str, args.sizes))} "
        f"--queries {args.queries}`",
        f"- Machine: {machine_line()}, no GPU; date {today()}",
        f"- {args.queries} queries at every size; embeddings: {DIM}-d, random but seeded and clustered, imported with "
        "`--embeddings` (float32); mine: exact search (Flat), top 50; score: none; filter: ranks 6+, 5 negatives; "
        "export: n-tuple. Each stage is its own process; peak RSS is that process's.",
        "",
        "| docs | index (import) | mine | score | filter | export |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [f"{r[s]['seconds']:.1f} s / {r[s]['peak_rss_mb']:.0f} MB" for s in ("index", "mine", "score", "filter", "export")]
        lines.append(f"| {r['docs']:,} | " + " | ".join(cells) + " |")
    lines += ["", "Approximate indexes, recall@10 against exact search (1000 sampled corpus vectors as queries, "
              "each one's own document left out), with mine's default search parameters:", "",
              "| docs | index | build | whole index stage | peak RSS | recall@10 | wider search |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for key, v in r.items():
            if key.startswith("index "):
                search = v.get("search") or {}
                params = f"efSearch {search.get('ef_search')}" if "HNSW" in key else f"nprobe {search.get('nprobe')}"
                if v.get("rerank"):
                    params += f", {v['rerank']} x k re-scored exactly"
                wider = ", ".join(f"{k}: {x}" for k, x in (v.get("wider") or {}).items())
                lines.append(f"| {r['docs']:,} | `{key[6:]}` ({params}) | {v['build_seconds']} s | {v['seconds']:.1f} s | "
                             f"{v['peak_rss_mb']:.0f} MB | {v['recall@10']} | {wider} |")
    body = "\n".join(lines)
    splice_section(DOC, "scale", body, title="hnmine at scale")
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--no-ann", action="store_true", help="skip the HNSW and IVF-PQ indexes")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the sizes and stages run now in docs/results/scale.json (with --no-ann, each "
                             "size keeps its earlier approximate-index figures)")
    parser.add_argument("--report-only", action="store_true",
                        help="write docs/scale.md from docs/results/scale.json (the sizes a run cut short finished)")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(RESULTS.read_text())["results"]
        args.sizes = [r["docs"] for r in results]
        write_doc(results, args)
        return
    args.root.mkdir(parents=True, exist_ok=True)
    earlier = {r["docs"]: r for r in json.loads(RESULTS.read_text())["results"]} if args.merge and RESULTS.exists() else {}
    results = dict(earlier)
    for n in args.sizes:
        results[n] = {**earlier.get(n, {}), **run_size(args.root, n, args.queries, [] if args.no_ann else ann_factories(n))}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"machine": platform.platform(), "results": [results[k] for k in sorted(results)]},
                                      indent=2))
    args.sizes = sorted(results)
    write_doc([results[k] for k in sorted(results)], args)


if __name__ == "__main__":
    main()
