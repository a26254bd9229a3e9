"""Do hnmine's negatives train a better retriever? Fine-tune all-MiniLM-L6-v2 with
MultipleNegativesRankingLoss once per source of negatives, with identical hyper-parameters, rows and
batches per seed, then nDCG@10 and Recall@100. Two protocols:

--protocol nfcorpus (default): nfcorpus train with one visible positive per query (the other labeled
train positives hidden from every arm; they count each arm's false negatives), evaluated on nfcorpus
test and scifact test; arms in NF_ARMS, table `train_eval:nfcorpus` of docs/quality.md:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_eval.py --root DIR --train-queries 300 --seeds-per-arm 5

--protocol scifact: scifact train -> scifact test, the arms below.

Arms (each row is (anchor, positive[, negative_1..k]), one per labeled (query, positive) pair):
  base          no fine-tuning (the starting point)
  none          in-batch negatives only
  bm25-top      hnmine, BM25 top-k negatives (no filter)
  dense-top     hnmine, dense top-k negatives (no filter)
  st-default    sentence-transformers' mine_hard_negatives with its defaults (num_negatives=k)
  hnmine-rec    configs/recommended.toml's rule for the negatives alone (its filter without setting
                likely positives aside, num_negatives=k)
  hnmine-hard   the hardest candidates the cross-encoder calls clearly negative: ranks 1-40, probability
                < 0.001, the top k by rank (tests whether harder negatives train better on scifact)
  hnmine-top-clean  the recommended recipe's false-negative rule (logit below the positive's + 2) over
                ranks 1-40, the top k by rank: the recipe without its rank floor and lowest-score pick
  hnmine-deep-lowest  the same rule over ranks 21-40, the k the cross-encoder rates lowest
                (scripts/select_recipe.py's choice: configs/recommended.toml's rule for the negatives)
  hnmine-relabel  configs/recommended.toml as shipped: that rule with likely positives (cross-encoder
                probability >= 0.9) kept out of the negatives and added as extra (query, candidate,
                negatives) rows: with --paired those rows come in batches of their own after the paired ones
  hnmine-repeat  (--paired, and in NF_ARMS) hnmine-relabel's paired rows, and in its extra batches a copy of the
                query's paired row in place of each extra positive row: hnmine-relabel's optimizer
                steps and queries without its new positives, the control that tells relabeling from
                more training
The two best fine-tuned arms are trained again with a second seed to show the noise.

Stages are cached in --root (hnmine's own manifests; ST's output and each training result as
files), so an interrupted run resumes:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_eval.py --protocol scifact --root /tmp/train-eval [--negatives 3]

Writes docs/quality.md between `<!-- BEGIN train_eval -->` and `<!-- END train_eval -->`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _common import filter_recipe, machine_line, splice_section  # noqa: E402  (this folder is on sys.path)

DATA = REPO.parent / "shared" / "data" / "scifact"
DOC = REPO / "docs" / "quality.md"
BEGIN, END = "<!-- BEGIN train_eval -->", "<!-- END train_eval -->"
ARMS = ["none", "bm25-top", "dense-top", "st-default", "hnmine-rec", "hnmine-hard", "hnmine-top-clean",
        "hnmine-deep-lowest", "hnmine-relabel", "hnmine-repeat"]
# paired arms built from another arm's rows: its extra rows' batches, each row replaced by a copy of
# its query's paired row (the same steps and queries per batch, no new positives)
REPEAT_ARMS = {"hnmine-repeat": "hnmine-relabel"}
# configs/recommended.toml's [filter] as shipped, with k negatives (docs/quality.md: chosen by
# scripts/select_recipe.py, trained with here)
SHIPPED = {k: v for k, v in filter_recipe("recommended").items() if k != "num_negatives"}
# its rule for the negatives alone, without setting likely positives aside; relabeling arms add that
RECOMMENDED = {k: v for k, v in SHIPPED.items() if k != "likely_positive"}
RELABEL = RECOMMENDED | {"likely_positive": SHIPPED.get("likely_positive", 0.9)}
HARD = {"rank_min": 1, "rank_max": 40, "max_probability": 0.001, "sampling": "top"}
# the recommended recipe's false-negative rule (logit below the positive's + 2) without its rank floor
# and with the hardest candidates kept: does its rank floor and lowest-score choice cost training signal?
TOP_CLEAN = {"rank_min": 1, "rank_max": 40, "margin": -2.0, "sampling": "top"}
# what scripts/select_recipe.py chooses on the development sets: the recommended false-negative rule
# over ranks 21-40, the survivors the cross-encoder rates lowest
DEEP_LOWEST = {"rank_min": 21, "rank_max": 40, "margin": -2.0, "sampling": "lowest-score"}
CE_ARMS = ("hnmine-rec", "hnmine-hard", "hnmine-top-clean", "hnmine-deep-lowest", "hnmine-relabel",
           "hnmine-repeat")  # read the cross-encoder's scores


def read_jsonl(path: Path) -> list[dict]:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_qrels(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        if float(s) >= 1:
            rows.append((q, d))
    return rows


def load_data():
    from hnmine.text import document_text

    docs = read_jsonl(DATA / "corpus.jsonl.gz")
    corpus = {str(d["_id"]): document_text(d.get("title"), d.get("text")) for d in docs}
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(DATA / "queries.jsonl.gz")}
    return corpus, queries, read_qrels(DATA / "qrels" / "train.tsv"), read_qrels(DATA / "qrels" / "test.tsv")


def scifact_subset(data: Path, root: Path, train_queries: int, subset_seed: int) -> Path:
    """A BEIR folder under root with scifact train cut to a seeded sample of train_queries of its
    queries (every qrels line of each), the corpus, queries and test qrels linked: the CPU protocol.
    A folder that holds another sample is refused, so a rerun never mixes two training sets."""
    import random

    lines = (data / "qrels" / "train.tsv").read_text().splitlines()
    header, body = lines[0], [line for line in lines[1:] if line.strip()]
    labeled = sorted({line.split("\t")[0] for line in body if float(line.split("\t")[2]) >= 1})
    chosen = set(random.Random(subset_seed).sample(labeled, min(train_queries, len(labeled))))
    text = "\n".join([header, *(line for line in body if line.split("\t")[0] in chosen)]) + "\n"
    folder = root / "beir"
    qrels = folder / "qrels" / "train.tsv"
    if qrels.exists() and qrels.read_text() != text:
        raise SystemExit(f"{folder}: holds another sample of scifact train; pass another --root")
    qrels.parent.mkdir(parents=True, exist_ok=True)
    qrels.write_text(text)
    for name in ("corpus.jsonl.gz", "queries.jsonl.gz", "qrels/test.tsv"):
        if not (folder / name).exists():
            (folder / name).symlink_to((data / name).resolve())
    return folder


MODEL = "all-MiniLM-L6-v2"
DEVICE = "cpu"


def model_path() -> str:
    from hnmine.packaged.resolve import resolve_model

    return resolve_model(MODEL)


# ------------------------------------------------------------------------------------ negatives

def hnmine_arms(root: Path, k: int, ce_top: int, ce_max_length: int, with_cross_encoder: bool = True) -> dict[str, Path]:
    """n-tuple Parquet files from hnmine: BM25 top, dense top, the recommended recipe (ids sidecars too)."""
    from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams
    from hnmine.stages.export import export
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    data = DataParams(beir=DATA, split="train")
    plain = {"num_negatives": k, "near_duplicate": 0, "duplicate_negatives": 0}
    out = {}
    for retriever in ("bm25", "dense"):
        work = root / f"work-{retriever}"
        index(work, data, IndexParams(retrievers=[retriever]), progress=True)
        mine(work, data, MineParams(retriever=retriever, top_k=50), progress=True)
        score(work, ScoreParams(scorer="none"), progress=False)
        filter_stage(work, FilterParams(**plain), progress=False)
        out[f"{retriever}-top"] = export(work, ExportParams(format="n-tuple", output=root / f"{retriever}-top.parquet"),
                                         progress=False).outputs["train"]
    if not with_cross_encoder:
        return out
    work = root / "work-dense"
    began = time.perf_counter()
    scored = score(work, ScoreParams(scorer="cross-encoder", backend="onnx", top=ce_top, max_length=ce_max_length),
                   progress=True)
    print(f"cross-encoder: {scored.stats} in {time.perf_counter() - began:.0f} s", flush=True)
    for arm, recipe in (("hnmine-rec", RECOMMENDED), ("hnmine-hard", HARD), ("hnmine-top-clean", TOP_CLEAN),
                        ("hnmine-deep-lowest", DEEP_LOWEST), ("hnmine-relabel", RELABEL)):
        result = filter_stage(work, FilterParams(num_negatives=k, **recipe), progress=False)
        print(f"{arm} filter:", result.stats, flush=True)
        out[arm] = export(work, ExportParams(format="n-tuple", output=root / f"{arm}.parquet",
                                             extra_positives="likely_positive" in recipe),
                          progress=False).outputs["train"]
    return out


def st_arm(root: Path, k: int, corpus: dict[str, str], queries: dict[str, str], train: list[tuple[str, str]]) -> Path:
    out = root / "st-default.parquet"
    if out.exists():
        return out
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    dataset = Dataset.from_dict({"anchor": [queries[q] for q, _ in train], "positive": [corpus[d] for _, d in train]})
    model = SentenceTransformer(model_path(), device="cpu")
    began = time.perf_counter()
    result = mine_hard_negatives(dataset, model, corpus=list(corpus.values()), num_negatives=k, output_format="n-tuple",
                                 batch_size=32)
    print(f"mine_hard_negatives: {len(result)} rows in {time.perf_counter() - began:.0f} s", flush=True)
    result.to_parquet(str(out))
    return out


def rows_for(arm: str, files: dict[str, Path], k: int, corpus, queries, train) -> list[dict]:
    """One row per labeled (query, positive) pair that the arm has k negatives for."""
    import pyarrow.parquet as pq  # not polars: the GPU machine has pyarrow but no polars

    if arm == "none":
        return [{"anchor": queries[q], "positive": corpus[d]} for q, d in train]
    columns = ["anchor", "positive", *[f"negative_{i}" for i in range(1, k + 1)]]
    return pq.read_table(files[arm], columns=columns).to_pylist()


# ------------------------------------------------------------------------------------ train + eval

def evaluate(model, corpus, queries, test) -> dict:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    relevant: dict[str, set[str]] = {}
    for q, d in test:
        relevant.setdefault(q, set()).add(d)
    evaluator = InformationRetrievalEvaluator(
        queries={q: queries[q] for q in relevant}, corpus=corpus, relevant_docs=relevant, name="scifact-test",
        ndcg_at_k=[10], precision_recall_at_k=[100], accuracy_at_k=[1], mrr_at_k=[10], map_at_k=[100],
        show_progress_bar=False, batch_size=64)
    metrics = evaluator(model)
    return {"ndcg@10": metrics["scifact-test_cosine_ndcg@10"], "recall@100": metrics["scifact-test_cosine_recall@100"]}


def paired_rows(arms: list[str], files: dict[str, Path], k: int, corpus, queries,
                train) -> tuple[dict[str, list[dict]], int, int]:
    """Every arm's rows for the same (query, positive) pairs in the same order: the pairs that every
    arm has negatives for, in scifact's train order. With the same batches (fixed_batches) the arms
    then differ only in their negatives. A relabeling arm's extra positives of those queries follow
    its paired rows; a REPEAT_ARMS arm repeats its source's paired rows in their place. Returns the
    rows per arm (and per source of a repeat arm), how many pairs are paired (each arm's first rows)
    and how many were left out."""
    by_arm = {}
    for arm in dict.fromkeys(REPEAT_ARMS.get(arm, arm) for arm in arms):
        if arm == "none":
            continue
        by_arm[arm] = {(r["anchor"], r["positive"]): r for r in rows_for(arm, files, k, corpus, queries, train)}
    keys = distinct_pairs(corpus, queries, train)
    common = [key for key in keys if all(key in rows for rows in by_arm.values())]
    out = {arm: [by_arm[arm][key] if arm in by_arm else {"anchor": key[0], "positive": key[1]} for key in common]
           for arm in dict.fromkeys([*by_arm, *arms]) if arm not in REPEAT_ARMS}
    known, anchors = set(keys), {anchor for anchor, _ in common}
    for arm, rows in by_arm.items():
        out[arm] += [row for key, row in rows.items() if key not in known and key[0] in anchors]
    for arm in arms:
        if arm in REPEAT_ARMS:
            source = out[REPEAT_ARMS[arm]]
            first = {}
            for row in source[:len(common)]:
                first.setdefault(row["anchor"], row)
            out[arm] = source[:len(common)] + [first[row["anchor"]] for row in source[len(common):]]
    return out, len(common), len(keys) - len(common)


def distinct_pairs(corpus, queries, train) -> list[tuple[str, str]]:
    """scifact train's distinct (query text, positive text) pairs, in train order."""
    return list(dict.fromkeys((queries[q], corpus[d]) for q, d in train))


def fixed_batches(rows: list[dict], seed: int, batch_size: int) -> list[list[int]]:
    """Shuffled batches in which no query and no positive text occurs twice, decided from the
    (anchor, positive) pairs alone, so every arm of a paired run trains on the same batches.
    (sentence-transformers' NO_DUPLICATES sampler also looks at the negatives, which moves rows
    between batches differently for each arm, which alone moves nDCG@10 measurably.)"""
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    batches = []
    while order:
        batch, anchors, positives, later = [], set(), set(), []
        for i in order:
            row = rows[i]
            if len(batch) < batch_size and row["anchor"] not in anchors and row["positive"] not in positives:
                batch.append(i)
                anchors.add(row["anchor"])
                positives.add(row["positive"])
            else:
                later.append(i)
        batches.append(batch)
        order = later
    return batches


def fixed_batch_sampler(batches: list[list[int]]):
    """A batch_sampler for SentenceTransformerTrainingArguments that yields the given batches."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class FixedBatchSampler(DefaultBatchSampler):
        def __iter__(self):
            yield from (list(batch) for batch in batches)

        def __len__(self):
            return len(batches)

    return lambda dataset, **kwargs: FixedBatchSampler(dataset, **kwargs)


def train_arm(arm: str, rows: list[dict], seed: int, args, corpus, queries, test, root: Path,
              batches: list[list[int]] | None = None, tag: str = "") -> dict:
    """Fine-tune from the base model on rows and evaluate. With batches: exactly those batches (a
    paired run, cached as results/pairedPAIRS-ARM-seedN.json, tag naming the paired pairs: the same
    arm and seed over another set of pairs is another run)."""
    result_file = root / "results" / f"{tag}{arm}-seed{seed}.json"
    fingerprint = rows_fingerprint(rows, batches)
    cached = cached_result(result_file, fingerprint)
    if cached:
        return cached
    began = time.perf_counter()
    model = fine_tune(rows if arm != "base" else [], seed, args, batches)
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    metrics = evaluate(model, corpus, queries, test)
    result = {"arm": arm, "seed": seed, "rows": len(rows), "paired": batches is not None, **metrics, "train_s": round(train_seconds, 1),
              "eval_s": round(time.perf_counter() - began, 1), "machine": machine(DEVICE), "python": platform.python_version(),
              "rows_fingerprint": fingerprint}
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    print(result, flush=True)
    del model
    gc.collect()
    return result


def negatives_profile(root: Path) -> list[str]:
    """How hard each arm's negatives are (their rank in hnmine's dense top 50 for the query) and how
    many of mine_hard_negatives' negatives the dense-top arm shares: the check that two arms with the
    same negatives score apart only by training noise."""
    if not (root / "work-dense" / "candidates.arrow").exists():  # a --mined-only run elsewhere
        return []
    import polars as pl
    corpus, queries, train, _ = load_data()
    labeled = pl.DataFrame(train, schema={"query_id": pl.Utf8, "doc_id": pl.Utf8}, orient="row")
    doc_by_text = {text: doc for doc, text in corpus.items()}
    query_by_text = {text: q for q, text in queries.items()}
    ranks = pl.read_ipc(root / "work-dense" / "candidates.arrow").select(["query_id", "doc_id", "rank"])
    arms: dict[str, pl.DataFrame] = {}
    for arm in ("bm25-top", "dense-top", *CE_ARMS):
        if (root / f"{arm}.ids.parquet").exists():
            ids = pl.read_parquet(root / f"{arm}.ids.parquet")
            arms[arm] = ids.unpivot(index=["query_id"], on=[c for c in ids.columns if c.startswith("negative_")],
                                    value_name="doc_id").select(["query_id", "doc_id"])
    if (root / "st-default.parquet").exists():
        st = pl.read_parquet(root / "st-default.parquet")
        arms["st-default"] = pl.DataFrame(
            [{"query_id": query_by_text.get(row["anchor"]), "doc_id": doc_by_text.get(row[c])}
             for row in st.iter_rows(named=True) for c in st.columns if c.startswith("negative_")],
            schema={"query_id": pl.Utf8, "doc_id": pl.Utf8})
    lines = ["", "| arm | negatives | median dense rank (1 = the top non-positive) | outside the dense top 50 | "
                 "labeled positives of their query |", "|---|---|---|---|---|"]
    for arm, frame in arms.items():
        ranked = frame.join(ranks, on=["query_id", "doc_id"], how="left")
        false = frame.join(labeled, on=["query_id", "doc_id"], how="inner").height
        lines.append(f"| {arm} | {frame.height} | {ranked['rank'].median():.0f} | {ranked['rank'].null_count()} | {false} |")
    if "st-default" in arms and "dense-top" in arms:
        st_pairs = arms["st-default"].drop_nulls().unique()
        shared = st_pairs.join(arms["dense-top"].unique(), on=["query_id", "doc_id"], how="inner").height
        lines += ["", f"Of mine_hard_negatives' {st_pairs.height} distinct (query, negative) pairs, {shared} "
                      f"({100 * shared / st_pairs.height:.1f} %) are also dense-top's."]
    return lines


def machine(device: str) -> str:
    return machine_line(device, ["torch"])


def write_doc(results: list[dict], args, mining: dict) -> None:
    import statistics

    by_arm: dict[str, list[dict]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], []).append(r)
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_eval.py --root DIR --negatives {args.negatives} "
        f"--max-seq-length {args.max_seq_length}"
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --seeds-per-arm {args.seeds_per_arm}" if getattr(args, "seeds_per_arm", None) else "")
        + (f" --label {args.label}" if args.label else "") + "`",
        f"- Machine: {machine(args.device)}, Python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}",
        f"- all-MiniLM-L6-v2 fine-tuned on scifact train ({mining['pairs']} labeled pairs, {mining['queries']} queries) with "
        f"MultipleNegativesRankingLoss: {args.epochs} epoch(s), batch {args.batch_size} (no duplicates in a batch), lr "
        f"{args.lr}, warmup 10 %, max_seq_length {args.max_seq_length}, {args.negatives} hard negatives per row (none: "
        "in-batch only); evaluated on scifact test (300 queries, 5183 documents) with InformationRetrievalEvaluator.",
        f"- hnmine-rec: {', '.join(f'{k}={v}' for k, v in RECOMMENDED.items())} (configs/recommended.toml's rule for the negatives), "
        f"cross-encoder (offline int8 ONNX, max_length {args.ce_max_length}) over the dense top {args.ce_top}; "
        f"hnmine-hard: {', '.join(f'{k}={v}' for k, v in HARD.items())} over the same scores.",
        "",
        "| arm | rows | nDCG@10 | Recall@100 | seeds | train + eval |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ["base", *ARMS]:
        runs = by_arm.get(arm, [])
        if not runs:
            continue
        ndcg = [r["ndcg@10"] for r in runs]
        recall = [r["recall@100"] for r in runs]
        spread = f" (±{(max(ndcg) - min(ndcg)) / 2:.4f})" if len(runs) == 2 else ""
        if len(runs) > 2:
            spread = f" (sd {statistics.stdev(ndcg):.4f}, range {min(ndcg):.4f}-{max(ndcg):.4f})"
        seeds = ", ".join(f"{r['seed']}: {r['ndcg@10']:.4f}" for r in runs)
        took = statistics.mean(r["train_s"] + r["eval_s"] for r in runs)
        lines.append(f"| {arm} | {runs[0]['rows']} | {statistics.mean(ndcg):.4f}{spread} | {statistics.mean(recall):.4f} | "
                     f"{seeds} | {took:.0f} s |")
    lines += negatives_profile(args.root)
    body = "\n".join(lines)
    label = f", {args.label}" if args.label else ""
    splice_section(DOC, BEGIN.removeprefix("<!-- BEGIN ").removesuffix(" -->"), body,
                   heading=f"Does it train a better retriever? (scifact{label})")
    print(body)


def paired_summary(runs: dict[int, float], reference: dict[int, float]) -> str:
    """An arm's per-seed difference from mine_hard_negatives' defaults on the same batches: mean,
    standard error, paired t and the seeds it is ahead on. With many seeds the max-min spread of one
    arm grows (about 3.7 standard deviations at 20 seeds), so the paired t says more than the spread."""
    import math
    import statistics

    diffs = [runs[s] - reference[s] for s in sorted(runs) if s in reference]
    ahead = f"{sum(d > 0 for d in diffs)}/{len(diffs)}"
    if len(diffs) < 2:  # no standard error from one seed: three cells all the same
        return f"{diffs[0]:+.4f} | | {ahead}" if diffs else " | | "
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    t = f"{mean / se:.2f}" if se else "—"
    return f"{mean:+.4f} ± {se:.4f} | {t} | {ahead}"


def write_paired_doc(results: list[dict], args, pairs: int, dropped: int, extra: dict[str, int]) -> None:
    """The paired tables: per arm the mean over seeds and its difference from mine_hard_negatives'
    defaults trained on the same batches (mean ± standard error, paired t, seeds ahead), then one row
    per seed. Only seeds every arm finished count (a run cut short ends mid-seed)."""
    import statistics

    by_arm: dict[str, dict[int, dict]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    seeds = sorted(set.intersection(*(set(runs) for runs in by_arm.values())))
    arms = [arm for arm in ["base", *ARMS] if arm in by_arm]
    kept = [by_arm[arm][s] for arm in arms for s in seeds]
    took = statistics.mean(r["train_s"] + r["eval_s"] for r in kept)
    where = kept[0].get("machine") or machine(args.device)
    python = kept[0].get("python") or platform.python_version()
    flags = (" --mined-only" if args.mined_only else "") + (f" --device {args.device}" if args.device != "cpu" else "")
    if args.train_queries:
        flags += f" --train-queries {args.train_queries} --subset-seed {args.subset_seed} --ce-top {args.ce_top}"
    sample = (f"scifact train cut to a seeded sample of {args.train_queries} queries (`--subset-seed {args.subset_seed}`). "
              if args.train_queries else "")
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_eval.py --protocol scifact --root DIR{flags} "
        f"--negatives {args.negatives} --max-seq-length {args.max_seq_length} --paired --seeds-per-arm "
        f"{args.seeds_per_arm} --arms {' '.join(args.arms or ARMS)}"
        + (f" --label {args.label}" if args.label else "") + "` "
        + ("(on the default run's ARM.parquet files, copied into DIR)" if args.mined_only
           else "(mines each arm's negatives into DIR first, or reuses those there)"),
        f"- Machine: {where}{'' if 'Python' in where else f', Python {python}'}; date {time.strftime('%Y-%m-%d')}; {len(seeds)} seeds finished by every "
        f"arm; {took:.0f} s per run on average (train + eval)",
        f"- {sample}The same hyper-parameters as above, but every arm trains on the same {pairs} of the {pairs + dropped} "
        "distinct (query, positive) pairs (the rest have no negatives in some arm) in the same batches for a given seed: "
        "batches of 32 with no query or positive twice, decided before the negatives are attached. Only the negatives "
        "differ between arms of one seed"
        + "".join(f"; {arm} adds {n} rows, " + (f"in {REPEAT_ARMS[arm]}'s extra batches, each a copy of its query's paired "
                                                  "row in place of an extra positive (the same steps, no new positives)"
                                                  if arm in REPEAT_ARMS else
                                                  "its likely positives (cross-encoder probability ≥ 0.9) as extra "
                                                  "positives, in batches of their own after the paired ones")
                  for arm, n in extra.items()) + ".",
        "",
        "| arm | nDCG@10, mean (sd) | nDCG@10, min-max | Recall@100, mean | nDCG@10 minus st-default, same seed: mean ± "
        "standard error | paired t | seeds ahead |" + (" minus none (in-batch only) |" if "none" in arms else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if "none" in arms else ""),
    ]
    ndcg = {arm: {s: by_arm[arm][s]["ndcg@10"] for s in seeds} for arm in arms}
    reference = ndcg.get("st-default", {})
    for arm in arms:
        values = list(ndcg[arm].values())
        sd = f" ({statistics.stdev(values):.4f})" if len(values) > 1 else ""
        recall = statistics.mean(by_arm[arm][s]["recall@100"] for s in seeds)
        versus = paired_summary(ndcg[arm], reference) if arm != "st-default" and reference else " | |"
        if "none" in arms:
            in_batch = _lead_cell(paired_lead(ndcg[arm], ndcg["none"])) if arm not in ("none", "base") else ""
            versus += f" | {in_batch}"
        lines.append(f"| {arm} | {statistics.mean(values):.4f}{sd} | {min(values):.4f}-{max(values):.4f} | {recall:.4f} | "
                     f"{versus} |")
    lines += ["", "nDCG@10 per seed:", "", "| seed | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    lines += [f"| {s} | " + " | ".join(f"{ndcg[arm][s]:.4f}" for arm in arms) + " |" for s in seeds]
    if len(reference) > 1:
        lines += ["", f"Seed-to-seed spread of st-default (max - min over {len(reference)} seeds): "
                      f"{max(reference.values()) - min(reference.values()):.4f}."]
    body = "\n".join(lines)
    marker = f"paired{pairs}" + (f"-{args.label}" if args.label else "")
    splice_section(DOC, f"train_eval:{marker}", body, heading=f"Paired runs over {pairs} pairs: the same batches for every arm")
    print(body, flush=True)


def paired_run(args, files: dict[str, Path], corpus, queries, train, test) -> None:
    """--paired: seeds 1..N outer, arms inner, so a run cut short still has whole seeds; the doc is
    rewritten after every seed."""
    arms = [arm for arm in (args.arms or ARMS) if arm == "none" or REPEAT_ARMS.get(arm, arm) in files]
    rows_by_arm, pairs, dropped = paired_rows(arms, files, args.negatives, corpus, queries, train)
    results = []
    for seed in range(1, (args.seeds_per_arm or 3) + 1):
        batches = fixed_batches(rows_by_arm[arms[0]][:pairs], seed, args.batch_size)
        for arm in arms:
            rows = rows_by_arm[arm]
            # a repeat arm trains in its source's extra batches: its own copies would batch differently
            batched = rows_by_arm[REPEAT_ARMS[arm]] if arm in REPEAT_ARMS else rows
            extra = [[pairs + i for i in batch] for batch in fixed_batches(batched[pairs:], seed, args.batch_size)]
            results.append(train_arm(arm, rows, seed, args, corpus, queries, test, args.root, batches + extra,
                                     tag=f"paired{pairs}-"))
        write_paired_doc(results, args, pairs, dropped,
                         {arm: len(rows_by_arm[arm]) - pairs for arm in arms if len(rows_by_arm[arm]) > pairs})


# ------------------------------------------------------------------------------------ nfcorpus protocol

NFCORPUS = REPO.parent / "shared" / "data" / "nfcorpus"
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
# arms of the nfcorpus protocol; each hnmine-* arm is a filter recipe over the same scored candidates
NF_ARMS = ["none", "st-default", "st-ce-margin", "oracle", "hnmine-rec", "hnmine-rec-6-40", "hnmine-top-clean",
           "hnmine-deep", "hnmine-relabel", "hnmine-repeat", "hnmine-rec-plan"]
# arms that train an NF_RECIPES arm's rows in hnmine's planned batches (export --batch-plan) instead
# of the seed's paired ones
PLANNED_ARMS = {"hnmine-rec-plan": "hnmine-rec-6-40"}
NF_RECIPES = {
    "hnmine-rec": "recommended",
    "hnmine-top-clean": TOP_CLEAN,
    # the recommended false-negative rule, the hardest survivors below dense rank 20 (far from the
    # query's neighbourhood, where nfcorpus' unlabeled positives crowd)
    "hnmine-deep": {"rank_min": 21, "rank_max": 40, "margin": -2.0, "sampling": "top"},
    # the recommended recipe before ranks 21-40 (scripts/select_recipe.py's choice) shipped
    "hnmine-rec-6-40": {"rank_min": 6, "rank_max": 40, "margin": -2.0, "sampling": "lowest-score"},
    # the recommended recipe, and candidates the cross-encoder rates as likely as the positive set
    # aside as extra positives (RocketQA denoising): rows (query, likely positive, negatives) are added
    "hnmine-relabel": "recommended+relabel",
}
# arms whose negatives may leave a query without k of them (an n-tuple export and mine_hard_negatives
# both leave such a query out): they train on the paired batches minus the rows they lack. The paired
# queries are those the other arms (none, st-default, oracle) all fill, so they do not depend on
# the cross-encoder and those arms can train before it has scored.
SPARSE_ARMS = {"st-ce-margin", *NF_RECIPES, *PLANNED_ARMS, *REPEAT_ARMS}
# arms trained on another arm's mined rows (in other batches, or with its extra rows replaced)
NF_SOURCES = PLANNED_ARMS | REPEAT_ARMS
PAIRING_ARMS = ("st-default", "oracle")  # mined in every run, so the paired queries never depend on --arms


@dataclass
class EvalSet:
    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    relevant: dict[str, set[str]]


@dataclass
class NfProtocol:
    """nfcorpus train with one visible positive per query (its first qrels line) and every other
    labeled train positive hidden from every arm; evaluated on nfcorpus test (full qrels) and on
    scifact test (transfer)."""
    corpus: dict[str, str]
    queries: dict[str, str]
    visible: dict[str, str]          # train query -> its visible positive, in qrels order
    labeled: dict[str, set[str]]     # train query -> every labeled train positive (the hidden labels)
    evals: list[EvalSet]
    train_total: int                 # nfcorpus train queries with a positive, before sampling


def _qrels_lines(path: Path) -> list[tuple[str, str, float]]:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()[1:]
    return [(q, d, float(s)) for q, d, s in (line.split("\t") for line in lines if line.strip())]


def _beir(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    from hnmine.text import document_text

    corpus = {str(d["_id"]): document_text(d.get("title"), d.get("text")) for d in read_jsonl(folder / "corpus.jsonl.gz")}
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(folder / "queries.jsonl.gz")}
    return corpus, queries


def _relevant(lines) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for q, d, s in lines:
        if s >= 1:
            out.setdefault(q, set()).add(d)
    return out


def nf_protocol(train_queries: int | None, subset_seed: int) -> NfProtocol:
    """The training queries: all of nfcorpus train, or a seeded sample of train_queries of them (in
    qrels order), each with its first qrels line as the one visible positive."""
    import random

    corpus, queries = _beir(NFCORPUS)
    lines = _qrels_lines(NFCORPUS / "qrels" / "train.tsv.gz")
    visible: dict[str, str] = {}
    for q, d, s in lines:
        if s >= 1 and q in queries and d in corpus:
            visible.setdefault(q, d)
    total = len(visible)
    if train_queries and train_queries < len(visible):
        chosen = set(random.Random(subset_seed).sample(sorted(visible), train_queries))
        visible = {q: d for q, d in visible.items() if q in chosen}
    labeled = {q: ds for q, ds in _relevant(lines).items() if q in visible}
    sci_corpus, sci_queries = _beir(SCIFACT)
    evals = [
        EvalSet("nfcorpus-test", corpus, queries, _relevant(_qrels_lines(NFCORPUS / "qrels" / "test.tsv"))),
        EvalSet("scifact-test", sci_corpus, sci_queries, _relevant(_qrels_lines(SCIFACT / "qrels" / "test.tsv"))),
    ]
    return NfProtocol(corpus, queries, visible, labeled, evals, total)


def nf_beir(proto: NfProtocol, folder: Path) -> Path:
    """A BEIR folder of what every arm may see: the corpus, the training queries, their visible positive."""
    if (folder / "qrels" / "train.tsv").exists():
        return folder
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as out:
        out.writelines(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in proto.corpus.items())
    with open(folder / "queries.jsonl", "w") as out:
        out.writelines(json.dumps({"_id": q, "text": proto.queries[q]}) + "\n" for q in proto.visible)
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in proto.visible.items()))
    return folder


def recipe_options(recipe) -> dict:
    """A recipe's filter options: configs/recommended.toml's rule for the negatives for "recommended",
    with its likely positives set aside for "recommended+relabel"."""
    if isinstance(recipe, dict):
        return dict(recipe)
    return dict(RELABEL if recipe == "recommended+relabel" else RECOMMENDED)


def nf_negatives(proto: NfProtocol, root: Path, k: int, ce_top: int, ce_max_length: int, arms: list[str]) -> dict[str, dict]:
    """Each arm's negatives as {query id: [doc ids]} (and, for relabeling, its extra positives), mined
    from the nfcorpus corpus with only the visible positives: hnmine's stages over one work dir, and
    sentence-transformers' mine_hard_negatives. Every stage is cached in root."""
    import polars as pl

    from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams, ScoreParams
    from hnmine.stages.export import export
    from hnmine.stages.filter import filter_stage
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine
    from hnmine.stages.score import score

    beir = nf_beir(proto, root / "beir")
    data = DataParams(beir=beir, split="train")
    work = root / "work"
    index(work, data, IndexParams(retrievers=["dense"]), progress=True)
    mine(work, data, MineParams(retriever="dense", top_k=50), progress=True)
    score_params = ScoreParams(scorer="cross-encoder", backend="onnx", top=ce_top, max_length=ce_max_length)
    recipes = list(dict.fromkeys([*arms, *(NF_SOURCES[a] for a in arms if a in NF_SOURCES)]))
    if any(arm in NF_RECIPES or arm == "st-ce-margin" for arm in recipes):
        score(work, score_params, progress=True)
    out: dict[str, dict] = {}
    for arm in recipes:
        if arm not in NF_RECIPES:
            continue
        options = recipe_options(NF_RECIPES[arm])
        filter_stage(work, FilterParams(num_negatives=k, **options), progress=False)
        ids_file = root / f"{arm}.ids.parquet"
        export(work, ExportParams(format="ids", output=ids_file, extra_positives="likely_positive" in options),
               progress=False)
        table = pl.read_parquet(ids_file)
        out[arm] = {"negatives": dict(zip(table["query_id"], (list(x) for x in table["negative_ids"]))),
                    "extra_positives": {q: [d for d in ids if d != proto.visible[q]]
                                        for q, ids in zip(table["query_id"], table["positive_ids"])}}
    out |= {arm: out[source] for arm, source in NF_SOURCES.items() if arm in arms}
    candidates = pl.read_ipc(work / "candidates.arrow").select("query_id", "doc_id", "rank").sort("query_id", "rank")
    # the oracle, and st-default below, decide the paired queries (PAIRING_ARMS): mined in every run
    hidden = {q: {proto.corpus[d] for d in ds} for q, ds in proto.labeled.items()}
    oracle: dict[str, list[str]] = {}
    for q, d in zip(candidates["query_id"], candidates["doc_id"]):
        kept = oracle.setdefault(q, [])
        if len(kept) < k and d not in proto.labeled[q] and proto.corpus[d] not in hidden[q]:
            kept.append(d)
    out["oracle"] = {"negatives": {q: ds for q, ds in oracle.items() if len(ds) == k}}
    for arm, options in (("st-default", {}), ("st-ce-margin", {"relative_margin": 0.05, "cross_encoder": "CE"})):
        if arm in arms or arm in PAIRING_ARMS:
            out[arm] = {"negatives": st_negatives(proto, root, arm, k, options, work, score_params)}
    out["_ranks"] = {(q, d): r for q, d, r in candidates.iter_rows()}
    return out


