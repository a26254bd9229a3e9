"""Do pooled evaluation subsets (`export --format beir-subset`) rank models as the full corpus does?
For docs/benchmarks.md.

For scifact test and nfcorpus test: `hnmine index` (dense all-MiniLM-L6-v2 and BM25), `mine
--retriever hybrid --top-k 100` (the pool: each retriever's top 100 and their fusion), and the
beir-subset export of each retriever's top --depth. Three systems are evaluated on the full corpus and on the subset with the same
code and the full qrels: BM25 (bm25s, built over the evaluated corpus), the base all-MiniLM-L6-v2,
and all-MiniLM-L6-v2 fine-tuned for one epoch on hnmine's negatives of scifact train (dense top 50,
ranks 3 and below, 3 negatives, MultipleNegativesRankingLoss) - a model that built no part of
the pool. Per system: nDCG@10 (graded) on both, and the evaluation's seconds (indexing or encoding
the corpus, then searching). Dense models encode at most 128 tokens, on both.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_subsets.py [--depth 10] [--root DIR]

The full corpus's figures are cached in the root (they do not depend on --depth).

Writes docs/benchmarks.md between `<!-- BEGIN subsets -->` and `<!-- END subsets -->`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _common import DATA, load_beir, machine_line, splice_section  # noqa: E402  (scripts/ is on sys.path)

DOC = REPO / "docs" / "benchmarks.md"
SETS = ("scifact", "nfcorpus")
DEPTH = 100  # mined per query and retriever; the subset takes the top --depth of each
MAX_LENGTH = 128  # dense models encode at most this many tokens, on the full corpus and the subset alike


def pooled_subset(root: Path, name: str, depth: int) -> tuple[Path, dict]:
    from hnmine.config import DataParams, ExportParams, IndexParams, MineParams
    from hnmine.stages.export import export
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine

    data = DataParams(beir=DATA / name, split="test")
    work = root / name / "work"
    index(work, data, IndexParams(retrievers=["dense", "bm25"]), progress=True)
    mine(work, data, MineParams(retriever="hybrid", top_k=DEPTH), progress=True)
    folder = root / name / f"subset-{depth}"
    result = export(work, ExportParams(format="beir-subset", subset_depth=depth, output=folder), progress=False)
    return folder, result.stats


def fine_tuned(root: Path) -> Path:
    """all-MiniLM-L6-v2 after one epoch on hnmine's scifact train negatives (cached in root)."""
    out = root / "fine-tuned"
    if (out / "config.json").exists():
        return out
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from hnmine.config import DataParams, ExportParams, FilterParams, MineParams, ScoreParams
    from hnmine.packaged.resolve import resolve_model
    from hnmine.stages.export import export
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    work = root / "scifact-train"
    if not (work / "corpus.arrow").exists():  # the same corpus as scifact test: its index, copied
        shutil.copytree(root / "scifact" / "work", work, ignore=shutil.ignore_patterns("candidates*", "queries*", "qrels*",
                                                                                       "export", "scored*", "negatives*"))
    data = DataParams(beir=DATA / "scifact", split="train")
    mine(work, data, MineParams(top_k=50), progress=True)
    score(work, ScoreParams(), progress=False)
    filter_stage(work, FilterParams(rank_min=3, num_negatives=3), progress=False)
    train_file = export(work, ExportParams(format="n-tuple"), progress=False).outputs["train"]
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = 128
    args = SentenceTransformerTrainingArguments(output_dir=str(root / "checkpoints"), num_train_epochs=1, seed=1,
                                                per_device_train_batch_size=32, learning_rate=2e-5, warmup_steps=0.1,
                                                report_to="none", save_strategy="no", use_cpu=True, logging_steps=10)
    train = load_dataset("parquet", data_files=str(train_file), split="train")
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model)).train()
    model.save(str(out))
    return out


