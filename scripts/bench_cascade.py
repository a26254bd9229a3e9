"""False negatives of a judge cascade against the cross-encoder alone and the judge alone, for docs/quality.md.

The protocol of scripts/bench_quality.py --sets on nfcorpus test (one positive per query visible, its
first qrels line; the other labeled positives hidden: they count false negatives; dense top 50 with
all-MiniLM-L6-v2; 5 negatives per query), on a seeded sample of --queries queries, because the
packaged judge (SmolLM2-135M-Instruct served by llama.cpp, the http judge) answers about one pair a
second on a laptop CPU. Three teachers judge the same candidates (ranks 1-40, plus each positive):

  cross-encoder   the offline ms-marco-MiniLM-L-12-v2 on every candidate
  judge           the judge on every candidate
  cascade top-m   the cross-encoder on every candidate, the judge only on each query's m candidates
                  the cross-encoder rates highest (and the positives): `score --cascade judge --cascade-top m`

and three filter recipes read them (each keeps 5 negatives per query):

  veto            ranks 1-40, drop a candidate whose probability (ce_prob, judge_score, or the cascade's
                  decided_prob) is above t, keep the 5 best-ranked survivors: the teacher alone decides
  top-clean+veto  train_eval.py's top-clean (cross-encoder logit below the positive's + 2, ranks 1-40,
                  best-ranked 5) with the veto; for the judge alone, the veto only
  shipped+veto    configs/recommended.toml's rule for the negatives with the veto; for the judge alone, the veto only

The veto's t is either given (--thresholds; 0.5: the teacher says yes more than no) or chosen per
teacher without labels so that it vetoes a share q of the candidates at ranks 1-40 (--shares): the
teachers' probabilities are on different scales, and at the same q a lower false-negative rate means
the teacher picked the right candidates, not more of them (for a cascade, only where its judge vetoes
part of its band, not all of it: the band column says).

For each: the false-negative rate, queries with 5, the median rank of the kept negatives, and the
judge calls against judging every candidate. Each teacher's ranking of hidden positives over the
other candidates (ROC AUC, ranks 1-40) says how well it tells them apart at any threshold.

One work dir (ROOT/work) holds every run; the scores of both teachers are cached there, so the
cascade's judge calls are read from the judge-alone run's cache and a rerun scores nothing.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_cascade.py --root DIR [--queries 40] [--seed 0]

Writes docs/quality.md between `<!-- BEGIN quality:cascade -->` and `<!-- END quality:cascade -->`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _common import JUDGE_ALIAS, LlamaServer, machine_line, splice_section  # noqa: E402  (this folder is on sys.path)
from bench_quality import DATA, DOC, measure, prepare  # noqa: E402
from train_eval import RECOMMENDED, TOP_CLEAN, _qrels_lines  # noqa: E402

WINDOW = 40
NEGATIVES = 5


def recipes(teacher: str, threshold: float) -> dict[str, dict]:
    """The filter options of each recipe for a teacher ("cross-encoder", "judge" or "cascade")."""
    veto = {"max_probability": threshold}
    hardest = {"rank_min": 1, "rank_max": WINDOW, "sampling": "top"}
    if teacher == "judge":  # no cross-encoder scores: the judge's veto is the whole rule
        return {"veto": hardest | veto, "top-clean+veto": hardest | veto, "shipped+veto": hardest | veto}
    return {"veto": hardest | veto, "top-clean+veto": TOP_CLEAN | veto, "shipped+veto": RECOMMENDED | veto}


def sample_queries(split: str, count: int, seed: int) -> set[str]:
    qrels = next(p for p in (DATA / "nfcorpus" / "qrels" / f"{split}.tsv", DATA / "nfcorpus" / "qrels" / f"{split}.tsv.gz")
                 if p.exists())
    ids = sorted({q for q, _, rel in _qrels_lines(qrels) if rel >= 1})
    return set(random.Random(seed).sample(ids, count))


def window(workdir: Path) -> pl.DataFrame:
    """The scored candidates at ranks 1..WINDOW (no positives), read once per teacher: every share
    below is taken over them."""
    from hnmine.io.files import read_table

    rows = pl.from_arrow(read_table(workdir / "scored.arrow"))
    return rows.filter(~pl.col("is_positive") & (pl.col("rank") <= WINDOW))


def hidden_auc(rows: pl.DataFrame, column: str, labeled: dict[str, set[str]]) -> float | None:
    """ROC AUC of `column` for hidden positives against the other candidates."""
    rows = rows.filter(pl.col(column).is_not_null())
    hidden = np.array([d in labeled.get(q, ()) for q, d in zip(rows["query_id"], rows["doc_id"])])
    if hidden.all() or not hidden.any():
        return None
    ranks = rows[column].rank("average").to_numpy()
    positives = int(hidden.sum())
    return float((ranks[hidden].sum() - positives * (positives + 1) / 2) / (positives * (len(hidden) - positives)))


def vetoed(rows: pl.DataFrame, column: str, threshold: float) -> float:
    """Share of the candidates whose `column` is above the threshold or missing (what the
    max_probability and unscored_probability rules drop)."""
    return float((rows[column].fill_null(np.inf) > threshold).mean())  # unanswered: the filter drops them too


def share_threshold(rows: pl.DataFrame, column: str, share: float) -> float:
    """The probability above which `share` of the candidates lie (the rule drops probabilities above
    it): a veto threshold chosen without labels, so that teachers on different scales veto as many
    candidates (ties at the threshold are kept)."""
    values = rows[column].fill_null(0.0).to_numpy()
    return float(np.sort(values)[::-1][min(int(round(share * len(values))), len(values) - 1)])


def band_vetoed(rows: pl.DataFrame, threshold: float) -> float | None:
    """Of the candidates a cascade's judge decided, the share it vetoes: near 1, the row is the
    cross-encoder's own veto of its top m, whatever the judge thinks."""
    band = rows.filter(pl.col("decided_by") == "judge")
    return float((band["judge_score"] > threshold).mean()) if band.height else None


