"""Host costs outside encoding and search: ingest, and `mine`'s candidate rows (docs/benchmarks.md).

At MS MARCO's size these are the CPU-side costs left beside the GPU's encode and search (docs/gpu.md:
ingest 116 s and the rest of mine 113 s of its extrapolation). The corpus is bench_gpu.py's synthetic
one (2-3 sentences of the shared sets per passage, each query 6-12 words of its one positive); the
embeddings are bench_scale.py's seeded clustered vectors, imported, and each query's vector is its
positive's plus noise, so no model runs: mine's search and its rows do real work on real ids and
text hashes. Ingest reads the same corpus as Parquet and as BEIR's JSON lines, each row by row (the
reference: hnmine.io.readers' row path alone) and column-wise, with the text hashes in the reading
process and in the worker pool; every corpus.arrow must come out identical. `mine` runs twice on
the same index, once with every batch walked per query in Python
(hnmine.stages.candidate_rows.walk_lists, the reference), once with the array path, and once with
the array path in a worker process beside the search (`--row-workers 1`); the candidates must come
out identical. The array run's batches are then collected alone, in this process and in a pool of
`--row-workers` processes (hnmine.stages.row_pool), with the same rows.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_host.py --root DIR [--docs 200000] [--queries 20000] [--repeats 3]

Writes docs/benchmarks.md between `<!-- BEGIN host -->` and `<!-- END host -->`.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_line, splice_section, today  # noqa: E402
from bench_gpu import build_inputs  # noqa: E402
from bench_scale import DIM, clustered_embeddings, sentences_file  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
MS_MARCO_QUERIES = 503_000
MS_MARCO_DOCS = 8_800_000


def query_vectors(embeddings: np.ndarray, positives: np.ndarray, seed: int = 1) -> np.ndarray:
    """Each query's vector: its positive's plus noise, unit length (the positive ranks near the top)."""
    rng = np.random.default_rng(seed)
    vectors = np.asarray(embeddings[positives], dtype=np.float32) + rng.normal(scale=0.05, size=(len(positives), DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@contextlib.contextmanager
def patched(patches: dict):
    """{(owner, attribute name): value} set for the block, the originals restored after it."""
    saved = {target: getattr(*target) for target in patches}
    for (owner, name), value in patches.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def timed_mine(work: Path, data, params, vectors: dict[str, np.ndarray], walk: bool, record: list | None = None) -> dict:
    """mine with the given query vectors instead of an encoder; its search timed apart. `record`
    gets the arguments of every in-process collect call."""
    from hnmine.stages import candidate_rows
    from hnmine.stages import mine as mine_stage

    searched = [0.0]
    search = mine_stage._ranked_lists

    def timed_search(*args, **kwargs):
        began = time.perf_counter()
        try:
            return search(*args, **kwargs)
        finally:
            searched[0] += time.perf_counter() - began

    patches = {(mine_stage._Retrievers, "query_vectors"): lambda self, texts: {
                   key: np.stack([vectors[t] for t in texts]) for key in self.dense},
               (mine_stage, "_ranked_lists"): timed_search}
    if walk:
        patches[(candidate_rows, "vectorized")] = candidate_rows.walk_lists
    if record is not None:
        collect = mine_stage.collect
        patches[(mine_stage, "collect")] = lambda *args: record.append((*args[:9], dict(args[9]), args[10])) or collect(*args)
    with patched(patches):
        began = time.perf_counter()
        result = mine_stage.mine(work, data, params, progress=False)
        seconds = time.perf_counter() - began
    return {"seconds": seconds, "search": searched[0], "rest": seconds - searched[0],
            "candidates": result.stats["candidates"]}


def timed_rows(work: Path, calls: list, workers: int) -> dict:
    """collect alone over a run's batches (recorded by timed_mine): in this process (warm: it has
    just searched), then in a RowPool of `workers` processes, twice, its start and first pass timed
    apart (a worker's first batch also maps its pages of the matrix and the corpus). Rows must come
    out the same."""
    from hnmine.stages.candidate_rows import collect
    from hnmine.stages.mine import _row_pool

    began = time.perf_counter()
    in_process = [collect(*args) for args in calls]
    seconds = time.perf_counter() - began
    params, top_k, retrievers, excluded = (calls[0][i] for i in (5, 6, 8, 10))
    began = time.perf_counter()
    with _row_pool(workers, work, retrievers, params, top_k, excluded) as pool:
        for future in [pool.pool.submit(int) for _ in range(workers)]:  # every worker started
            future.result()
        started = time.perf_counter() - began
        passes = []
        for _ in range(2):  # the first pass also maps each worker's pages of the matrix and the corpus
            began = time.perf_counter()
            waits = [pool.submit(a[0], a[1], a[2], a[4], a[7], a[9]) for a in calls]
            pooled = [wait() for wait in waits]
            passes.append(time.perf_counter() - began)
    same = all(a[1] == b[1] and all(a[0][k].equals(b[0][k]) if k != "_counts" else a[0][k] == b[0][k] for k in a[0])
               for a, b in zip(in_process, pooled))
    return {"in_process": seconds, "first_pass": passes[0], "pooled": passes[1], "start": started, "workers": workers,
            "same": same}


def write_json_lines(corpus, path: Path) -> None:
    import json

    with open(path, "w") as handle:
        for doc_id, text in zip(corpus.column("_id").to_pylist(), corpus.column("text").to_pylist()):
            handle.write(json.dumps({"_id": doc_id, "title": "", "text": text, "metadata": {}}) + "\n")


def timed_read(file: Path, row_path: bool) -> float:
    """The corpus read alone (readers.iter_corpus, no hashes, nothing written): the reading process's
    own share of ingest, the bound where the hash workers have cores of their own."""
    from hnmine.io import readers

    with patched({(readers, "_columnar_tables"): lambda *args, **kwargs: None} if row_path else {}):
        began = time.perf_counter()
        for _ in readers.iter_corpus(file):
            pass
        return time.perf_counter() - began


def timed_ingest(work: Path, data, row_path: bool, in_place: bool) -> dict:
    """ingest_corpus, read row by row (the reference: the columnar path switched off) or column-wise,
    with the text hashes in this process or in the worker pool."""
    from hnmine.io import readers, text_hashes
    from hnmine.stages import index as index_stage

    patches = {}
    if row_path:
        patches[(readers, "_columnar_tables")] = lambda *args, **kwargs: None
    if in_place:
        patches[(text_hashes, "worker_count")] = lambda: 1
    with patched(patches):
        began = time.perf_counter()
        result = index_stage.ingest_corpus(work, data, progress=False)
        seconds = time.perf_counter() - began
    return {"seconds": seconds, "processes": result.stats["text_hash_processes"],
            "reader": result.stats["corpus_reader"]}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=4096, help="mine's queries per batch (bench_gpu.py's)")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each ingest; the median is reported")
    parser.add_argument("--row-workers", type=int, default=2, help="processes of the candidate rows timed alone")
    args = parser.parse_args(argv)

    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from hnmine.config import DataParams, IndexParams, MineParams
    from hnmine.stages import index as index_stage

    args.root.mkdir(parents=True, exist_ok=True)
    inputs = args.root / f"inputs-{args.docs}-{args.queries}"
    if not (inputs / "qrels.tsv").exists():
        build_inputs(sentences_file(args.root), args.docs, args.queries, inputs)
    data = DataParams(corpus=inputs / "corpus.parquet", queries=inputs / "queries.parquet", qrels=inputs / "qrels.tsv")
    embeddings_file = args.root / f"embeddings-{args.docs}.npy"
    clustered_embeddings(embeddings_file, args.docs)

    jsonl = inputs / "corpus.jsonl"
    if not jsonl.exists():  # the same corpus as BEIR's JSON lines
        write_json_lines(pq.read_table(inputs / "corpus.parquet"), jsonl)
    ingest, corpora, reads = {}, {}, {}
    for file in (jsonl, inputs / "corpus.parquet"):  # Parquet last: its work dir is the one mined
        for reader in ("rows", "columns"):
            reads[(file.suffix[1:], reader)] = statistics.median(timed_read(file, reader == "rows")
                                                                 for _ in range(args.repeats))
            print("read", file.suffix, reader, reads[(file.suffix[1:], reader)], flush=True)
            for hashes in ("in place", "pool"):
                work = args.root / "work"
                key = (file.suffix[1:], reader, hashes)
                runs_of_key = []
                for _ in range(args.repeats):
                    shutil.rmtree(work, ignore_errors=True)
                    runs_of_key.append(timed_ingest(work, DataParams(corpus=file, queries=data.queries, qrels=data.qrels),
                                                    row_path=reader == "rows", in_place=hashes == "in place"))
                ingest[key] = runs_of_key[0] | {"seconds": statistics.median(r["seconds"] for r in runs_of_key),
                                                "runs": [round(r["seconds"], 2) for r in runs_of_key]}
                with ipc.open_file(work / "corpus.arrow") as handle:
                    corpora[key] = handle.read_all()
                print("ingest", key, ingest[key], flush=True)
    first = next(iter(corpora.values()))
    ingest_same = all(table.equals(first) for table in corpora.values())
    index_stage.index(work, data, IndexParams(embeddings=embeddings_file), progress=False)

    texts = pq.read_table(inputs / "queries.parquet").column("text").to_pylist()
    positives = np.array([int(line.split("\t")[1][1:]) for line in (inputs / "qrels.tsv").read_text().splitlines()[1:]])
    embeddings = np.load(embeddings_file, mmap_mode="r")
    vectors = dict(zip(texts, query_vectors(embeddings, positives)))
    params = MineParams(top_k=args.top_k, batch_size=args.batch_size)
    runs, tables, calls = {}, {}, []
    for name, walk, workers in (("walk", True, 0), ("arrays", False, 0), ("workers", False, 1)):
        target = args.root / f"work-{name}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work, target)
        runs[name] = timed_mine(target, data, params.model_copy(update={"row_workers": workers}), vectors, walk,
                                record=calls if name == "arrays" else None)
        with ipc.open_file(target / "candidates.arrow") as reader:
            tables[name] = reader.read_all()
        print(name, runs[name], flush=True)
    same = tables["walk"].equals(tables["arrays"]) and tables["workers"].equals(tables["arrays"])
    rows = timed_rows(args.root / "work-arrays", calls, args.row_workers)
    print("rows", rows, flush=True)

    per_query = {name: run["rest"] / args.queries for name, run in runs.items()}
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_host.py --root DIR --docs {args.docs} "
        f"--queries {args.queries} --repeats {args.repeats}`",
        f"- Machine: {machine_line()}; date {today()}",
        f"- {args.docs:,} synthetic passages (scripts/bench_gpu.py's), {args.queries:,} queries with one positive each; "
        f"imported clustered embeddings, each query's vector its positive's plus noise (no model runs); `mine` top "
        f"{args.top_k}, batches of {args.batch_size}, exact search. Ingest seconds: the median of {args.repeats} runs. The rest of mine = mine's wall time less its "
        "search: reading the inputs, the candidate rows, their inner products and the file. Ingest: the same "
        "corpus as Parquet and as BEIR's JSON lines (title, text, metadata), corpus.arrow out. Extrapolated: per query "
        f"to MS MARCO's {MS_MARCO_QUERIES:,} training queries, per document to its {MS_MARCO_DOCS:,} passages, "
        "on this machine's cores.",
        "",
        "| step | seconds | per 1M documents or 1k queries | extrapolated to MS MARCO |",
        "|---|---|---|---|",
    ]
    for (kind, reader), seconds in reads.items():
        read = "row by row (the reference)" if reader == "rows" else "column-wise"
        lines.append(f"| read {args.docs:,} passages from {'JSON lines' if kind == 'jsonl' else 'Parquet'} {read}, "
                     f"alone (no text hashes, nothing written) | {seconds:.1f} | {seconds / args.docs * 1e6:.1f} s per 1M | "
                     f"{seconds / args.docs * MS_MARCO_DOCS:.0f} s |")
    for (kind, reader, hashes), run in ingest.items():
        read = "read row by row (the reference)" if reader == "rows" else "read column-wise"
        where = ("text hashes in the reading process" if hashes == "in place"
                 else f"text hashes in {run['processes']} worker processes")
        seconds = run["seconds"]
        lines.append(f"| ingest {args.docs:,} passages from {'JSON lines' if kind == 'jsonl' else 'Parquet'}, {read}, "
                     f"{where} | {seconds:.1f} | {seconds / args.docs * 1e6:.1f} s per 1M | "
                     f"{seconds / args.docs * MS_MARCO_DOCS:.0f} s |")
    for name, label in (("walk", "rows walked per query in Python (the reference)"), ("arrays", "rows as array operations"),
                        ("workers", "rows as array operations in 1 worker process (`--row-workers 1`)")):
        run = runs[name]
        lines.append(f"| mine, {label}: search | {run['search']:.1f} | | |")
        lines.append(f"| mine, {label}: the rest | {run['rest']:.1f} | {per_query[name] * 1e3:.2f} s per 1k queries | "
                     f"{per_query[name] * MS_MARCO_QUERIES:.0f} s |")
    for label, seconds in (("in the mining process", rows["in_process"]),
                           (f"in {rows['workers']} worker processes, warm (their start {rows['start']:.1f} s and a "
                            f"first pass {rows['first_pass']:.1f} s apart)", rows["pooled"])):
        lines.append(f"| the candidate rows alone (`candidate_rows.collect` over mine's batches), {label} | {seconds:.1f} "
                     f"| {seconds / args.queries * 1e3:.2f} s per 1k queries | {seconds / args.queries * MS_MARCO_QUERIES:.0f} s |")
    same_rows = "identical" if rows["same"] else "DIFFERENT"
    lines += ["", f"The {len(corpora)} ingests' corpus.arrow: {'identical' if ingest_same else 'DIFFERENT'}. "
              f"The three mine runs' candidates.arrow ({runs['arrays']['candidates']:,} candidates): "
                  f"{'identical' if same else 'DIFFERENT'}; the rest of mine {per_query['walk'] / per_query['arrays']:.1f} "
                  f"times faster with arrays. The rows built in worker processes: {same_rows} to the in-process ones, "
                  f"{rows['in_process'] / rows['pooled']:.1f} times faster with {rows['workers']} workers."]
    body = "\n".join(lines)
    splice_section(DOC, "host", body, heading="Host costs: ingest and mine's candidate rows")
    print(body)
    if not same:
        raise SystemExit("the array path's candidates differ from the walk's, or the worker run's")
    if not rows["same"]:
        raise SystemExit("the rows built in worker processes differ from the in-process ones")
    if not ingest_same:
        raise SystemExit("the column-wise ingest's corpus.arrow differs from the row path's")


if __name__ == "__main__":
    main(sys.argv[1:])
