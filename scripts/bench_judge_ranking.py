"""Does the local judge rank a labeled positive above a random corpus document? (docs/benchmarks.md)

For each set: a seeded sample of labeled queries, one positive and one random non-positive document
per query; the share of queries whose positive scores higher (ties one half). Both judge modes of
`LocalJudge("SmolLM2-135M-Instruct")`: yes-no (the default prompt) and query-likelihood.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_judge_ranking.py [--queries 40] [--seeds 0 1]

Writes between `<!-- BEGIN judge_ranking -->` and `<!-- END judge_ranking -->`.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from _common import REPO, load_beir, splice_section

DOC = REPO / "docs" / "benchmarks.md"
SETS = ("adi", "scifact", "nfcorpus", "medline-glasgow")


def load(name: str):
    data = load_beir(name, "test")
    return data.text_of(), data.query_text, {q: list(docs) for q, docs in data.qrels.items()}


def sample(data, n_queries: int, seed: int) -> list[tuple[str, str, str]]:
    corpus, queries, positives = data
    rng = random.Random(seed)
    qids = sorted(positives)
    if n_queries < len(qids):
        qids = rng.sample(qids, n_queries)
    doc_ids = sorted(corpus)
    triples = []
    for q in qids:
        positive = rng.choice(sorted(positives[q]))
        other = rng.choice(doc_ids)
        while other in positives[q]:
            other = rng.choice(doc_ids)
        triples.append((queries[q], corpus[positive], corpus[other]))
    return triples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    from hnmine.prompts import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM, DEFAULT_TEMPLATE
    from hnmine.scorers.judge import LocalJudge

    prompt = {"system": DEFAULT_SYSTEM, "template": DEFAULT_TEMPLATE, "instruction": DEFAULT_INSTRUCTION}
    rows = []
    for mode in ("query-likelihood", "yes-no"):
        judge = LocalJudge("SmolLM2-135M-Instruct", batch_size=8, max_length=args.max_length, device="cpu",
                           mode=mode, **prompt)
        for name in SETS:
            data = load(name)
            wins = []
            for seed in args.seeds:
                triples = sample(data, args.queries, seed)
                n = len(triples)
                scores = judge.score([(q, p) for q, p, _ in triples] + [(q, r) for q, _, r in triples])[:, 0]
                wins.append(float(np.mean((scores[:n] > scores[n:]) + 0.5 * (scores[:n] == scores[n:]))))
            rows.append((mode, name, n, wins))
            print(rows[-1], flush=True)
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_judge_ranking.py --queries {args.queries} "
        f"--seeds {' '.join(map(str, args.seeds))}`; date {time.strftime('%Y-%m-%d')}",
        f"- SmolLM2-135M-Instruct (the packaged GGUF, dequantized), max length {args.max_length}, default prompt.",
        "",
        "| judge mode | set | queries | positive beats a random document (per seed) |",
        "|---|---|---|---|",
        *[f"| {mode} | {name} | {n} | {' / '.join(f'{100 * w:.0f} %' for w in wins)} |" for mode, name, n, wins in rows],
    ]
    splice_section(DOC, "judge_ranking", "\n".join(lines), heading="Local judge: positives against random documents")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