def run_teacher(teacher: str, band: int | None, workdir: Path, labeled, thresholds, shares, judge_options: dict) -> dict:
    from hnmine.config import FilterParams, ScoreParams
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.score import score

    base = {"top": WINDOW, "backend": "onnx"}
    if teacher == "cross-encoder":
        params = ScoreParams(scorer="cross-encoder", **base)
    elif teacher == "judge":
        params = ScoreParams(scorer="judge", **base, **judge_options)
    else:
        params = ScoreParams(scorer="cross-encoder", cascade="judge", cascade_top=band, **base, **judge_options)
    began = time.perf_counter()
    scored = score(workdir, params, progress=True)
    probability = {"cross-encoder": "ce_prob", "judge": "judge_score", "cascade": "decided_prob"}[teacher]
    rows = window(workdir)
    score_column = {"cross-encoder": "ce_logit", "judge": "judge_score"}.get(teacher)  # a cascade mixes the two
    result = {"teacher": teacher, "band": band, "score_stats": {k: v for k, v in scored.stats.items() if not k.startswith("_")},
              "auc": {score_column: hidden_auc(rows, score_column, labeled)} if score_column else {},
              "by_threshold": {}}
    vetoes = [(str(t), t) for t in thresholds]
    for q in shares:
        at = share_threshold(rows, probability, q)
        vetoes.append((f"top {100 * q:g} % (t {at:.3g})", at))
    for label, threshold in vetoes:
        measured = {}
        for recipe, options in recipes(teacher, threshold).items():
            filter_stage(workdir, FilterParams(num_negatives=NEGATIVES, **options), progress=False)
            measured[recipe] = measure(workdir, labeled)
        result["by_threshold"][label] = {"vetoed": vetoed(rows, probability, threshold), "recipes": measured,
                                         "band_vetoed": band_vetoed(rows, threshold) if teacher == "cascade" else None}
    result["seconds"] = round(time.perf_counter() - began, 1)
    return result