def st_negatives(proto: NfProtocol, root: Path, arm: str, k: int, options: dict, work: Path, score_params) -> dict[str, list[str]]:
    """mine_hard_negatives over the same visible pairs and corpus (its n-tuple output mapped back to
    ids by text), cached as root/ARM.json. "CE" is the cross-encoder hnmine scores with, through the
    work dir's score cache (bench_quality.CachedCrossEncoder)."""
    cached = root / f"{arm}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    from bench_quality import CachedCrossEncoder
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    order = list(proto.visible)
    dataset = Dataset.from_dict({"anchor": [proto.queries[q] for q in order],
                                 "positive": [proto.corpus[proto.visible[q]] for q in order]})
    texts = list(proto.corpus.values())
    id_of_text = {}
    for d, t in proto.corpus.items():
        id_of_text.setdefault(t, d)
    options = {key: (CachedCrossEncoder(work, score_params) if v == "CE" else v) for key, v in options.items()}
    model = SentenceTransformer(model_path(), device="cpu")
    began = time.perf_counter()
    result = mine_hard_negatives(dataset, model, corpus=texts, num_negatives=k, output_format="n-tuple",
                                 batch_size=32, verbose=False, cache_folder=str(root / "st-embeddings"), **options)
    print(f"{arm}: mine_hard_negatives {len(result)} rows in {time.perf_counter() - began:.0f} s", flush=True)
    query_of_text = {proto.queries[q]: q for q in order}
    negatives = {query_of_text[row["anchor"]]: [id_of_text[row[f"negative_{i}"]] for i in range(1, k + 1)]
                 for row in result}
    cached.write_text(json.dumps(negatives))
    return negatives