def bm25_run(beir) -> dict[str, list[str]]:
    from hnmine.config import IndexParams
    from hnmine.retrievers.bm25 import BM25Index

    p = IndexParams()
    index = BM25Index.build(beir.texts, method=p.bm25_method, k1=p.bm25_k1, b=p.bm25_b, stemmer=p.bm25_stemmer,
                            stopwords=p.bm25_stopwords)
    queries = list(beir.qrels)
    positions, _ = index.search([beir.query_text[q] for q in queries], 10)
    return {q: [beir.doc_ids[i] for i in row if i >= 0] for q, row in zip(queries, positions)}


def dense_run(model, beir) -> dict[str, list[str]]:
    model.max_seq_length = MAX_LENGTH
    queries = list(beir.qrels)
    docs = model.encode(beir.texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    vectors = model.encode([beir.query_text[q] for q in queries], batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True)
    top = np.argsort(-(vectors @ docs.T), axis=1, kind="stable")[:, :10]
    return {q: [beir.doc_ids[i] for i in row] for q, row in zip(queries, top)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "work" / "bench-subsets")
    parser.add_argument("--depth", type=int, default=10, help="the subset: each retriever's top DEPTH per query")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from hnmine.metrics import ndcg_at_k
    from hnmine.packaged.resolve import resolve_model

    began = time.perf_counter()
    subsets = {name: pooled_subset(args.root, name, args.depth) for name in SETS}
    models = {"all-MiniLM-L6-v2": resolve_model("all-MiniLM-L6-v2"), "fine-tuned on scifact train": str(fine_tuned(args.root))}
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_subsets.py --depth {args.depth}`",
        f"- Machine: {machine_line()}",
        f"- Subset: `hnmine mine --retriever hybrid --top-k {DEPTH}` (all-MiniLM-L6-v2 and BM25), then "
        f"`hnmine export --format beir-subset --subset-depth {args.depth}` (each query's positives and the top "
        f"{args.depth} of each retriever and of their fusion); every system is evaluated with the full qrels (nDCG@10, graded); "
        f"dense models encode at most {MAX_LENGTH} tokens.",
        "",
        "| set | corpus documents (full → subset) | system | nDCG@10 full | nDCG@10 subset | rank full → subset | "
        "seconds full → subset |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SETS:
        folder, stats = subsets[name]
        full, sub = load_beir(name), load_beir(folder)
        rows = []
        for system in ("BM25", *models):
            figures = {}
            for label, beir in (("full", full), ("subset", sub)):
                cached = args.root / name / f"full-{system.replace(' ', '-')}.json"
                if label == "full" and cached.exists():  # the full corpus's figures do not depend on --depth
                    figures[label] = tuple(json.loads(cached.read_text()))
                    continue
                start = time.perf_counter()
                if system == "BM25":
                    run = bm25_run(beir)
                else:
                    model = SentenceTransformer(models[system], device="cpu")
                    run = dense_run(model, beir)
                figures[label] = (ndcg_at_k(run, full.qrels, 10), time.perf_counter() - start)
                if label == "full":
                    cached.write_text(json.dumps(figures[label]))
            rows.append((system, figures))
        order = {label: [s for s, _ in sorted(rows, key=lambda r: -r[1][label][0])] for label in ("full", "subset")}
        for system, figures in rows:
            lines.append(f"| {name} test | {len(full.doc_ids)} → {len(sub.doc_ids)} ({100 * len(sub.doc_ids) / len(full.doc_ids):.0f} %) "
                         f"| {system} | {figures['full'][0]:.4f} | {figures['subset'][0]:.4f} | "
                         f"{order['full'].index(system) + 1} → {order['subset'].index(system) + 1} | "
                         f"{figures['full'][1]:.1f} → {figures['subset'][1]:.1f} |")
        print(f"{name}: order kept: {order['full'] == order['subset']} ({order['full']} / {order['subset']})", flush=True)
    lines.insert(2, f"- {time.perf_counter() - began:.0f} s in all, the two subsets' mining and the fine-tuning included")
    body = "\n".join(lines)
    print(body)
    if not args.no_doc:
        splice_section(DOC, "subsets", body, heading="Evaluation subsets: the same order in a fraction of the corpus")


if __name__ == "__main__":
    main(sys.argv[1:])
