"""Rescoring benchmarks, written into docs/benchmarks.md between `<!-- BEGIN rescoring -->` and END.

1. Quality: on scifact test, the AUC with which a score separates labeled positives from the top-30
   dense candidates of the same query, for the offline cross-encoder and for the retriever's score.
2. Cross-encoder throughput on nfcorpus pairs (positives + top-30 dense candidates): hnmine's score
   stage with the torch and ONNX backends, beside the loop `mine_hard_negatives` runs to rescore
   (one `CrossEncoder.predict` per query, then one for all positives), on the same pairs.
3. Judge throughput: the local SmolLM2 judge (transformers) and the http judge against a real
   llama.cpp server on loopback, on the same pairs.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_rescoring.py [--auc-queries 100] [--speed-queries 8] [--judge-pairs 60]

Every run is timed after the model is loaded; hnmine's figures are the stage's own
`pairs_per_second` (model time only, the cache write included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from _common import (
    DATA,
    JUDGE_ALIAS,
    REPO,
    LlamaServer,
    beir_subset,
    load_beir,
    machine_line,
    splice_section,
    today,
)

DOC = REPO / "docs" / "benchmarks.md"


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting one half (Mann-Whitney)."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    both = np.concatenate([positive, negative])
    ranks = np.empty(len(both))
    order = np.argsort(both, kind="stable")
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average ranks of ties
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def mined_workdir(root: Path, dataset: str, split: str, queries: int, top_k: int, seed: int = 0) -> tuple[Path, dict]:
    """index + mine over a seeded sample of a BEIR split's queries (the whole corpus)."""
    from hnmine.config import DataParams, IndexParams, MineParams
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine

    source = load_beir(dataset, split)
    labeled = sorted(source.qrels)
    chosen = set(np.random.default_rng(seed).choice(labeled, size=min(queries, len(labeled)), replace=False).tolist())
    beir = beir_subset(DATA / dataset, root / f"{dataset}-beir", chosen, split=split)
    workdir = root / f"{dataset}-work"
    data = DataParams(beir=beir, split=split)
    index(workdir, data, IndexParams(), progress=False)
    mine(workdir, data, MineParams(top_k=top_k), progress=False)
    return workdir, {"queries": len(chosen), "docs": len(source.doc_ids)}


def scored_table(workdir: Path) -> pl.DataFrame:
    from hnmine.io.files import read_table

    return pl.from_arrow(read_table(workdir / "scored.arrow"))


def fresh_copy(workdir: Path, name: str) -> Path:
    target = workdir.parent / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(workdir, target)
    shutil.rmtree(target / "cache", ignore_errors=True)
    return target


def quality(root: Path, queries: int) -> tuple[list[str], dict]:
    from hnmine.config import ScoreParams
    from hnmine.stages.score import score

    workdir, info = mined_workdir(root, "scifact", "test", queries, top_k=30)
    result = score(workdir, ScoreParams(scorer="cross-encoder", backend="onnx", top=30), progress=False)
    table = scored_table(workdir)
    pos, neg = table.filter(pl.col("is_positive")), table.filter(~pl.col("is_positive"))
    ce = auc(pos["ce_logit"].to_numpy(), neg["ce_logit"].to_numpy())
    dense = auc(pos["dense_score"].to_numpy(), neg["dense_score"].to_numpy())
    per_query = {"ce": [], "dense": []}
    for _, group in table.group_by("query_id"):
        p, n = group.filter(pl.col("is_positive")), group.filter(~pl.col("is_positive"))
        per_query["ce"].append(auc(p["ce_logit"].to_numpy(), n["ce_logit"].to_numpy()))
        per_query["dense"].append(auc(p["dense_score"].to_numpy(), n["dense_score"].to_numpy()))
    lines = [
        f"scifact test, {info['queries']} queries (seeded sample of the labeled ones), {info['docs']} documents; "
        f"{pos.height} labeled positives against {neg.height} top-30 dense candidates (all-MiniLM-L6-v2, exact search).",
        "",
        "| score | AUC, pooled | AUC, mean over queries |",
        "|---|---|---|",
        f"| cross-encoder ms-marco-MiniLM-L-12-v2 (offline int8 ONNX), logit | **{ce:.3f}** | {np.nanmean(per_query['ce']):.3f} |",
        f"| retriever: dense cosine (all-MiniLM-L6-v2) | {dense:.3f} | {np.nanmean(per_query['dense']):.3f} |",
        "",
        "AUC = the chance that a labeled positive outscores a candidate of the same run (ties count one half). "
        "Candidates hold unlabeled positives too, so neither score can reach 1. "
        f"The cross-encoder scored {result.stats['pairs_scored_now']} pairs at {result.stats['pairs_per_second']} pairs/s.",
    ]
    return lines, workdir