def nf_rows(proto: NfProtocol, mined: dict[str, dict], arms: list[str], k: int):
    """Paired rows: every arm's row of a query holds the same anchor and visible positive; the queries
    are those every arm outside SPARSE_ARMS has k negatives for, in qrels order. Relabeling arms add
    a row (query, likely positive, the same negatives) per extra positive after the query's row; a
    REPEAT_ARMS arm has its source's rows (mined alike) with each of those replaced by a copy of the
    query's row, marked `_repeat` and `_in_place_of` (the positive it replaces, so that nf_batches puts
    it where the source's row goes): the same steps on the same queries without the new positives."""
    queries = [q for q in proto.visible if all(len(mined[arm]["negatives"].get(q, [])) == k for arm in PAIRING_ARMS)]
    rows: dict[str, list[dict]] = {}
    for arm in arms:
        arm_rows = []
        for q in queries:
            base = {"anchor": proto.queries[q], "positive": proto.corpus[proto.visible[q]], "_query": q}
            if arm == "none":
                arm_rows.append(base)
                continue
            negatives = mined[arm]["negatives"].get(q)
            if not negatives or len(negatives) < k:
                continue  # a sparse arm lacks this row
            negs = {f"negative_{i + 1}": proto.corpus[d] for i, d in enumerate(negatives)}
            arm_rows.append(base | negs | {"_negatives": negatives})
            for extra in mined[arm].get("extra_positives", {}).get(q, []):
                arm_rows.append(base | {"positive": proto.corpus[extra], "_extra": True} | negs | {"_negatives": negatives})
        rows[arm] = arm_rows
    for arm in set(REPEAT_ARMS) & set(rows):
        own = {row["_query"]: row for row in rows[arm] if not row.get("_extra")}
        rows[arm] = [own[row["_query"]] | {"_repeat": True, "_in_place_of": row["positive"]} if row.get("_extra")
                     else row for row in rows[arm]]
    return queries, rows


