"""False negatives of hnmine's filter recipes on nfcorpus test, for docs/quality.md.

The protocol of issue 4 and of scripts/bench_vs_st.py: nfcorpus test (about 38 graded positives per
query), all-MiniLM-L6-v2, one positive per query visible (its first qrels line), the others hidden;
5 negatives per query. For each recipe: the false-negative rate (kept negatives that are labeled
positives of their query, by id or by identical text), the share of queries that keep all 5, and
the median retriever rank of the kept negatives (so cleanliness is not bought with easy negatives).

index, mine (top 50) and score (cross-encoder over the top --ce-top) run once; every recipe is then
a filter + export rerun on the same work dir, timed.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_quality.py [--ce-top 30] [--queries N]

Writes docs/quality.md between `<!-- BEGIN quality -->` and `<!-- END quality -->`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
DATA = REPO.parent / "shared" / "data"
DOC = REPO / "docs" / "quality.md"
BEGIN, END = "<!-- BEGIN quality -->", "<!-- END quality -->"

# (name, filter options, what it is)
RECIPES = [
    ("top-5", {"near_duplicate": 0}, "no filter: the 5 best-ranked candidates (as mine_hard_negatives top-5)"),
    ("nv-retriever", {"score": "dense_score", "max_relative": 0.95},
     "TopK-PercPos 95% on the retriever score (configs/nv-retriever.toml)"),
    ("rocketqa", {"rank_max": "CE", "max_probability": 0.1}, "cross-encoder probability below 0.1 (configs/rocketqa.toml)"),
    ("ce-margin-0", {"rank_max": "CE", "margin": 0.0}, "cross-encoder logit below the lowest positive's"),
    ("ce-margin-3", {"rank_max": "CE", "margin": 3.0}, "cross-encoder logit 3 below the lowest positive's"),
    ("ce-prob-0.1-skip-5", {"rank_min": 6, "rank_max": "CE", "max_probability": 0.1},
     "ranks 6 and below, cross-encoder probability below 0.1"),
    ("ce-prob-0.02", {"rank_max": "CE", "max_probability": 0.02}, "cross-encoder probability below 0.02"),
    ("ce-prob-0.02-pad", {"rank_max": "CE", "max_probability": 0.02, "short_queries": "pad"},
     "the same, short queries padded with random non-positive documents"),
    ("recommended", {"rank_min": 12, "rank_max": "CE", "max_probability": 0.02, "margin": -2.0},
     "configs/recommended.toml: ranks 12-30, CE probability below 0.02 and logit below the positive's + 2"),
]


def prepare(root: Path, max_queries: int | None):
    from conftest import read_jsonl, read_qrels, write_beir

    source = DATA / "nfcorpus"
    qrels = [r for r in read_qrels(source / "qrels" / "test.tsv") if r[2] >= 1]
    visible: dict[str, str] = {}
    for q, d, _ in qrels:
        visible.setdefault(q, d)
    if max_queries:
        visible = dict(list(visible.items())[:max_queries])
    labeled: dict[str, set[str]] = {}
    for q, d, _ in qrels:
        if q in visible:
            labeled.setdefault(q, set()).add(d)
    corpus = read_jsonl(source / "corpus.jsonl.gz")
    queries = [q for q in read_jsonl(source / "queries.jsonl.gz") if q["_id"] in visible]
    beir = write_beir(root / "beir", corpus, queries, [(q, d, 1) for q, d in visible.items()])
    return beir, labeled


def measure(workdir: Path, labeled: dict[str, set[str]]) -> dict:
    from hnmine.io.files import read_table

    kept = pl.from_arrow(read_table(workdir / "negatives.arrow"))
    corpus = pl.from_arrow(read_table(workdir / "corpus.arrow", ["doc_id", "text_hash"]))
    hash_of = dict(zip(corpus["doc_id"], corpus["text_hash"]))
    labeled_hashes = {q: {hash_of[d] for d in ds if d in hash_of} for q, ds in labeled.items()}
    false = sum(d in labeled[q] or hash_of[d] in labeled_hashes[q] for q, d in zip(kept["query_id"], kept["doc_id"]))
    per_query = kept.group_by("query_id").len()
    ranks = kept.filter(pl.col("rank").is_not_null())["rank"]
    return {"negatives": kept.height, "fn_rate": false / kept.height if kept.height else None,
            "full": per_query.filter(pl.col("len") >= 5).height, "queries": len(labeled),
            "median_rank": float(ranks.median()) if ranks.len() else None,
            "padded": int(kept["padded"].sum()) if "padded" in kept.columns else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ce-top", type=int, default=30)
    parser.add_argument("--queries", type=int, default=None, help="first N queries only (a quick look)")
    parser.add_argument("--root", type=Path, default=None, help="work folder to use and reuse (finished stages are kept)")
    args = parser.parse_args()

    from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams
    from hnmine.stages.export import export
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    root = args.root or Path(tempfile.mkdtemp(prefix="hnmine-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    beir, labeled = prepare(root, args.queries)
    workdir = root / "work"
    data = DataParams(beir=beir, split="test")
    began = time.perf_counter()
    index(workdir, data, IndexParams(), progress=False)
    mine(workdir, data, MineParams(top_k=50), progress=False)
    scored = score(workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=args.ce_top), progress=False)
    setup_seconds = time.perf_counter() - began
    rows = []
    for name, options, what in RECIPES:
        options = {k: (args.ce_top if v == "CE" else v) for k, v in options.items()}
        t = time.perf_counter()
        filter_stage(workdir, FilterParams(num_negatives=5, **options), progress=False)
        export(workdir, ExportParams(format="n-tuple"), progress=False)
        seconds = time.perf_counter() - t
        rows.append((name, options, what, measure(workdir, labeled), seconds))
        print(name, rows[-1][3], f"{seconds:.2f}s", flush=True)

    def pct(v):
        return "—" if v is None else f"{100 * v:.1f} %"

    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_quality.py --ce-top {args.ce_top} [--root DIR]"
        + (f" --queries {args.queries}`" if args.queries else "`"),
        f"- Machine: {os.cpu_count()}-core CPU, Python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}",
        f"- nfcorpus test: {len(labeled)} queries, one positive visible each, {sum(map(len, labeled.values())) - len(labeled)} "
        f"hidden labeled positives; dense all-MiniLM-L6-v2 top 50; cross-encoder (offline int8 ONNX "
        f"ms-marco-MiniLM-L-12-v2) over the top {args.ce_top} and the positives: {scored.stats.get('pairs_scored_now')} pairs. "
        (f"index + mine + score: {setup_seconds:.0f} s" if setup_seconds > 5 else "index + mine + score: reused from an "
         "earlier run in the same --root") + "; each recipe below reruns only filter + export, in-process.",
        "",
        "| recipe | filter options | false negatives | queries with 5 negatives | median rank of kept negatives | filter + export rerun |",
        "|---|---|---|---|---|---|",
    ]
    for name, options, what, m, seconds in rows:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items()) or "(defaults)"
        full = f"{m['full']}/{m['queries']} ({100 * m['full'] / m['queries']:.0f} %)"
        pads = f", {m['padded']} padded" if m["padded"] else ""
        lines.append(f"| {name}: {what} | `{opts}` | {pct(m['fn_rate'])} | {full}{pads} | {m['median_rank']} | {seconds:.2f} s |")
    body = "\n".join(lines)
    text = DOC.read_text() if DOC.exists() else f"# Quality of the negatives\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(f"{head}{BEGIN}\n{body}\n{END}{rest.split(END, 1)[1]}")
    print(body)


if __name__ == "__main__":
    main()