def throughput(root: Path, queries: int) -> list[str]:
    import torch
    from sentence_transformers import CrossEncoder

    from hnmine.config import ScoreParams
    from hnmine.io.files import read_table
    from hnmine.packaged.resolve import resolve_model
    from hnmine.stages.score import score

    workdir, info = mined_workdir(root, "nfcorpus", "test", queries, top_k=30)
    rows = []
    for backend in ("onnx", "torch"):
        copy = fresh_copy(workdir, f"nfcorpus-{backend}")
        result = score(copy, ScoreParams(scorer="cross-encoder", backend=backend, top=30), progress=False)
        rows.append((f"hnmine `score --scorer cross-encoder --backend {backend}`", result.stats["pairs_scored_now"],
                     result.stats["pairs_per_second"]))
        print(rows[-1], flush=True)

    # mine_hard_negatives' rescoring loop (sentence_transformers/util/hard_negatives.py, v6.2):
    # one predict per query over its candidates, then one over all (query, positive) pairs.
    candidates = pl.from_arrow(read_table(workdir / "candidates.arrow"))
    queries_table = pl.from_arrow(read_table(workdir / "queries.arrow"))
    corpus = pl.from_arrow(read_table(workdir / "corpus.arrow"))
    from hnmine.text import document_text

    doc_text = dict(zip(corpus["doc_id"], (document_text(t, x) for t, x in zip(corpus["title"], corpus["text"]))))
    query_text = dict(zip(queries_table["query_id"], queries_table["text"]))
    model = CrossEncoder(resolve_model("ms-marco-MiniLM-L-12-v2"), device="cpu")
    per_query, positives = [], []
    for qid, group in candidates.group_by("query_id", maintain_order=True):
        qid = qid[0]
        cands = group.filter(~pl.col("is_positive") & (pl.col("rank") <= 30))["doc_id"].to_list()
        per_query.append([(query_text[qid], doc_text[d]) for d in cands])
        positives += [(query_text[qid], doc_text[d]) for d in group.filter(pl.col("is_positive"))["doc_id"].to_list()]
    began = time.perf_counter()
    for pairs in per_query:
        model.predict(pairs, batch_size=32, convert_to_tensor=True)
    model.predict(positives, batch_size=32, convert_to_tensor=True)
    seconds = time.perf_counter() - began
    n_pairs = sum(map(len, per_query)) + len(positives)
    rows.append(("`mine_hard_negatives` rescoring loop (sentence-transformers CrossEncoder, torch)", n_pairs,
                 round(n_pairs / seconds, 2)))
    base = rows[-1][2]
    lines = [
        f"nfcorpus test, {info['queries']} queries (seeded sample), positives + top-30 dense candidates; batch 32, max length 512, "
        f"torch {torch.__version__}, {os.cpu_count()} threads.",
        "",
        "| runtime | pairs | pairs/s | vs mine_hard_negatives |",
        "|---|---|---|---|",
        *[f"| {name} | {n} | {rate} | {rate / base:.2f}x |" for name, n, rate in rows],
    ]
    return lines, workdir