def planned_batches(proto: NfProtocol, work: Path, rows: list[dict], seed: int, batch_size: int) -> list[list[int]]:
    """hnmine's no-false-negatives plan (hnmine.exports.batch_plan, as `export --batch-plan` makes it)
    over an arm's rows: blocked for a query are its visible positive, the candidates the
    cross-encoder rates >= 0.9 (what `filter --likely-positive 0.9` sets aside) and the near copies
    (cosine >= 0.95) of its positive, all by normalized text."""
    import polars as pl

    from hnmine.exports.batch_plan import blocked_keys, near_copies, plan_batches
    from hnmine.io.files import read_table
    from hnmine.retrievers.embedding_store import load_embeddings

    corpus = pl.from_arrow(read_table(work / "corpus.arrow", ["doc_id", "text_hash"]))
    doc_ids = corpus["doc_id"].to_list()
    key_of = dict(zip(doc_ids, corpus["text_hash"].to_list()))
    scored = pl.from_arrow(read_table(work / "scored.arrow", ["query_id", "doc_id", "is_positive", "ce_prob"]))
    likely = scored.filter(~scored["is_positive"] & (scored["ce_prob"] >= 0.9))
    positives = {q: [d] for q, d in proto.visible.items()}
    for q, d in zip(likely["query_id"], likely["doc_id"]):
        positives.setdefault(q, []).append(d)
    docs = [[proto.visible[r["_query"]], *r.get("_negatives", [])] for r in rows]
    used = list(dict.fromkeys(d for row in docs for d in row))
    near = near_copies(load_embeddings(work / "index" / "dense"), {d: i for i, d in enumerate(doc_ids)},
                       list(proto.visible.values()), used, 0.95)
    blocked = blocked_keys(positives, key_of, near)
    plan = plan_batches([r["_query"] for r in rows], [frozenset(key_of[d] for d in row) for row in docs], blocked,
                        batch_size, seed)
    batches: dict[int, list[int]] = {}
    for row, batch in enumerate(plan.batch):
        batches.setdefault(batch, []).append(row)
    return [batches[b] for b in sorted(batches)]


