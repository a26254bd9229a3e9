"""False negatives of the shipped recipe over candidates pooled from several retrievers, for docs/quality.md.

The protocol of scripts/bench_quality.py --sets on nfcorpus test: one positive per query visible (its
first qrels line), the other labeled positives hidden (they count false negatives); 5 negatives per
query; the cross-encoder over the top --ce-top. The arms differ only in where the top-50 candidates
come from:

  dense    all-MiniLM-L6-v2 alone (the packaged model; what bench_quality measures)
  pooled   reciprocal-rank fusion of all-MiniLM-L6-v2, BM25 and minilm-static (a static model
           distilled from the packaged MiniLM: hnmine.packaged.static_model), in one candidates file

and, with --arms, bm25 or static alone. For each: the recipe's false-negative rate, top-5's, queries
full, the median fused rank of the kept negatives, and, for the pooled arm, how often a candidate is a
hidden positive by how many retrievers found it (`found_by`: provenance as a false-negative signal).

Each arm's work dir is ROOT/SET-ARM; the cross-encoder's score cache is carried from one arm to the
next, so a pair is scored once. A rerun reuses every finished stage.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_pooling.py --root DIR [--arms dense pooled]

Writes docs/quality.md between `<!-- BEGIN quality:pooling -->` and `<!-- END quality:pooling -->`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _common import machine_line, splice_section  # noqa: E402  (this folder is on sys.path)
from bench_quality import DATA, DOC, measure, prepare  # noqa: E402
from train_eval import recipe_options  # noqa: E402

# arm -> (the indexes it needs: (name, model, retrievers), mine options)
ARMS = {
    "dense": ([("", "all-MiniLM-L6-v2", ["dense"])], {"retriever": "dense"}),
    "bm25": ([("", "all-MiniLM-L6-v2", ["bm25"])], {"retriever": "bm25"}),
    "static": ([("", "all-MiniLM-L6-v2", ["bm25"]), ("static", "minilm-static", ["dense"])],
               {"retriever": "pooled", "pool": ["static", "bm25"]}),
    "pooled": ([("", "all-MiniLM-L6-v2", ["dense", "bm25"]), ("static", "minilm-static", ["dense"])],
               {"retriever": "pooled", "pool": ["dense", "bm25", "static"]}),
}
DESCRIBED = {"dense": "all-MiniLM-L6-v2 alone", "bm25": "BM25 alone",
             "static": "minilm-static and BM25 fused (a static model is no retriever alone)",
             "pooled": "all-MiniLM-L6-v2 + BM25 + minilm-static, reciprocal-rank fusion"}


def run_arm(arm: str, folder: Path, beir: Path, split: str, labeled, ce_top: int, previous: Path | None) -> dict:
    from train_eval import recipe_options

    from hnmine.config import DataParams, FilterParams, IndexParams, MineParams, ScoreParams
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    workdir = folder / "work"
    if previous is not None and (previous / "cache").is_dir():  # the pairs scored so far: never twice
        shutil.copytree(previous / "cache", workdir / "cache", dirs_exist_ok=True)
    data = DataParams(beir=beir, split=split)
    indexes, mine_options = ARMS[arm]
    began = time.perf_counter()
    for name, model, retrievers in indexes:
        index(workdir, data, IndexParams(name=name, model=model, retrievers=retrievers), progress=True)
    mined = mine(workdir, data, MineParams(top_k=50, **mine_options), progress=True)
    scored = score(workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=ce_top), progress=True)
    measured = {}
    for recipe, options in (("top-5", {"near_duplicate": 0, "duplicate_negatives": 0}),
                            ("recommended", recipe_options("recommended"))):
        filter_stage(workdir, FilterParams(num_negatives=5, **options), progress=False)
        measured[recipe] = measure(workdir, labeled)
    return {"arm": arm, "measured": measured, "candidates": mined.stats["candidates"], "score_stats": scored.stats, "provenance": provenance(workdir, labeled, ce_top),
            "seconds": round(time.perf_counter() - began, 1)}


def provenance(workdir: Path, labeled, ce_top: int) -> list[dict] | None:
    """Among the scored candidates (ranks 1..ce_top), the share that are hidden positives, by found_by."""
    from hnmine.io.files import read_table

    candidates = pl.from_arrow(read_table(workdir / "candidates.arrow"))
    if "found_by" not in candidates.columns or candidates["found_by"].max() < 2:
        return None
    rows = candidates.filter(~pl.col("is_positive") & (pl.col("rank") <= ce_top))
    hidden = pl.DataFrame([(q, d) for q, ds in labeled.items() for d in ds], schema=["query_id", "doc_id"], orient="row")
    rows = rows.join(hidden.with_columns(pl.lit(True).alias("_hidden")), on=["query_id", "doc_id"], how="left")
    table = rows.group_by("found_by").agg(pl.len().alias("candidates"), pl.col("_hidden").is_not_null().sum().alias("hidden"))
    return table.sort("found_by").to_dicts()


def write_doc(results: list[dict], args, queries: int) -> None:
    def pct(v):
        return "—" if v is None else f"{100 * v:.1f} %"

    lines = [f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_pooling.py --root DIR --arms {' '.join(args.arms)}`",
             f"- Machine: {machine_line()}",
             f"- nfcorpus test, {queries} queries, one positive each visible, the other labeled positives hidden (they count "
             f"false negatives); top 50 candidates per query, the cross-encoder over ranks 1-{args.ce_top} of each arm's "
             "own (fused) ranking; 5 negatives per query; the shipped recipe is configs/recommended.toml's rule for the negatives.",
             "",
             "| candidates from | recipe false negatives | top-5 false negatives | queries with 5 | median rank of "
             "kept | cross-encoder pairs |",
             "|---|---|---|---|---|---|"]
    for r in results:
        rec, top = r["measured"]["recommended"], r["measured"]["top-5"]
        lines.append(f"| {r['arm']}: {DESCRIBED[r['arm']]} | {pct(rec['fn_rate'])} | {pct(top['fn_rate'])} | "
                     f"{rec['full']}/{rec['queries']} | {rec['median_rank']} | {r['score_stats'].get('pairs')} |")
    pooled = next((r for r in results if r["provenance"]), None)
    if pooled:
        lines += ["", f"Provenance in the {pooled['arm']} arm: of its candidates at ranks 1-{args.ce_top}, the share that "
                  "are hidden positives, by how many of the three retrievers found them:", "",
                  "| found by | candidates | hidden positives | share |", "|---|---|---|---|"]
        for row in pooled["provenance"]:
            lines.append(f"| {row['found_by']} | {row['candidates']} | {row['hidden']} | "
                         f"{pct(row['hidden'] / row['candidates'] if row['candidates'] else None)} |")
        lines += ["", "`found_by` is a column of candidates.arrow; no filter rule reads it yet."]
    body = "\n".join(lines)
    splice_section(DOC, "quality:pooling", body, heading="Candidates pooled from several retrievers")
    print(body, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["dense", "pooled"])
    parser.add_argument("--set", default="nfcorpus", help="a development set in ../shared/data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ce-top", type=int, default=40)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    base = args.root / f"{args.set}-{args.split}"
    beir, labeled = prepare(base, None, DATA / args.set, args.split)
    results, previous = [], None
    for arm in args.arms:
        folder = args.root / f"{args.set}-{args.split}-{arm}"
        cached = folder / "result.json"
        # the recipe too: a changed configs/recommended.toml is measured again, never read from the cache
        settings = {"ce_top": args.ce_top, "arm": ARMS[arm][1], "recipe": recipe_options("recommended")}
        if cached.exists() and json.loads(cached.read_text()).get("settings") == settings:
            result = json.loads(cached.read_text())["result"]
        else:
            result = run_arm(arm, folder, beir, args.split, labeled, args.ce_top, previous)
            cached.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
        results.append(result)
        previous = folder / "work"
        write_doc(results, args, len(labeled))


if __name__ == "__main__":
    main()
