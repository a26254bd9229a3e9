"""`hnmine index`: ingest the corpus, then build the dense and/or BM25 index over it.

Outputs in WORKDIR: corpus.arrow (doc_id, title, text, text_hash), corpus.skipped.arrow (ids of
rows skipped for empty text), index/dense/ (and index/dense/NAME/ for each --name: several models in one work dir) and index/bm25/,
each with a manifest. Each output is
reused when its manifest matches, so adding BM25 to a dense work dir does not re-encode.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from hnmine import schema
from hnmine.config import DataParams, IndexParams, MineParams
from hnmine.device import default_device, resolve_precision
from hnmine.errors import HnmineError
from hnmine.index_names import dense_stage_name
from hnmine.io import inputs, readers
from hnmine.io.files import BatchWriter, read_table, write_table
from hnmine.io.manifest import input_fingerprint
from hnmine.io.text_hashes import BatchHasher
from hnmine.packaged.fingerprint import model_fingerprint
from hnmine.packaged.resolve import resolve_model
from hnmine.retrievers import embedding_store, encoders, faiss_index
from hnmine.retrievers.bm25 import BM25Index
from hnmine.retrievers.imported import import_embeddings, recall_at_k
from hnmine.rounds import check_round_corpus
from hnmine.stages.common import corpus_identity
from hnmine.text import document_text
from hnmine.workdir import Done, Stage, StageResult, WorkDir, holding_lock, is_stage_current, run_stage


def dense_identity(params: IndexParams) -> dict:
    keys = ["model", "query_prompt", "document_prompt", "max_length", "normalize", "faiss_factory", "backend", "precision",
            "storage"]
    if params.embeddings is not None:  # the file itself is fingerprinted among the inputs
        # max_length, backend and precision still shape the query encoder that mine builds from this manifest
        keys = ["model", "query_prompt", "max_length", "normalize", "faiss_factory", "backend", "precision", "storage",
                "embeddings_id_column", "embeddings_column"]
    # the model by content too: one saved again under its path is another model
    return {k: params.identity()[k] for k in keys} | {"imported": params.embeddings is not None,
                                                      "model_content": model_fingerprint(params.model)}


def bm25_identity(params: IndexParams) -> dict:
    return {k: v for k, v in params.identity().items() if k.startswith("bm25_")}


def doc_texts(corpus: pa.Table) -> list[str]:
    return [document_text(t, x) for t, x in zip(corpus.column(schema.TITLE).to_pylist(), corpus.column(schema.TEXT).to_pylist())]


def ingest_corpus(workdir: Path, data: DataParams, progress: bool = True) -> StageResult:
    """corpus.arrow from the user's corpus, streamed batch by batch: memory holds one batch of
    documents and the ids seen so far, not the corpus."""
    wd = WorkDir(workdir)
    stage = Stage("corpus", wd.corpus, corpus_identity(data), inputs.corpus_files(data), {"corpus": wd.corpus}, root=wd.root,
                  sidecars=(wd.corpus_skipped,))

    def transform() -> Done:
        check_round_corpus(wd.corpus)
        stats: dict = {}
        with BatchWriter(wd.corpus, schema.INDEXED_CORPUS) as writer, BatchHasher(readers.CORPUS_BATCH_ROWS) as hasher, \
                tqdm(desc="read corpus", unit="doc", disable=not progress, mininterval=1.0) as bar:

            def write(corpus: pa.Table, hashes) -> None:
                writer.write(corpus.append_column(schema.TEXT_HASH, hashes()))
                bar.update(corpus.num_rows)

            pending = None  # the batch being hashed while the next one is read
            for corpus in inputs.iter_corpus(data, stats):
                if pending:
                    write(*pending)
                pending = corpus, hasher.submit(corpus)
            if pending:
                write(*pending)
            stats["text_hash_processes"] = hasher.processes
        skipped = stats.pop("skipped_ids", [])
        write_table(pa.table({"skipped": pa.array(skipped, pa.string())}), wd.corpus_skipped)
        warnings = []
        if stats.get("corpus_skipped_empty_text"):
            warnings.append(f"{stats['corpus_skipped_empty_text']} corpus rows with empty text skipped "
                            f"(their ids are in {wd.corpus_skipped})")
        if stats.get("corpus_repeated_text"):
            warnings.append(f"{stats['corpus_repeated_text']} corpus rows repeating an earlier row's text skipped "
                            "(identical texts are one document)")
        return Done(stats, {"corpus": {"rows": writer.rows}}, warnings)

    return run_stage(stage, transform)


def encoder_factory(params: IndexParams):
    """Builds the corpus encoder only when a chunk is left to encode (a resumed run may need none)."""
    return lambda: encoders.Encoder(params.model, params.device, params.max_length, params.batch_size, params.normalize,
                                 params.backend, params.precision, params.batch_tokens)


def _dense_stage(wd: WorkDir, params: IndexParams) -> Stage:
    inputs = {"corpus": wd.corpus} | ({"embeddings": params.embeddings} if params.embeddings else {})
    out = wd.dense_index(params.name)
    name = dense_stage_name(params.name)
    return Stage(name, out, dense_identity(params), inputs, {name: out}, needs=(out / embedding_store.EMBEDDINGS_FILE,),
                 root=wd.root)


def build_dense(workdir: Path, params: IndexParams, progress: bool = True) -> StageResult:
    wd = WorkDir(workdir)
    out = wd.dense_index(params.name)
    identity = dense_identity(params)
    stage = _dense_stage(wd, params)

    def transform() -> Done:
        start = time.perf_counter()
        if params.embeddings is not None:
            doc_ids = read_table(wd.corpus, [schema.DOC_ID]).column(schema.DOC_ID).to_pylist()
            out.mkdir(parents=True, exist_ok=True)
            stats = import_embeddings(params.embeddings, doc_ids, out / embedding_store.EMBEDDINGS_FILE, normalize=params.normalize,
                                      dtype=params.storage, id_column=params.embeddings_id_column,
                                      column=params.embeddings_column)
            embeddings = embedding_store.load_embeddings(out)
            stats |= {"docs": len(doc_ids), "docs_encoded": 0}
        else:
            corpus = read_table(wd.corpus)
            texts = doc_texts(corpus)
            devices = encoding_devices(params)
            # one device named: encode on it, in this process
            encode = params.model_copy(update={"device": devices[0], "devices": None}) if len(devices) == 1 else params
            make_encoder = encoder_factory(encode)
            with tqdm(total=len(texts), desc="encode corpus", unit="doc", disable=not progress) as bar:
                by_workers = encode_on_devices(workdir, params, devices, bar) if len(devices) > 1 else 0
                embeddings, stats = embedding_store.encode_corpus(
                    texts, out, make_encoder, identity={**identity, "corpus": input_fingerprint(wd.corpus)},
                    prompt=params.document_prompt, chunk_size=params.chunk_size, progress=bar.update, dtype=params.storage,
                )
            stats["docs"] = len(texts)
            if len(devices) > 1:
                stats |= {"devices": devices, "docs_encoded": stats["docs_encoded"] + by_workers,
                          "docs_resumed": stats["docs_resumed"] - by_workers}
            device = devices[0] if len(devices) > 1 else encode.device or default_device()
            stats["precision"] = resolve_precision(params.precision, device)
            stats["backend"] = encoders.resolve_backend(params.backend, resolve_model(params.model), device,
                                                     stats["precision"])
        encode_seconds = time.perf_counter() - start
        if params.faiss_factory != "Flat":
            index = faiss_index.build_faiss(embeddings, params.faiss_factory)
            faiss_index.save_faiss(index, out / faiss_index.FAISS_FILE)
            stats["faiss_build_seconds"] = round(time.perf_counter() - start - encode_seconds, 2)
            if params.recall_sample:
                # with mine's default search parameters; `hnmine mine --nprobe/--ef-search` changes them
                defaults = MineParams()
                searcher = faiss_index.FaissSearch(index, "cpu", defaults.nprobe, defaults.ef_search, embeddings,
                                                   faiss_index.rerank_factor(params.faiss_factory))
                stats |= recall_at_k(searcher, embeddings, k=10, sample=params.recall_sample)
                stats["recall_rerank"] = searcher.rerank
                stats["recall_search"] = {"nprobe": defaults.nprobe, "ef_search": defaults.ef_search}
        stats["storage"] = params.storage
        stats["docs_per_second"] = round(stats["docs_encoded"] / encode_seconds, 1) \
            if stats["docs_encoded"] and encode_seconds else None
        return Done(stats, {"embeddings": {"rows": int(embeddings.shape[0]), "dim": int(embeddings.shape[1])}})

    return run_stage(stage, transform)


def encode_part(workdir: Path, params: IndexParams, k: int, n: int) -> dict:
    """Encode the k-th of n interleaved parts of the corpus chunks (a Ray task's share of `index`).
    The `index` call that follows finds every chunk saved and only assembles the matrix."""
    wd = WorkDir(workdir)
    if params.embeddings is not None or is_stage_current(_dense_stage(wd, params)):
        return {"docs_encoded": 0}
    texts = doc_texts(read_table(wd.corpus))
    _, stats = embedding_store.encode_corpus(texts, wd.dense_index(params.name), encoder_factory(params),
                                   identity={**dense_identity(params), "corpus": input_fingerprint(wd.corpus)},
                                   prompt=params.document_prompt, chunk_size=params.chunk_size, dtype=params.storage,
                                   part=(k, n))
    return stats


def encoding_devices(params: IndexParams) -> list[str]:
    """The devices to encode on in parallel: --devices, else every GPU when there are several and
    --device names none. A list of one (or none) means the usual single-process encoding."""
    if params.devices:
        for device in params.devices:
            check_device(device)
        return list(params.devices)
    if params.device is not None or params.embeddings is not None:
        return []
    gpus = Path("/proc/driver/nvidia/gpus")  # checked first: importing torch costs the CPU/ONNX path seconds
    if not gpus.is_dir() or len(list(gpus.iterdir())) < 2:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] if count > 1 else []


def check_device(device: str) -> None:
    """A CUDA device that this machine does not have is an error, not a silent fall-back."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = device.partition(":")[2]
    if not count or (index.isdigit() and int(index) >= count):
        have = f"cuda:0 to cuda:{count - 1}" if count else "none"
        raise HnmineError(f"device '{device}' is not on this machine (CUDA devices: {have})",
                          fix="name devices that torch.cuda.device_count() shows, or cpu")


def _encode_part_worker(workdir: Path, params: IndexParams, k: int, n: int) -> dict:
    try:
        return encode_part(workdir, params, k, n)
    except Exception as exc:  # noqa: BLE001 - sent back as text: exception objects may not unpickle
        return {"error": f"{type(exc).__name__}: {exc}"}


def encode_on_devices(workdir: Path, params: IndexParams, devices: list[str], bar) -> int:
    """Encode the corpus chunks in one process per device, each taking every n-th chunk (the same
    interleaved parts a Ray run uses), and return the documents they encoded. The caller's
    `encode_corpus` then finds every chunk saved and only assembles the matrix.

    Own processes rather than sentence-transformers' multi-process pool: each worker runs hnmine's
    encoder (Rust tokenizer one batch ahead on a GPU) and saves its chunks, so a crash resumes."""
    import multiprocessing

    n = len(devices)
    chunks_dir = WorkDir(workdir).dense_index(params.name) / embedding_store.CHUNKS_DIR
    jobs = [(workdir, params.model_copy(update={"device": device, "devices": None}), k, n)
            for k, device in enumerate(devices)]
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        pending = pool.starmap_async(_encode_part_worker, jobs)
        shown = 0
        while not pending.ready():
            pending.wait(1.0)
            done = min(bar.total, len(list(chunks_dir.rglob("*.npy"))) * params.chunk_size) if chunks_dir.exists() else 0
            if done > shown:
                bar.update(done - shown)
                shown = done
        results = pending.get()
    bar.n = 0  # encode_corpus counts every chunk again as it assembles
    bar.refresh()
    errors = [f"{devices[k]}: {r['error']}" for k, r in enumerate(results) if "error" in r]
    if errors:
        raise HnmineError(f"encoding failed on {errors[0]}", fix="check that every --devices entry exists "
                                                                 "(torch.cuda.device_count()) and rerun: saved chunks are kept")
    return sum(r.get("docs_encoded", 0) for r in results)


def build_bm25(workdir: Path, params: IndexParams) -> StageResult:
    wd = WorkDir(workdir)
    out = wd.bm25
    stage = Stage("bm25", out, bm25_identity(params), {"corpus": wd.corpus}, {"bm25": out}, root=wd.root)

    def transform() -> Done:
        corpus = read_table(wd.corpus)
        index = BM25Index.build(doc_texts(corpus), method=params.bm25_method, k1=params.bm25_k1, b=params.bm25_b,
                                stemmer=params.bm25_stemmer, stopwords=params.bm25_stopwords)
        # bm25s writes several files: build in a sibling folder, then swap it in.
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        index.save(tmp, {"stemmer": params.bm25_stemmer, "stopwords": params.bm25_stopwords})
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        stats = {"docs": corpus.num_rows, "vocabulary": len(index.retriever.vocab_dict)}
        return Done(stats, {"bm25": {"rows": corpus.num_rows}})

    return run_stage(stage, transform)


@holding_lock
def index(workdir: Path, data: DataParams, params: IndexParams, progress: bool = True) -> StageResult:
    """Ingest the corpus and build every index in `params.retrievers`; reuse whatever is current."""
    workdir = Path(workdir)
    parts = [ingest_corpus(workdir, data, progress)]
    for retriever in dict.fromkeys(params.retrievers):
        parts.append(build_dense(workdir, params, progress) if retriever == "dense" else build_bm25(workdir, params))
    outputs = {name: path for part in parts for name, path in part.outputs.items()}
    stats = {part.stage: part.stats for part in parts}
    return StageResult("index", outputs, stats, reused=all(p.reused for p in parts),
                       seconds=sum(p.seconds for p in parts), warnings=[w for p in parts for w in p.warnings], parts=parts)