def nf_batches(queries: list[str], rows: list[dict], seed: int, batch_size: int) -> list[list[int]]:
    """The seed's batches over the paired queries (fixed_batches on the in-batch arm's rows), mapped to
    this arm's row positions: a query's row lands in its query's batch; its extra-positive rows
    (relabeling) in later batches of their own, so no batch holds one query twice, and a repeat arm's
    copies where the rows they replace go; a row the arm lacks leaves its batch one smaller."""
    base = [{"anchor": q, "positive": q} for q in queries]
    plan = fixed_batches(base, seed, batch_size)
    position: dict[str, int] = {}
    extras: list[int] = []
    for i, row in enumerate(rows):
        if row.get("_extra") or row.get("_repeat"):
            extras.append(i)
        else:
            position[row["_query"]] = i
    batches = [[position[queries[j]] for j in batch if queries[j] in position] for batch in plan]
    if extras:
        extra_rows = [{"anchor": rows[i]["_query"], "positive": rows[i].get("_in_place_of", rows[i]["positive"])}
                      for i in extras]
        batches += [[extras[j] for j in batch] for batch in fixed_batches(extra_rows, seed, batch_size)]
    return [b for b in batches if b]


def false_negative_rate(proto: NfProtocol, rows: list[dict]) -> float | None:
    """Share of an arm's negatives that are hidden labeled train positives of their query (by id or text)."""
    total = false = 0
    for row in rows:
        if row.get("_extra") or row.get("_repeat"):
            continue
        hidden_text = {proto.corpus[d] for d in proto.labeled[row["_query"]]}
        for d in row.get("_negatives", []):
            total += 1
            false += d in proto.labeled[row["_query"]] or proto.corpus[d] in hidden_text
    return false / total if total else None