def write_doc(results: list[dict], args, queries: int, candidates: int) -> None:
    def pct(v):
        return "—" if v is None else f"{100 * v:.1f} %"

    def calls(r):
        stats = r["score_stats"]
        if r["teacher"] == "cross-encoder":
            return "0"
        judged = stats["judge_candidates"] if r["teacher"] == "cascade" else candidates
        return f"{judged} ({pct(judged / candidates)})"

    names = {"cross-encoder": "cross-encoder alone", "judge": "judge alone"}
    lines = [f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_cascade.py --root DIR --queries {args.queries} "
             f"--seed {args.seed}`",
             f"- Machine: {machine_line()}",
             f"- nfcorpus test, {queries} queries sampled with seed {args.seed}, one positive each visible, the other "
             f"labeled positives hidden (they count false negatives); dense top 50 (all-MiniLM-L6-v2), ranks 1-{WINDOW} "
             f"judged ({candidates} candidates); the cross-encoder is the offline ms-marco-MiniLM-L-12-v2, the judge the "
             "packaged SmolLM2-135M-Instruct through llama.cpp (`--judge-backend http`, P(yes) after the default prompt).",
             "- Recipes (5 negatives each): **veto** drops a candidate whose probability (the teacher's) is above t and "
             "keeps the 5 best-ranked survivors of ranks 1-40; **top-clean+veto** adds the veto to train_eval.py's "
             "top-clean (logit below the positive's + 2, best-ranked 5); **shipped+veto** adds it to "
             "configs/recommended.toml's rule for the negatives. With the judge alone there is no logit, so those two are "
             "the veto alone. "
             "t is 0.5 (the teacher says yes more than no), or each teacher's own probability above which its top q of "
             "the candidates lie (no labels), so that the teachers veto as many candidates.",
             "", "| teacher | judge calls on candidates | veto at | vetoed at ranks 1-40 | share of its band the judge vetoes | veto | "
             "top-clean+veto | shipped+veto |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = names.get(r["teacher"], f"cascade, judge on the cross-encoder's top {r['band']}")
        for threshold, row in r["by_threshold"].items():
            cells = [f"{pct(m['fn_rate'])} ({m['full']}/{m['queries']} full, rank {m['median_rank']})"
                     for m in row["recipes"].values()]
            lines.append(f"| {name} | {calls(r)} | {threshold} | {pct(row['vetoed'])} | {pct(row['band_vetoed'])} | "
                         + " | ".join(cells) + " |")
    aucs = {c: a for r in results for c, a in r["auc"].items()}
    lines += ["", "Each cell: false negatives among the kept negatives (queries with 5, median dense rank of the kept). "
              "The band column is the share of the judge's band (its candidates) that it vetoes: near 100 %, the "
              "cascade row is the cross-encoder's own veto of its top m per query, not the judge's judgement. "
              "How well each teacher ranks the hidden positives above the other candidates at ranks 1-40 (ROC AUC, "
              "0.5 is chance): " + ", ".join(f"{'cross-encoder logit' if c == 'ce_logit' else 'judge P(yes)'} "
                                              f"{a:.3f}" for c, a in aucs.items() if a is not None) + "."]
    body = "\n".join(lines)
    splice_section(DOC, "quality:cascade", body, heading="A judge cascade")
    print(body, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=40, help="seeded sample of nfcorpus test queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bands", type=int, nargs="+", default=[5, 10], help="cascade --cascade-top values")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.5], help="veto thresholds t")
    parser.add_argument("--shares", type=float, nargs="*", default=[0.1, 0.25],
                        help="veto shares q: each teacher's t is the probability its top q of the candidates reach")
    args = parser.parse_args()
    from hnmine.config import DataParams, IndexParams, MineParams
    from hnmine.io.files import read_table
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine

    args.root.mkdir(parents=True, exist_ok=True)
    beir, labeled = prepare(args.root, None, DATA / "nfcorpus", "test", sample_queries("test", args.queries, args.seed))
    workdir = args.root / "work"
    data = DataParams(beir=beir, split="test")
    index(workdir, data, IndexParams(model="all-MiniLM-L6-v2", retrievers=["dense"]), progress=True)
    mined = mine(workdir, data, MineParams(top_k=50, retriever="dense"), progress=True)
    candidates = pl.from_arrow(read_table(workdir / "candidates.arrow", ["is_positive", "rank"])).filter(
        ~pl.col("is_positive") & (pl.col("rank") <= WINDOW)).height
    results = [run_teacher("cross-encoder", None, workdir, labeled, args.thresholds, args.shares, {})]
    server = LlamaServer(args.root).start()
    try:
        judge = {"judge_backend": "http", "base_url": server.base_url, "judge_model": JUDGE_ALIAS, "concurrency": 2}
        results.append(run_teacher("judge", None, workdir, labeled, args.thresholds, args.shares, judge))
        results += [run_teacher("cascade", band, workdir, labeled, args.thresholds, args.shares, judge) for band in args.bands]
    finally:
        server.kill()
    (args.root / "results.json").write_text(json.dumps({"mine": mined.stats, "results": results}, indent=1, default=str))
    write_doc(results, args, len(labeled), candidates)


if __name__ == "__main__":
    main()
