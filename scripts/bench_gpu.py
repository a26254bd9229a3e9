"""Encode and mine a synthetic corpus on a GPU with hnmine, then the same with `mine_hard_negatives`.

The corpus is built from sentences of the shared BEIR sets (2-3 sentences per document, about the
length of an MS MARCO passage); each query is the opening words of a sentence of its one positive
document. Both tools use the same all-MiniLM-L6-v2 folder in fp16, the same batch size, top 50.

    python scripts/bench_gpu.py --sentences S.txt.gz --model DIR --docs 1000000 --queries 50000 \
        --workdir /tmp/gpu --out results.json

Prints and writes a JSON of figures after every phase, so a run cut short still reports what it
measured. `--device cpu --docs 2000` checks the script on a machine without a GPU.

Beside the end-to-end phases, on a sample of the corpus (`--sample`, default 100k): the forward
pass alone on the batches the encoder forms, already on the device (the ceiling the feed is
measured against); encoding by rows and by a token budget (`--budget`), with the share of the
encode spent waiting for the tokenizer threads and of the batches' tokens that are padding; and
each path's vectors against `SentenceTransformer.encode` (largest difference, top-10 agreement of
1,000 queries).
`--render RESULTS.json --doc docs/gpu.md` writes a results file into the doc's `bench_gpu` section,
with the 8.8M-passage extrapolation, so a run on a lent machine is rendered here.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_passages(sentences_file: Path, n_docs: int, rng: np.random.Generator) -> list[str]:
    """The corpus: each passage 2-3 sentences drawn from the file, about an MS MARCO passage."""
    sentences = gzip.open(sentences_file, "rt").read().split("\n")
    counts = rng.integers(2, 4, size=n_docs)
    picks = rng.integers(0, len(sentences), size=int(counts.sum()))
    texts, start = [], 0
    for c in counts:
        texts.append(" ".join(sentences[i] for i in picks[start:start + c]))
        start += c
    return texts


def build_inputs(sentences_file: Path, n_docs: int, n_queries: int, folder: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    texts = synthetic_passages(sentences_file, n_docs, rng)
    ids = [f"d{i}" for i in range(n_docs)]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"_id": ids, "text": texts}), folder / "corpus.parquet")
    positives = rng.choice(n_docs, size=n_queries, replace=False)
    queries = []
    for d in positives:
        words = texts[d].split()
        at = int(rng.integers(0, max(1, len(words) - 12)))
        queries.append(" ".join(words[at:at + int(rng.integers(6, 13))]))
    pq.write_table(pa.table({"_id": [f"q{j}" for j in range(n_queries)], "text": queries}), folder / "queries.parquet")
    with open(folder / "qrels.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for j, d in enumerate(positives):
            handle.write(f"q{j}\td{d}\t1\n")
    return {"texts": texts, "queries": queries, "positives": [texts[d] for d in positives],
            "mean_doc_chars": float(np.mean([len(t) for t in texts]))}


def timed_search(work: Path, matrix: np.ndarray, query_vectors: np.ndarray, device: str) -> dict:
    """Exact search alone: every query against `matrix` in batches of 4096, at the k mine asks for
    with top 50 (50 + its margin for positives), timed apart from loading the matrix."""
    from hnmine.retrievers import faiss_index

    t = time.perf_counter()
    searcher, kind = faiss_index.open_search(work / "index" / "dense", "Flat", matrix, device, nprobe=16, ef_search=128)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, len(query_vectors), 4096):
        searcher.search(query_vectors[s:s + 4096], 67)
    search_s = time.perf_counter() - t
    pairs = len(query_vectors) * matrix.shape[0]
    return {"kind": kind, "matrix_to_device_seconds": round(load_s, 2), "search_seconds": round(search_s, 2),
            "queries_per_second": round(len(query_vectors) / search_s),
            "query_doc_products_per_second": float(f"{pairs / search_s:.3g}")}


def feed_checks(args, data: dict, save) -> None:
    """The sample phases (see the module docstring)."""
    import torch
    from _common import padding_share
    from sentence_transformers import SentenceTransformer

    from hnmine.retrievers import encoders, exact_search

    sample = data["texts"][:args.sample]
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    reference = SentenceTransformer(args.model, device=args.device)
    reference.to(torch.float16 if cuda else torch.float32)
    checked = sample[:20_000]
    t = time.perf_counter()
    expected = reference.encode(checked, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    st_rate = len(checked) / (time.perf_counter() - t)
    queries = data["queries"][:1000]
    expected_top = exact_search.exact_search(expected.astype(np.float32), reference.encode(
        queries, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32), 10)[1]
    figures: dict = {"sample_docs": len(sample), "checked_docs": len(checked), "st_encode_docs_per_second": round(st_rate)}
    for name, budget in (("rows", None), ("token_budget", args.budget)):
        encoder = encoders.Encoder(args.model, args.device, batch_size=args.batch_size, backend="torch", batch_tokens=budget)
        fast = encoder.fast
        if fast is None:
            raise RuntimeError(f"{args.model} is not a Transformer + Pooling folder the torch feed can take")
        fast.encode(sample[:4096])  # warm-up: kernels, allocator
        sync()
        t = time.perf_counter()
        vectors = fast.encode(sample)
        seconds = time.perf_counter() - t
        waited = fast.waited
        top = exact_search.exact_search(vectors[:len(checked)], fast.encode(queries), 10)[1]
        # The forward pass alone on the same batches, already on the device: the feed's ceiling.
        packed = fast.packed_batches(sample)
        stream = torch.cuda.Stream(encoder.model.device) if cuda else None
        resident = [(fast._to_device(features, encoder.model.device, stream), padded) for _, features, padded in packed]
        with torch.inference_mode():
            fast._forward(*resident[len(resident) // 2])
            sync()
            t = time.perf_counter()
            for features, padded in resident:
                torch.nn.functional.normalize(fast._forward(features, padded)["sentence_embedding"].float(), dim=-1)
            sync()
        ceiling = len(sample) / (time.perf_counter() - t)
        del resident
        figures[name] = {"batch_tokens": budget, "batches": len(packed), "padding_share": round(padding_share(packed), 4),
                         "encode_docs_per_second": round(len(sample) / seconds),
                         "forward_only_docs_per_second": round(ceiling),
                         "encode_share_of_forward": round(len(sample) / seconds / ceiling, 3),
                         "tokenizer_wait_share": round(waited / seconds, 3),
                         "max_abs_diff_vs_st": float(np.abs(vectors[:len(checked)] - expected).max()),
                         "top10_agreement_vs_st": round(float(np.mean([len(set(a) & set(b)) / 10
                                                                       for a, b in zip(top, expected_top)])), 4)}
        save("feed", figures)


def gpu_memory(device: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    import torch

    out = {"torch_peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
           "torch_peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    torch.cuda.reset_peak_memory_stats()
    return out


def main() -> None:
    from hnmine.config import IndexParams

    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=Path)
    parser.add_argument("--model")
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hnmine-gpu"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--render", type=Path, help="write this results file into --doc's bench_gpu section, run nothing")
    parser.add_argument("--doc", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "gpu.md")
    parser.add_argument("--skip-st", action="store_true")
    parser.add_argument("--sample", type=int, default=100_000, help="documents for the feed phases (0 = skip them)")
    parser.add_argument("--budget", type=int, default=65_536, help="padded tokens per batch in the token-budget phase")
    parser.add_argument("--chunk-size", type=int, default=IndexParams.model_fields["chunk_size"].default,
                        help="documents per saved chunk of the 1M encode (default: index's)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="index's --batch-tokens for the 1M encode")
    parser.add_argument("--search-docs", type=int, default=0, help="also time search alone on a matrix this large")
    parser.add_argument("--devices-check", action="store_true", help="also encode with index --devices, 2 processes on the GPU")
    parser.add_argument("--encode-processes", type=int, nargs="+",
                        help="only ingest, then encode the corpus once per count with index --devices naming the one "
                             "device that many times: does encoding scale with processes on one GPU?")
    args = parser.parse_args()
    if args.render:
        from _common import splice_section
        from gpu_report import render

        splice_section(args.doc, "bench_gpu", render(json.loads(args.render.read_text())))
        return
    if not (args.sentences and args.model and args.out):
        parser.error("--sentences, --model and --out are needed to run (or --render a results file)")

    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "python": platform.python_version(),
                     "torch": torch.__version__, "cpus": os.cpu_count(), "commit": commit or "?"}
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(0)

    def save(phase: str, figures: dict) -> None:
        results[phase] = figures
        print(json.dumps({phase: figures}), flush=True)
        args.out.write_text(json.dumps(results, indent=2))

    t = time.perf_counter()
    data = build_inputs(args.sentences, args.docs, args.queries, args.workdir / "input")
    save("inputs", {"docs": args.docs, "queries": args.queries, "mean_doc_chars": round(data["mean_doc_chars"], 1),
                    "seconds": round(time.perf_counter() - t, 1)})

    from hnmine.config import DataParams, MineParams
    from hnmine.stages import index as index_stage
    from hnmine.stages import mine as mine_stage
    from hnmine.workdir import WorkDir

    work = args.workdir / "hnmine"
    inp = args.workdir / "input"
    data_params = DataParams(corpus=inp / "corpus.parquet", queries=inp / "queries.parquet", qrels=inp / "qrels.tsv")
    index_params = IndexParams(model=args.model, device=args.device, batch_size=args.batch_size, chunk_size=args.chunk_size,
                               batch_tokens=args.batch_tokens)
    shutil.rmtree(work, ignore_errors=True)  # a --workdir from an earlier run: every stage runs, none is reused
    t = time.perf_counter()
    result = index_stage.ingest_corpus(work, data_params)
    save("hnmine_ingest", {"seconds": round(time.perf_counter() - t, 1)})
    if args.encode_processes:
        for count in args.encode_processes:
            shutil.rmtree(WorkDir(work).dense, ignore_errors=True)  # else build_dense reuses it (same vectors)
            t = time.perf_counter()
            result = index_stage.build_dense(work, index_params.model_copy(update={"devices": [args.device] * count}),
                                             progress=False)
            seconds = time.perf_counter() - t
            save(f"hnmine_encode_{count}_processes", {"seconds": round(seconds, 1),
                                                      "docs_per_second": round(args.docs / seconds),
                                                      "devices": result.stats.get("devices")})
        return
    t = time.perf_counter()
    result = index_stage.build_dense(work, index_params, progress=False)
    seconds = time.perf_counter() - t
    from hnmine.retrievers import embedding_store, encoders

    encoder = encoders.Encoder(args.model, args.device, batch_size=args.batch_size,  # also encodes the queries below
                               batch_tokens=args.batch_tokens)
    save("hnmine_encode", {"seconds": round(seconds, 1), "docs_per_second": round(args.docs / seconds),
                           "precision": result.stats.get("precision"), "backend": result.stats.get("backend"),
                           "chunk_size": args.chunk_size, "encoder_load_seconds": result.stats.get("encoder_load_seconds"),
                           "encoding_seconds": result.stats.get("encoding_seconds"),
                           "rust_tokenizer_prefetch": encoder.fast is not None, **gpu_memory(args.device)})

    # Search alone: all queries against the whole matrix, the k mine asks for.
    embeddings = embedding_store.load_embeddings(work / "index" / "dense")
    t = time.perf_counter()
    query_vectors = encoder.encode(data["queries"])
    encode_q = time.perf_counter() - t
    save("search", {"query_encode_seconds": round(encode_q, 2),
                    **timed_search(work, embeddings, query_vectors, args.device), **gpu_memory(args.device)})

    if args.search_docs:
        # Search alone against a matrix of MS MARCO's size: the encoded matrix tiled (rows repeat,
        # which changes nothing for the cost of an exact search), the same queries and k.
        del embeddings
        tiled = np.resize(np.load(work / "index" / "dense" / "embeddings.npy"), (args.search_docs, query_vectors.shape[1]))
        figures = timed_search(work, tiled, query_vectors, args.device)
        del tiled
        save("search_large", {"docs": args.search_docs, **figures, **gpu_memory(args.device)})

    t = time.perf_counter()
    result = mine_stage.mine(work, data_params, MineParams(top_k=50, batch_size=4096, device=args.device), progress=False)
    seconds = time.perf_counter() - t
    save("hnmine_mine", {"seconds": round(seconds, 1), "queries_per_second": round(args.queries / seconds),
                         "candidates": result.stats.get("candidates"), "dense_search": result.stats.get("dense_search"),
                         "row_workers": result.stats.get("row_workers"),
                         **gpu_memory(args.device)})
    # ingest + encode + mine: what `hnmine index` + `hnmine mine` cost (the search-alone phases are extra)
    save("hnmine_total", {"seconds": round(sum(results[p]["seconds"] for p in ("hnmine_ingest", "hnmine_encode",
                                                                              "hnmine_mine")), 1)})

    # The phases below measure apart from each other: one that fails is recorded and the next runs,
    # so a lent machine's single run still brings back the others.
    if args.sample:
        guarded("feed", save, feed_checks, args, data, save)
    if not args.skip_st:
        guarded("st_mine_hard_negatives", save, run_st, args, data, results, save)
    if args.devices_check:
        guarded("hnmine_encode_two_processes", save, devices_check, args, work, data_params, index_params, save)


def guarded(phase: str, save, run, *arguments) -> None:
    """Runs one phase; an exception is saved as `PHASE_error` (its type, message and the line it
    came from) instead of ending the run."""
    try:
        run(*arguments)
    except Exception as error:  # noqa: BLE001 - any failure of a phase is a figure to bring back
        frame = traceback.extract_tb(error.__traceback__)[-1]
        save(f"{phase}_error", {"error": f"{type(error).__name__}: {error}"[:400],
                                "at": f"{Path(frame.filename).name}:{frame.lineno}"})
        import torch

        gc.collect()  # the failed phase's tensors, before the next phase asks the device for memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def devices_check(args, work: Path, data_params, index_params, save) -> None:
    """The several-GPU path (index --devices), here as two processes sharing the one GPU: shows the
    path runs on CUDA and whether one process leaves the GPU idle (a second one fills the gaps)."""
    from hnmine.stages import index as index_stage

    work2 = args.workdir / "hnmine-devices"
    shutil.rmtree(work2, ignore_errors=True)
    work2.mkdir(parents=True)
    for file in work.iterdir():  # the ingested corpus and its manifest (ingest is then reused)
        if file.is_file():
            shutil.copy(file, work2 / file.name)
    index_stage.ingest_corpus(work2, data_params)
    t = time.perf_counter()
    result = index_stage.build_dense(work2, index_params.model_copy(update={"devices": [args.device] * 2}),
                                     progress=False)
    seconds = time.perf_counter() - t
    same = float(np.abs(np.load(work2 / "index" / "dense" / "embeddings.npy", mmap_mode="r")[:20000].astype(np.float32)
                        - np.load(work / "index" / "dense" / "embeddings.npy", mmap_mode="r")[:20000]).max())
    save("hnmine_encode_two_processes", {"seconds": round(seconds, 1), "docs_per_second": round(args.docs / seconds),
                                         "devices": result.stats.get("devices"),
                                         "max_abs_diff_first_20k_vs_one_process": same})


def run_st(args, data: dict, results: dict, save) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    model = SentenceTransformer(args.model, device=args.device)
    model.to(torch.float16 if args.device.startswith("cuda") else torch.float32)
    pairs = Dataset.from_dict({"query": data["queries"], "positive": data["positives"]})
    t = time.perf_counter()
    mined = mine_hard_negatives(pairs, model, corpus=data["texts"], range_max=50, num_negatives=5,
                                sampling_strategy="top", batch_size=args.batch_size, use_faiss=False,
                                output_format="n-tuple", verbose=False)
    seconds = time.perf_counter() - t
    save("st_mine_hard_negatives", {"seconds": round(seconds, 1), "rows": len(mined), **gpu_memory(args.device)})
    save("ratio", {"hnmine_over_st": round(results["hnmine_total"]["seconds"] / seconds, 3)})
    if args.device.startswith("cuda"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                             capture_output=True, text=True)
        save("nvidia_smi", {"output": smi.stdout.strip()})


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