def median_rank(rows: list[dict], ranks: dict) -> float | None:
    import statistics

    found = [ranks.get((r["_query"], d), 51) for r in rows if not (r.get("_extra") or r.get("_repeat"))
             for d in r.get("_negatives", [])]
    return float(statistics.median(found)) if found else None


def evaluate_sets(model, evals: list[EvalSet]) -> dict:
    """nDCG@10 and Recall@100 on each evaluation set (exact search over its whole corpus)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    out = {}
    for ev in evals:
        evaluator = InformationRetrievalEvaluator(
            queries={q: ev.queries[q] for q in ev.relevant}, corpus=ev.corpus, relevant_docs=ev.relevant, name=ev.name,
            ndcg_at_k=[10], precision_recall_at_k=[100], accuracy_at_k=[1], mrr_at_k=[10], map_at_k=[100],
            show_progress_bar=False, batch_size=64)
        metrics = evaluator(model)
        out[f"{ev.name}/ndcg@10"] = metrics[f"{ev.name}_cosine_ndcg@10"]
        out[f"{ev.name}/recall@100"] = metrics[f"{ev.name}_cosine_recall@100"]
    return out


def fine_tune(rows: list[dict], seed: int, args, batches: list[list[int]] | None):
    """all-MiniLM-L6-v2 fine-tuned with MNRL on rows (in exactly these batches when given); rows=[]
    returns the untrained model."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    torch.manual_seed(seed)
    model = SentenceTransformer(model_path(), device=DEVICE)
    model.float()  # a folder saved in fp16 still trains in fp32
    model.max_seq_length = args.max_seq_length
    if rows:
        output = args.root / "checkpoints" / f"run-{os.getpid()}"
        training_args = SentenceTransformerTrainingArguments(
            output_dir=str(output), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_ratio=0.1, seed=seed, data_seed=seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES if batches is None else fixed_batch_sampler(batches),
            save_strategy="no", logging_steps=10, report_to=[], use_cpu=DEVICE == "cpu", dataloader_num_workers=0)
        columns = [c for c in rows[0] if not c.startswith("_")]
        trainer = SentenceTransformerTrainer(model=model, args=training_args,
                                             train_dataset=Dataset.from_list([{c: r[c] for c in columns} for r in rows]),
                                             loss=MultipleNegativesRankingLoss(model))
        trainer.train()
        shutil.rmtree(output, ignore_errors=True)
    return model


def rows_fingerprint(rows: list[dict], batches) -> str:
    """What one (arm, seed) trains on: its rows' texts and their batches. A cached result whose
    fingerprint differs was trained on other negatives (a changed recipe) and is not reused."""
    import hashlib

    texts = [{c: r[c] for c in sorted(r) if not c.startswith("_")} for r in rows]
    return hashlib.blake2b(json.dumps([texts, batches], sort_keys=True).encode(), digest_size=8).hexdigest()


def cached_result(result_file: Path, fingerprint: str) -> dict | None:
    """The result cached in result_file if it was trained on the rows and batches of this
    fingerprint. One of other rows (a changed recipe) moves to results/stale/ and None is returned,
    so the run is trained again."""
    if not result_file.exists():
        return None
    cached = json.loads(result_file.read_text())
    if cached.get("rows_fingerprint", fingerprint) == fingerprint:
        if "rows_fingerprint" not in cached:  # a result saved before fingerprints: these rows made it
            result_file.write_text(json.dumps(cached | {"rows_fingerprint": fingerprint}, indent=2))
        return cached
    stale = result_file.parent / "stale" / f"{result_file.stem}-{cached['rows_fingerprint']}.json"
    stale.parent.mkdir(exist_ok=True)
    result_file.rename(stale)
    print(f"{result_file.name}: trained on other rows ({cached['rows_fingerprint']}); moved to {stale}", flush=True)
    return None


def nf_train(arm: str, rows: list[dict], seed: int, args, proto: NfProtocol, batches, result_file: Path) -> dict:
    """One (arm, seed) of the nfcorpus protocol, cached as result_file. A cached result of other rows
    or batches moves to results/stale/ and the run is trained again."""
    fingerprint = rows_fingerprint(rows, batches)
    cached = cached_result(result_file, fingerprint)
    if cached:
        return cached
    began = time.perf_counter()
    model = fine_tune(rows if arm != "base" else [], seed, args, batches)
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    metrics = evaluate_sets(model, proto.evals)
    result = {"arm": arm, "seed": seed, "rows": len(rows), **metrics, "train_s": round(train_seconds, 1),
              "eval_s": round(time.perf_counter() - began, 1), "machine": machine(DEVICE),
              "python": platform.python_version(), "rows_fingerprint": fingerprint}
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}, flush=True)
    del model
    gc.collect()
    return result


def nf_run(args) -> None:
    """The nfcorpus train -> test protocol: seeds outer, arms inner (a run cut short keeps whole seeds);
    the table is rewritten after every seed from every result cached in the root, so processes that
    train other arms of the same setup fill one table."""
    proto = nf_protocol(args.train_queries, args.subset_seed)
    arms = args.arms or NF_ARMS
    root = nf_root(args, proto)
    root.mkdir(parents=True, exist_ok=True)
    mined = nf_negatives(proto, root, args.negatives, args.ce_top, args.ce_max_length, arms)
    profiled = list(dict.fromkeys(["none", *PAIRING_ARMS, *arms]))  # the arms mined in this run
    queries, rows = nf_rows(proto, mined, profiled, args.negatives)
    profile_file = root / "profile.json"
    profile = json.loads(profile_file.read_text()) if profile_file.exists() else {}
    profile |= {arm: {"rows": len(rows[arm]), "extra": sum(bool(r.get("_extra")) for r in rows[arm]),
                      "repeats": sum(bool(r.get("_repeat")) for r in rows[arm]),
                      "fn_rate": false_negative_rate(proto, rows[arm]), "median_rank": median_rank(rows[arm], mined["_ranks"]),
                      "extra_labeled": _extra_precision(proto, rows[arm])} for arm in profiled}
    profile["_paired_queries"] = len(queries)
    profile_file.write_text(json.dumps(profile, indent=1))
    print(json.dumps(profile, indent=1), flush=True)
    if args.only_mine:
        return
    tag = f"{args.epochs}ep-b{args.batch_size}-lr{args.lr}-len{args.max_seq_length}"
    nf_train("base", [], 0, args, proto, None, root / "results" / f"base-len{args.max_seq_length}.json")
    for seed in range(1, (args.seeds_per_arm or 3) + 1):
        for arm in arms:
            if arm in PLANNED_ARMS:
                batches = planned_batches(proto, root / "work", rows[arm], seed, args.batch_size)
            else:
                batches = nf_batches(queries, rows[arm], seed, args.batch_size)
            nf_train(arm, rows[arm], seed, args, proto, batches, root / "results" / f"{tag}-{arm}-seed{seed}.json")
        write_nf_doc(nf_results(root, args), args, proto, len(queries), json.loads(profile_file.read_text()))


def _extra_precision(proto: NfProtocol, rows: list[dict]) -> float | None:
    """Share of a relabeling arm's extra positives that are labeled train positives of their query."""
    extras = [r for r in rows if r.get("_extra")]
    if not extras:
        return None
    text_of = proto.corpus
    hits = sum(r["positive"] in {text_of[d] for d in proto.labeled[r["_query"]]} for r in extras)
    return hits / len(extras)


def paired_lead(runs: dict[int, float], reference: dict[int, float]) -> tuple[float, float | None, int, int] | None:
    """Mean and standard error of an arm's per-seed difference from a reference arm, seeds ahead, seeds."""
    import math
    import statistics

    diffs = [runs[s] - reference[s] for s in sorted(runs) if s in reference]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return statistics.mean(diffs), se, sum(d > 0 for d in diffs), len(diffs)


def _lead_cell(lead) -> str:
    if lead is None:
        return ""
    mean, se, ahead, n = lead
    if se is None:
        return f"{mean:+.4f} ({ahead}/{n})"
    t = f", t {mean / se:.1f}" if se else ""
    return f"{mean:+.4f} ± {se:.4f}{t} ({ahead}/{n})"


