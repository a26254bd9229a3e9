"""In-batch false negatives per epoch on nfcorpus train: random batches, sentence-transformers'
NoDuplicatesBatchSampler, and hnmine's batch plans, for docs/quality.md.

The training set of scripts/train_eval.py's nfcorpus protocol: a seeded sample of nfcorpus train
queries, one visible positive each (its first qrels line), the recommended recipe's 3 negatives,
one n-tuple row per query. hnmine knows the visible positives, the candidates the cross-encoder
rates >= 0.9 (`filter --likely-positive 0.9`) and the near copies of positives (cosine >= 0.95);
the other labeled train positives are hidden from it and count what each batching leaves.

For each batching and epoch (seed), over every batch: the (anchor, other row) pairs where a document
of the other row (its positive or a negative, which MultipleNegativesRankingLoss scores against the
anchor) is a positive of the anchor's query: by the labels hnmine knew, by its likely positives, and
by the hidden labels; and the share of anchors with at least one hidden positive among their
in-batch candidates.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_batches.py [--train-queries 300] [--epochs 5] [--root DIR]

`--root` holds the work dir (index, mine and score are reused from there, so pointing it at a
scripts/train_eval.py root of the same sample saves the cross-encoder's time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _common import machine_line, splice_section  # noqa: E402  (scripts/ is on sys.path)
from train_eval import RECOMMENDED, nf_beir, nf_protocol  # noqa: E402

DOC = REPO / "docs" / "quality.md"


def mined_workdir(root: Path, proto, batch_size: int):
    """The work dir, filtered with the recommended recipe (3 negatives) plus likely positives; and
    the plain and planned n-tuple exports."""
    from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams
    from hnmine.stages.export import export
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    beir = nf_beir(proto, root / "beir")
    work = root / "work"
    data = DataParams(beir=beir, split="train")
    index(work, data, IndexParams(retrievers=["dense"]), progress=True)
    mine(work, data, MineParams(retriever="dense", top_k=50), progress=True)
    score(work, ScoreParams(scorer="cross-encoder", backend="onnx", top=40, max_length=256), progress=True)
    filter_stage(work, FilterParams(num_negatives=3, likely_positive=0.9, **RECOMMENDED), progress=False)
    out = root / "batches"
    exports = {"plain": export(work, ExportParams(format="n-tuple", output=out / "plain.parquet"), progress=False)}
    for plan in ("no-false-negatives", "clustered"):
        exports[plan] = export(work, ExportParams(format="n-tuple", output=out / f"{plan}.parquet", batch_plan=plan,
                                                  batch_size=batch_size), progress=False)
    return work, exports


def text_keys(work: Path) -> dict[str, int]:
    from hnmine.io.files import read_table

    corpus = pl.from_arrow(read_table(work / "corpus.arrow", ["doc_id", "text_hash"]))
    return dict(zip(corpus["doc_id"].to_list(), corpus["text_hash"].to_list()))


def count(batches, queries, docs, positives) -> tuple[int, int]:
    """(anchor, other row) pairs with a positive of the anchor's query among the other row's
    documents, and the anchors with at least one."""
    pairs = anchors = 0
    for rows in batches:
        for i in rows:
            own = positives.get(queries[i], frozenset())
            hits = sum(1 for j in rows if j != i and not own.isdisjoint(docs[j]))
            pairs += hits
            anchors += hits > 0
    return pairs, anchors


def no_duplicates_batches(train_file: Path, batch_size: int, seed: int) -> list[list[int]]:
    from datasets import load_dataset

    try:  # sentence-transformers 6; 3-5 from .sampler
        from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
    except ImportError:
        from sentence_transformers.sampler import NoDuplicatesBatchSampler
    import torch

    dataset = load_dataset("parquet", data_files=str(train_file), split="train")
    generator = torch.Generator().manual_seed(seed)
    sampler = NoDuplicatesBatchSampler(dataset, batch_size=batch_size, drop_last=False, generator=generator, seed=seed)
    sampler.set_epoch(seed)
    return [list(b) for b in sampler]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "work" / "bench-batches")
    parser.add_argument("--train-queries", type=int, default=300)
    parser.add_argument("--subset-seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="seeds of the random and no-duplicates samplers")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    from hnmine.exports.batch_plan import plan_batches, random_batches
    from hnmine.exports.sampler import read_plan
    from hnmine.io.files import read_table

    began = time.perf_counter()
    proto = nf_protocol(args.train_queries, args.subset_seed)
    work, exports = mined_workdir(args.root, proto, args.batch_size)
    key_of = text_keys(work)
    plain_ids = pl.read_parquet(exports["plain"].outputs["ids"])

    def rows_of(ids: pl.DataFrame):
        queries = ids["query_id"].to_list()
        docs = [frozenset(key_of[d] for d in row) for row in
                ids.select("positive_id", *[c for c in ids.columns if c.startswith("negative_")]).iter_rows()]
        return queries, docs

    dropped = pl.from_arrow(read_table(work / "dropped.arrow")).filter(pl.col("dropped_by") == "likely_positive")
    known = {q: frozenset({key_of[d]}) for q, d in proto.visible.items()}
    likely: dict[str, set[int]] = {}
    for q, d in zip(dropped["query_id"], dropped["doc_id"]):
        likely.setdefault(q, set()).add(key_of[d])
    hidden = {q: frozenset(key_of[d] for d in ds if d in key_of and d != proto.visible[q]) for q, ds in proto.labeled.items()}
    labels = {"known": known, "likely": {q: frozenset(v) for q, v in likely.items()}, "hidden": hidden}

    results = []
    plain_rows = rows_of(plain_ids)
    for name, make in (("random batches (shuffled sampler)", lambda s: random_batches(plain_ids.height, args.batch_size, s)),
                       ("sentence-transformers NoDuplicatesBatchSampler",
                        lambda s: no_duplicates_batches(exports["plain"].outputs["train"], args.batch_size, s))):
        per_epoch = [{k: count(make(seed), *plain_rows, v) for k, v in labels.items()} | {"batches": make(seed)}
                     for seed in range(1, args.epochs + 1)]
        results.append((name, per_epoch, plain_ids.height))
    for plan in ("no-false-negatives", "clustered"):
        ids = pl.read_parquet(exports[plan].outputs["ids"])
        batches = read_plan(exports[plan].outputs["ids"])
        rows = rows_of(ids)
        results.append((f"hnmine `--batch-plan {plan}`", [{k: count(batches, *rows, v) for k, v in labels.items()}
                                                          | {"batches": batches}], ids.height))
    # the same rows planned as export plans them when the qrels name every labeled train positive
    everything = {q: known[q] | hidden.get(q, frozenset()) for q in known}
    per_epoch = []
    for seed in range(1, args.epochs + 1):
        made = plan_batches(*plain_rows, everything, args.batch_size, seed)
        grouped: dict[int, list[int]] = {}
        for row, batch in enumerate(made.batch):
            grouped.setdefault(batch, []).append(row)
        batches = list(grouped.values())
        per_epoch.append({k: count(batches, *plain_rows, v) for k, v in labels.items()} | {"batches": batches})
    results.append(("hnmine's no-false-negatives plan, had the qrels named every labeled train positive",
                    per_epoch, plain_ids.height))

    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_batches.py --train-queries {args.train_queries} "
        f"--epochs {args.epochs} --batch-size {args.batch_size}`",
        f"- Machine: {machine_line()}; {time.perf_counter() - began:.0f} s in all",
        f"- Training set: {plain_ids.height} n-tuple rows of {args.train_queries} nfcorpus train queries (`--subset-seed "
        f"{args.subset_seed}`, scripts/train_eval.py's sample), one visible positive each, the recommended recipe's 3 "
        f"negatives; batches of {args.batch_size}. Likely positives: {dropped.height} candidates at cross-encoder "
        f"probability >= 0.9. Hidden: the {sum(len(v) for v in hidden.values())} other labeled train positives of "
        "these queries, which no batching sees.",
        "- Each cell: (anchor, other row in its batch) pairs where a document of the other row is a positive of the "
        "anchor's query, per epoch (mean over the epochs for the samplers; an exported plan is the same batches every "
        "epoch). The last row plans the same rows with every labeled train positive blocked (a seed per epoch): "
        "what the plan does for a user whose qrels are complete.",
        "",
        "| batching | batches (full) | known positives | likely positives | hidden positives | anchors with a hidden "
        "positive in the batch |",
        "|---|---|---|---|---|---|",
    ]
    def mean(per_epoch, key, part):
        return sum(e[key][part] for e in per_epoch) / len(per_epoch)

    for name, per_epoch, rows in results:
        full = sum(sum(len(b) == args.batch_size for b in e["batches"]) for e in per_epoch) / len(per_epoch)
        batches = sum(len(e["batches"]) for e in per_epoch) / len(per_epoch)
        lines.append(f"| {name} | {batches:.0f} ({full:.0f}) | {mean(per_epoch, 'known', 0):.1f} | "
                     f"{mean(per_epoch, 'likely', 0):.1f} | {mean(per_epoch, 'hidden', 0):.1f} | "
                     f"{100 * mean(per_epoch, 'hidden', 1) / rows:.1f} % |")
    body = "\n".join(lines)
    print(body)
    if not args.no_doc:
        splice_section(DOC, "batches", body, heading="In-batch false negatives: batch plans")


if __name__ == "__main__":
    main(sys.argv[1:])