def judge_throughput(workdir: Path, n_pairs: int) -> list[str]:
    """Both judge backends on the same pairs: the first n of the scifact table (positives and candidates)."""
    from hnmine import prompts
    from hnmine.io.files import read_table
    from hnmine.scorers import judge
    from hnmine.text import document_text

    table = scored_table(workdir).filter(pl.col("is_positive") | (pl.col("rank") <= 2)).head(n_pairs)
    corpus = pl.from_arrow(read_table(workdir / "corpus.arrow"))
    doc_text = dict(zip(corpus["doc_id"], (document_text(t, x) for t, x in zip(corpus["title"], corpus["text"]))))
    queries = pl.from_arrow(read_table(workdir / "queries.arrow"))
    query_text = dict(zip(queries["query_id"], queries["text"]))
    pairs = [(query_text[q], doc_text[d]) for q, d in zip(table["query_id"], table["doc_id"])]
    prompt = {"system": prompts.DEFAULT_SYSTEM, "template": prompts.DEFAULT_TEMPLATE, "instruction": prompts.DEFAULT_INSTRUCTION}
    rows = []
    local = judge.LocalJudge("SmolLM2-135M-Instruct", batch_size=16, **prompt)
    local.score(pairs[:2])
    began = time.perf_counter()
    values = local.score(pairs)
    rows.append(("local: transformers, SmolLM2-135M-Instruct (dequantized GGUF), batch 16",
                 len(pairs) / (time.perf_counter() - began), int(np.isnan(values).sum())))
    server = LlamaServer(Path(tempfile.mkdtemp())).start()
    try:
        http = judge.HttpJudge(server.base_url, JUDGE_ALIAS, concurrency=2, **prompt)
        began = time.perf_counter()
        values = http.score(pairs)
        rows.append(("http: llama-cpp-python 0.3.36 server on loopback, SmolLM2-135M-Instruct Q4_1 GGUF",
                     len(pairs) / (time.perf_counter() - began), int(np.isnan(values).sum())))
    finally:
        server.kill()
    return [
        f"{len(pairs)} scifact test pairs (positives and top-2 candidates), the default prompt, documents up to "
        "the judge's max length.",
        "",
        "| backend | pairs/s | pairs with neither yes nor no among the top tokens |",
        "|---|---|---|",
        *[f"| {name} | {rate:.2f} | {nan} |" for name, rate, nan in rows],
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--auc-queries", type=int, default=100)
    parser.add_argument("--speed-queries", type=int, default=8)
    parser.add_argument("--judge-pairs", type=int, default=60)
    parser.add_argument("--skip-judge", action="store_true")
    parser.add_argument("--root", type=Path, default=None, help="work folder to use (and reuse: finished stages are kept)")
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="hnmine-rescoring-"))
    root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    quality_lines, scifact_workdir = quality(root, args.auc_queries)
    print("\n".join(quality_lines), flush=True)
    speed_lines, _ = throughput(root, args.speed_queries)
    judge_lines = [] if args.skip_judge else judge_throughput(scifact_workdir, args.judge_pairs)
    body = "\n".join([
        "- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_rescoring.py "
        f"--auc-queries {args.auc_queries} --speed-queries {args.speed_queries} --judge-pairs {args.judge_pairs}`",
        f"- Machine: {machine_line(packages=('torch',))}; 1-minute load average at start / end: "
        f"{load:.2f} / {os.getloadavg()[0]:.2f}",
        f"- Date: {today()}",
        "", "### Does the cross-encoder separate positives from hard candidates better than the retriever?", "",
        *quality_lines, "", "### Cross-encoder throughput", "", *speed_lines,
        *(["", "### Judge throughput", "", *judge_lines] if judge_lines else []),
    ])
    splice_section(DOC, "rescoring", body, heading="Rescoring: cross-encoder and LLM judge")
    print(body)
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