NF_WHAT = {
    "base": "all-MiniLM-L6-v2, not fine-tuned",
    "none": "in-batch negatives only",
    "st-default": "`mine_hard_negatives` defaults (dense top 3)",
    "st-ce-margin": "`mine_hard_negatives`, the same cross-encoder, `relative_margin=0.05`",
    "oracle": "dense top 3 after removing every labeled train positive (the ceiling of cleaning)",
    "hnmine-rec": "configs/recommended.toml's rule for the negatives alone: ranks 21-40, the 3 the cross-encoder "
                  "rates lowest (scripts/select_recipe.py's choice)",
    "hnmine-rec-6-40": "the previous recommended filter: the same over ranks 6-40",
    "hnmine-top-clean": "the recommended false-negative rule over ranks 1-40, the best-ranked 3",
    "hnmine-deep": "the recommended false-negative rule over ranks 21-40, the best-ranked 3",
    "hnmine-relabel": "configs/recommended.toml as shipped: that rule + likely positives (probability ≥ 0.9) as extra "
                      "positive rows",
    "hnmine-repeat": "the control of hnmine-relabel: its rows and batches, each extra positive row replaced by a copy "
                     "of its query's row (the same steps and queries, no new positives)",
    "hnmine-rec-plan": "hnmine-rec-6-40's rows in `export --batch-plan no-false-negatives` batches (visible and likely "
                       "positives, probability ≥ 0.9, and near copies never beside another row's query)",
}


def _rows_note(profile: dict) -> str:
    """What an arm's rows beyond one per paired query are: extra positives, or copies in their place."""
    if profile.get("extra"):
        return f" ({profile['extra']} extra positives, {100 * profile['extra_labeled']:.0f} % labeled)"
    if profile.get("repeats"):
        return f" ({profile['repeats']} copies of their query's row)"
    return ""


def write_nf_doc(results: list[dict], args, proto: NfProtocol, queries: int, profile: dict) -> None:
    """The nfcorpus table: per arm, the training negatives' false-negative rate and hardness, then
    nDCG@10 on nfcorpus test (mean, sd over the arm's seeds) and its paired leads over
    mine_hard_negatives' defaults and over in-batch only (over the seeds both finished), and scifact
    test (transfer)."""
    import statistics

    by_arm: dict[str, dict[int, dict]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    trained = [arm for arm in NF_ARMS if arm in by_arm]
    if not trained:
        return
    kept = [r for arm in trained for r in by_arm[arm].values()]
    nf, sf = "nfcorpus-test/ndcg@10", "scifact-test/ndcg@10"
    all_seeds = sorted({s for arm in trained for s in by_arm[arm]})

    def series(arm, key):
        if arm == "base":  # the untrained model: the same figure on every seed
            return {s: by_arm["base"][0][key] for s in all_seeds}
        return {s: r[key] for s, r in sorted(by_arm[arm].items())}

    def mean_sd(values: dict) -> str:
        sd = f" ({statistics.stdev(values.values()):.4f})" if len(values) > 1 else ""
        return f"{statistics.mean(values.values()):.4f}{sd}"

    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_eval.py --protocol nfcorpus --root DIR "
        f"--train-queries {args.train_queries} --subset-seed {args.subset_seed} --seeds-per-arm N "
        f"--negatives {args.negatives} --max-seq-length {args.max_seq_length} --ce-top {args.ce_top} [--arms ...]`"
        + (f" (device {args.device})" if args.device != "cpu" else "")
        + "; `--report-only` rebuilds it from the results in DIR (this table: `--root docs/results/nfcorpus-cpu`)",
        f"- Machine: {kept[0]['machine']}; {statistics.median(r['train_s'] + r['eval_s'] for r in kept):.0f} s per run, "
        "the median (train + eval, wall time on 2 cores often shared with other jobs)",
        f"- Training data: {len(proto.visible)} nfcorpus train queries (a seeded sample, `--subset-seed "
        f"{args.subset_seed}`, of the {proto.train_total} with a positive), one visible positive each (the first "
        f"qrels line); their other {sum(map(len, proto.labeled.values())) - len(proto.visible)} labeled train "
        f"positives are hidden from every arm and only count false negatives. Every arm trains on the rows of the "
        f"same {queries} queries (those `mine_hard_negatives` and the oracle give {args.negatives} negatives) in the "
        f"same batches per seed (batch {args.batch_size}, no query or positive twice); an arm without "
        f"{args.negatives} negatives for a query leaves its row out of that batch; relabeling rows come in extra "
        "batches after them. The exception is hnmine-rec-plan: hnmine-rec-6-40's rows in the batches hnmine's "
        "no-false-negatives plan makes (its own per seed), so its leads are paired on the seed and the rows, "
        "not on the batches.",
        f"- all-MiniLM-L6-v2, MultipleNegativesRankingLoss, {args.epochs} epoch, lr {args.lr}, warmup 10 %, "
        f"max_seq_length {args.max_seq_length}, {args.negatives} hard negatives per row; hnmine: dense top 50, "
        f"cross-encoder (offline int8 ONNX ms-marco-MiniLM-L-12-v2, max_length {args.ce_max_length}) over the top "
        f"{args.ce_top}. Evaluated on nfcorpus test (323 queries, full qrels, relevance ≥ 1) and scifact test "
        "(300 queries), exact search over each whole corpus.",
        "- Train false negatives: the share of an arm's negatives that are hidden labeled train positives of their "
        "query (by id or identical text). Dense rank: the median rank of its negatives in hnmine's dense top 50 "
        "(51 = outside). Leads: the mean ± standard error of the per-seed difference, paired t, and seeds ahead.",
        "",
        "| arm | rows | train false negatives | median dense rank | seeds | nfcorpus nDCG@10, mean (sd) | minus "
        "st-default | minus in-batch only | nfcorpus Recall@100 | scifact nDCG@10 | scifact minus st-default |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = series("st-default", nf) if "st-default" in by_arm else {}
    inbatch = series("none", nf) if "none" in by_arm else {}
    sci_ref = series("st-default", sf) if "st-default" in by_arm else {}
    for arm in (["base"] if "base" in by_arm else []) + trained:
        values = series(arm, nf)
        p = profile.get(arm, {})
        fn = "" if p.get("fn_rate") is None else f"{100 * p['fn_rate']:.1f} %"
        rank = "" if p.get("median_rank") is None else f"{p['median_rank']:.0f}"
        rows = "" if arm == "base" else f"{p.get('rows', '')}{_rows_note(p)}"
        seeds = "" if arm == "base" else str(len(values))
        recall = statistics.mean(series(arm, "nfcorpus-test/recall@100").values())
        sci = series(arm, sf)
        versus_st = _lead_cell(paired_lead(values, reference)) if arm not in ("st-default", "base") else ""
        versus_none = _lead_cell(paired_lead(values, inbatch)) if arm not in ("none", "base") else ""
        sci_versus = _lead_cell(paired_lead(sci, sci_ref)) if arm not in ("st-default", "base") else ""
        lines.append(f"| {arm}: {NF_WHAT.get(arm, arm)} | {rows} | {fn} | {rank} | {seeds} | "
                     f"{mean_sd(values) if arm != 'base' else f'{statistics.mean(values.values()):.4f}'} | {versus_st} | "
                     f"{versus_none} | {recall:.4f} | {statistics.mean(sci.values()):.4f} | {sci_versus} |")
    for arm in [a for a in NF_ARMS if a not in by_arm and a in profile]:  # mined, not trained yet
        p = profile[arm]
        fn = "" if p.get("fn_rate") is None else f"{100 * p['fn_rate']:.1f} %"
        rank = "" if p.get("median_rank") is None else f"{p['median_rank']:.0f}"
        lines.append(f"| {arm}: {NF_WHAT.get(arm, arm)} | {p['rows']}{_rows_note(p)} | {fn} | {rank} | 0 | not trained yet | | | | | |")
    if {"oracle", "st-default"} <= set(by_arm):
        gap = paired_lead(series("oracle", nf), reference)[0]
        closes = [f"{arm} {100 * paired_lead(series(arm, nf), reference)[0] / gap:.0f} %" for arm in trained
                  if (arm.startswith("hnmine") or arm == "st-ce-margin") and paired_lead(series(arm, nf), reference)]
        lines += ["", f"The cleaning gap (oracle minus st-default on the same seeds, nfcorpus nDCG@10): {gap:+.4f}."
                  + (" Share of it each arm closes: " + ", ".join(closes) + "." if closes else "")]
    lines += ["", "nfcorpus nDCG@10 per seed:", "", "| seed | " + " | ".join(trained) + " |", "|---|" + "---|" * len(trained)]
    lines += [f"| {s} | " + " | ".join(f"{by_arm[a][s][nf]:.4f}" if s in by_arm[a] else "" for a in trained) + " |"
              for s in all_seeds]
    body = "\n".join(lines)
    splice_section(DOC, "train_eval:nfcorpus", body, heading="Does it train a better retriever? nfcorpus train → test")
    print(body, flush=True)


def nf_results(root: Path, args) -> list[dict]:
    """Every cached result of this training setup in root (any arm, any seed), and the base model's."""
    tag = f"{args.epochs}ep-b{args.batch_size}-lr{args.lr}-len{args.max_seq_length}"
    files = sorted((root / "results").glob(f"{tag}-*-seed*.json"))
    base = root / "results" / f"base-len{args.max_seq_length}.json"
    return [json.loads(f.read_text()) for f in ([base] if base.exists() else []) + files]


def nf_report(args) -> None:
    """--report-only --protocol nfcorpus: the table from the results and profile saved in --root."""
    proto = nf_protocol(args.train_queries, args.subset_seed)
    root = nf_root(args, proto)
    profile = json.loads((root / "profile.json").read_text()) if (root / "profile.json").exists() else {}
    results = nf_results(root, args)
    if not results:
        raise SystemExit(f"{root / 'results'}: no nfcorpus results for this setup; run without --report-only first")
    write_nf_doc(results, args, proto, profile.get("_paired_queries", 0), profile)


def nf_root(args, proto: NfProtocol) -> Path:
    """One folder per training set (sample size and seed, negatives, cross-encoder depth): mined files,
    profile.json and results/ are cached there."""
    return args.root / f"nfcorpus-q{len(proto.visible)}-s{args.subset_seed}-k{args.negatives}-ce{args.ce_top}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--protocol", choices=["nfcorpus", "scifact"], default="nfcorpus",
                        help="nfcorpus: train on nfcorpus train with one visible positive per query, evaluate on nfcorpus "
                             "test and scifact test; scifact: train on scifact train, evaluate on scifact test")
    parser.add_argument("--train-queries", type=int, default=None,
                        help="a seeded sample of this many training queries (default: all: 2,563 of nfcorpus, 809 of "
                             "scifact); the CPU protocol")
    parser.add_argument("--subset-seed", type=int, default=1, help="the seed of that sample")
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per row (mine_hard_negatives' default)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-seq-length", type=int, default=None, help="default 128 for nfcorpus, 256 for scifact")
    parser.add_argument("--ce-top", type=int, default=40)
    parser.add_argument("--ce-max-length", type=int, default=256,
                        help="cross-encoder tokens per pair (256 halves the CPU time of 512 on scifact's abstracts)")
    parser.add_argument("--seeds", type=int, nargs=2, default=[1, 2], help="the seed of every arm, then the second seed")
    parser.add_argument("--only-mine", action="store_true", help="mine the negatives and stop")
    parser.add_argument("--arms", nargs="+", choices=sorted(set(ARMS) | set(NF_ARMS)), help="train only these (first seed; results are cached, so a "
                                                                 "second process can take arms off a running one)")
    parser.add_argument("--seed", type=int, help="with --arms: train them with this seed instead of the first")
    parser.add_argument("--report-only", action="store_true",
                        help="write docs/quality.md from the results saved in --root so far (a run cut short)")
    parser.add_argument("--device", default="cpu", help="train and evaluate here (cuda on the GPU machine)")
    parser.add_argument("--data", type=Path, help="the scifact BEIR folder (default: ../shared/data/scifact)")
    parser.add_argument("--model", help="the all-MiniLM-L6-v2 folder to start from (default: the packaged one)")
    parser.add_argument("--mined-only", action="store_true",
                        help="train on the ARM.parquet files already in --root (mined elsewhere): no index, no mining")
    parser.add_argument("--seeds-per-arm", type=int,
                        help="train every arm with seeds 1..N (instead of the first seed, and the second for the two "
                             "best arms and mine_hard_negatives): the seed spread of each arm, where training is cheap")
    parser.add_argument("--paired", action="store_true",
                        help="train --arms (default: all) with seeds 1..--seeds-per-arm (default 3) on the same pairs in the "
                             "same batches, so arms differ only in their negatives; a separate table in docs/quality.md")
    parser.add_argument("--label", default="", help="write the table between markers `train_eval:LABEL` in docs/quality.md "
                                                    "(a second table beside the default one; with --paired, "
                                                    "`train_eval:pairedROWS-LABEL`)")
    args = parser.parse_args(argv)
    global DATA, MODEL, DEVICE, BEGIN, END
    DATA, MODEL, DEVICE = args.data or DATA, args.model or MODEL, args.device
    if args.max_seq_length is None:
        args.max_seq_length = 128 if args.protocol == "nfcorpus" else 256
    if args.protocol == "nfcorpus":
        args.root.mkdir(parents=True, exist_ok=True)
        nf_report(args) if args.report_only else nf_run(args)
        return
    if args.label:
        BEGIN, END = f"<!-- BEGIN train_eval:{args.label} -->", f"<!-- END train_eval:{args.label} -->"
    if args.train_queries:  # one folder per sample, as the nfcorpus protocol's
        args.root = args.root / f"scifact-q{args.train_queries}-s{args.subset_seed}-k{args.negatives}-ce{args.ce_top}"
        DATA = scifact_subset(DATA, args.root, args.train_queries, args.subset_seed)
    args.root.mkdir(parents=True, exist_ok=True)
    if args.report_only and args.paired:  # the paired tables from the results in --root (a run elsewhere, or cut short)
        results = [json.loads(f.read_text()) for f in sorted((args.root / "results").glob("paired*.json"))]
        results = [r for r in results if r["arm"] in (args.arms or ARMS)]
        if not results:
            raise SystemExit(f"{args.root / 'results'}: no paired results of these arms; run with --paired first")
        corpus, queries, train, _ = load_data()
        pairs = min(r["rows"] for r in results)  # the paired rows; arms with extra rows have more
        extra = {r["arm"]: r["rows"] - pairs for r in results if r["rows"] > pairs}
        write_paired_doc(results, args, pairs, len(distinct_pairs(corpus, queries, train)) - pairs, extra)
        return
    if args.report_only:
        results = [json.loads(f.read_text()) for f in sorted((args.root / "results").glob("*.json"))
                   if not f.name.startswith("paired")]
        train = read_qrels(DATA / "qrels" / "train.tsv")
        write_doc(results, args, {"pairs": len(train), "queries": len({q for q, _ in train})})
        return

    corpus, queries, train, test = load_data()
    arms = args.arms or ARMS
    if args.mined_only:
        files = {arm: args.root / f"{arm}.parquet" for arm in ARMS if (args.root / f"{arm}.parquet").exists()}
        arms = [arm for arm in arms if arm == "none" or REPEAT_ARMS.get(arm, arm) in files]
    else:
        files = hnmine_arms(args.root, args.negatives, args.ce_top, args.ce_max_length,
                            bool(set(CE_ARMS) & set(arms)))
        files["st-default"] = st_arm(args.root, args.negatives, corpus, queries, train)
    if args.only_mine:
        return
    if args.paired:
        paired_run(args, files, corpus, queries, train, test)
        return
    first, second = args.seeds
    arms = [arm for arm in arms if arm not in REPEAT_ARMS]  # repeat arms are paired runs' controls
    if args.seeds_per_arm:
        results = [train_arm("base", [], first, args, corpus, queries, test, args.root)]
        for seed in range(1, args.seeds_per_arm + 1):
            for arm in arms:
                rows = rows_for(arm, files, args.negatives, corpus, queries, train)
                results.append(train_arm(arm, rows, seed, args, corpus, queries, test, args.root))
        write_doc(results, args, {"pairs": len(train), "queries": len({q for q, _ in train})})
        return
    if args.arms:  # a helper process for some arms (results are cached): no base, no second seeds, no doc
        for arm in arms:
            train_arm(arm, rows_for(arm, files, args.negatives, corpus, queries, train), args.seed or first, args, corpus,
                      queries, test, args.root)
        return
    results = [train_arm("base", [], first, args, corpus, queries, test, args.root)]
    for arm in arms:
        rows = rows_for(arm, files, args.negatives, corpus, queries, train)
        results.append(train_arm(arm, rows, first, args, corpus, queries, test, args.root))
    best = sorted((r for r in results if r["arm"] != "base"), key=lambda r: -r["ndcg@10"])[:2]
    for arm in {r["arm"] for r in best} | {"st-default"}:
        rows = rows_for(arm, files, args.negatives, corpus, queries, train)
        results.append(train_arm(arm, rows, second, args, corpus, queries, test, args.root))
    write_doc(results, args, {"pairs": len(train), "queries": len({q for q, _ in train})})


if __name__ == "__main__":
    main(sys.argv[1:])
