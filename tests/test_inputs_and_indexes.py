"""Generic table inputs (Parquet, CSV, TSV) and the FAISS factory indexes, on real rows."""

from __future__ import annotations

import csv
import time

import polars as pl
import pytest
from conftest import MODEL, dataset, read_jsonl

from hnmine.config import DataParams, ExportParams, FilterParams, IndexParams, MineParams
from hnmine.io.files import read_table
from hnmine.run_config import RunConfig
from hnmine.stages.mine import mine
from hnmine.stages.run import run


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv"])
def test_separate_files_with_named_columns(tmp_path, adi_rows, fmt):
    corpus, queries, qrels = adi_rows
    docs = pl.DataFrame({"pid": [d["_id"] for d in corpus], "heading": [d["title"] for d in corpus],
                         "body": [d["text"] for d in corpus]})
    qs = pl.DataFrame({"qid": [q["_id"] for q in queries], "question": [q["text"] for q in queries]})
    paths = {}
    for name, frame in (("corpus", docs), ("queries", qs)):
        paths[name] = tmp_path / f"{name}.{fmt}"
        if fmt == "parquet":
            frame.write_parquet(paths[name])
        else:
            frame.write_csv(paths[name], separator="\t" if fmt == "tsv" else ",", quote_style="always")
    with open(tmp_path / "qrels.tsv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["query-id", "corpus-id", "score"])
        writer.writerows(qrels)
    data = DataParams(corpus=paths["corpus"], queries=paths["queries"], qrels=tmp_path / "qrels.tsv", id_column="pid",
                      text_column="body", title_column="heading", query_id_column="qid", query_text_column="question")
    config = RunConfig(workdir=tmp_path / "w", data=data, index=IndexParams(retrievers=["bm25"]),
                       mine=MineParams(retriever="bm25", top_k=10), filter=FilterParams(num_negatives=3),
                       export=ExportParams())
    results = {r.stage: r for r in run(config, progress=False)}
    assert results["index"].stats["corpus"]["corpus_rows"] == 82
    assert results["mine"].stats["queries"] == 35 and results["mine"].stats["positives"] == 170
    assert pl.read_parquet(results["export"].outputs["train"]).height == 170


@pytest.mark.parametrize("factory", ["HNSW32", "IVF4,Flat"])
def test_faiss_factory_indexes_find_the_exact_neighbours_on_a_small_corpus(tmp_path, adi, factory):
    data = DataParams(beir=adi)
    found = {}
    for name in ("Flat", factory):
        config = RunConfig(workdir=tmp_path / name.replace(",", "_"), data=data,
                           index=IndexParams(model=MODEL, faiss_factory=name), mine=MineParams(top_k=5))
        run(config, progress=False)
        if name != "Flat":
            assert (config.workdir / "index" / "dense" / "faiss.index").exists()
        rows = read_table(config.workdir / "candidates.arrow").to_pylist()
        found[name] = {(r["query_id"], r["doc_id"]) for r in rows if not r["is_positive"]}
    recall = len(found["Flat"] & found[factory]) / len(found["Flat"])
    assert recall >= 0.95, f"{factory} recall@5 against exact search: {recall:.2f}"


def test_mine_needs_the_index_it_searches(tmp_path, adi):
    from hnmine.errors import HnmineError
    from hnmine.stages.index import index

    index(tmp_path, DataParams(beir=adi), IndexParams(retrievers=["bm25"]), progress=False)
    with pytest.raises(HnmineError, match=r"no finished dense index.*hnmine index --retrievers dense"):
        mine(tmp_path, DataParams(beir=adi), MineParams(retriever="hybrid"), progress=False)


@pytest.mark.parametrize("rescore_on_device", [False, True])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_torch_exact_search_matches_faiss_flat(monkeypatch, dtype, rescore_on_device):
    """The GPU search path (run here on the CPU), with the matrix split into several blocks."""
    import numpy as np

    from hnmine.retrievers import exact_search, faiss_index

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((5000, 48)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(5000, 64, replace=False)] + 0.3 * rng.standard_normal((64, 48)).astype(np.float32)
    monkeypatch.setattr(exact_search.TorchExactSearch, "BLOCK", 1100)
    searcher = exact_search.TorchExactSearch(docs, "cpu", dtype=dtype, rescore_on_device=rescore_on_device)
    assert len(searcher.blocks) == 5 and (searcher.exact is not None) == rescore_on_device
    scores, positions = searcher.search(queries, 20)
    exact_scores, exact_positions = faiss_index.FaissSearch(faiss_index.build_faiss(docs, "Flat"), "cpu", 1, 16).search(queries, 20)
    np.testing.assert_allclose(scores, exact_scores, rtol=0, atol=1e-5)
    assert (positions == exact_positions).all()


def test_block_exact_search_matches_faiss_flat(tmp_path):
    """The CPU Flat search scans the memory-mapped matrix in blocks instead of copying it into FAISS:
    same ids and scores as IndexFlatIP, ties by position, padding past the corpus, float16 storage."""
    import faiss
    import numpy as np

    from hnmine.retrievers import exact_search, faiss_index

    rng = np.random.default_rng(1)
    docs = rng.standard_normal((5000, 48)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    docs[4000] = docs[10]  # an exact duplicate in a later block: equal scores, the lower position first
    np.save(tmp_path / "m.npy", docs)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    queries = docs[rng.choice(5000, 64, replace=False)] + 0.3 * rng.standard_normal((64, 48)).astype(np.float32)
    queries[0] = docs[10]
    flat = faiss.IndexFlatIP(48)
    flat.add(docs)
    expected_scores, expected_positions = flat.search(queries, 30)
    scores, positions = exact_search.exact_search(mapped, queries, 30, block=700)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)
    assert (np.sort(positions, axis=1) == np.sort(expected_positions, axis=1)).all()
    assert positions[0, :2].tolist() == [10, 4000]
    assert (np.diff(scores, axis=1) <= 0).all()
    searcher, kind = faiss_index.open_search(tmp_path, "Flat", mapped, "cpu", nprobe=1, ef_search=16)
    assert kind == "exact-block-scan"
    assert (searcher.search(queries, 30)[1] == positions).all()

    few = exact_search.exact_search(mapped[:20], queries[:3], 25, block=7)
    assert few[1].shape == (3, 25) and (few[1][:, 20:] == -1).all() and np.isinf(few[0][:, 20:]).all()
    assert sorted(few[1][0, :20].tolist()) == list(range(20))

    rising = np.outer(np.arange(1, 401, dtype=np.float32) / 400, np.eye(48, dtype=np.float32)[0])  # each block beats the last
    rising_scores, rising_positions = exact_search.exact_search(rising, np.eye(48, dtype=np.float32)[:1], 30, block=50)
    assert rising_positions[0].tolist() == list(range(399, 369, -1))
    np.testing.assert_allclose(rising_scores[0], np.arange(400, 370, -1) / 400, rtol=1e-6)

    half = docs.astype(np.float16)
    fp16_positions = exact_search.exact_search(half, queries, 10, block=999)[1]
    reference = faiss.IndexFlatIP(48)
    reference.add(half.astype(np.float32))
    assert (fp16_positions == reference.search(queries, 10)[1]).mean() > 0.99


def test_prefetching_torch_encoder_gives_sentence_transformers_vectors(adi_rows):
    """The GPU encoding path (Rust tokenizer groups ahead in threads), run here on the CPU: by rows,
    and by a token budget small enough that batches of the long texts hold a few rows and those of
    the queries many."""
    import numpy as np

    from hnmine.packaged.resolve import resolve_model
    from hnmine.retrievers import encoders, torch_feed

    corpus, queries, _ = adi_rows
    texts = [d["title"] + " " + d["text"] for d in corpus[:40]] + [q["text"] for q in queries[:30]]
    path = resolve_model(MODEL)
    model = encoders._load_model(path, "cpu", None, "fp32")
    expected = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    for batch_tokens in (None, 300):
        fast = torch_feed.PrefetchTorchEncoder(model, __import__("pathlib").Path(path), None, batch_size=7, normalize=True,
                                               batch_tokens=batch_tokens)
        np.testing.assert_allclose(fast.encode(texts), expected, atol=2e-5)
        np.testing.assert_allclose(fast.encode(texts, prompt="query: "),
                                   model.encode(["query: " + t for t in texts], normalize_embeddings=True), atol=2e-5)
        assert fast.encode([]).shape == (0, expected.shape[1])
    encoder = encoders.Encoder(path, "cpu", batch_size=7, backend="torch")  # on a CPU too, torch runs the feed
    assert encoder.fast is not None
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=2e-5)
    packed = fast._pack(texts, np.arange(len(texts)))
    assert sorted(np.concatenate([rows for rows, _, _ in packed]).tolist()) == list(range(len(texts)))
    shapes = [features["input_ids"].shape for _, features, _ in packed]
    assert [bool((features["attention_mask"] == 0).any()) for _, features, _ in packed] == [p for _, _, p in packed]
    assert all(r * w <= 300 or r == 1 for r, w in shapes) and max(r for r, _ in shapes) > 7 > min(r for r, _ in shapes)
    # the wait for tokenized groups is counted per call: each group's packing held up here, and the
    # first group's result cannot come sooner than its own delay
    pack = fast._pack

    def slow_pack(*arguments):
        time.sleep(0.2)
        return pack(*arguments)

    fast._pack = slow_pack
    started = time.perf_counter()
    np.testing.assert_allclose(fast.encode(texts), expected, atol=2e-5)
    assert 0.19 <= fast.waited <= time.perf_counter() - started
    fast._pack = pack
    fast.encode(texts)
    assert fast.waited < 0.19


def test_prefetching_torch_encoder_forward_reads_nothing_back_from_the_device(adi_rows):
    """A GPU forward pass that reads a tensor's value on the host (`.item()`, `bool(t)`, a shape that
    depends on data) waits for the device and stalls the feed once per batch. On the CPU the same ops
    go through the dispatcher: count them over an encode call whose batches are padded and not."""
    import collections
    import pathlib

    import numpy as np
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from hnmine.packaged.resolve import resolve_model
    from hnmine.retrievers import encoders, torch_feed

    host_reads = ("_local_scalar_dense", "is_nonzero", "item", "nonzero", "masked_select", "unique")

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).removeprefix("aten.")
            if name.split(".")[0] in host_reads:
                self.seen[name] += 1
            return func(*args, **(kwargs or {}))

    corpus, queries, _ = adi_rows
    texts = [d["title"] + " " + d["text"] for d in corpus[:30]] + [q["text"] for q in queries[:20]] + ["same width"] * 12
    path = resolve_model(MODEL)
    model = encoders._load_model(path, "cpu", None, "fp32")
    fast = torch_feed.PrefetchTorchEncoder(model, pathlib.Path(path), None, batch_size=6, normalize=True)
    assert fast.sdpa is not None
    padded = [p for _, _, p in fast._pack(texts, np.argsort([-len(t) for t in texts], kind="stable"))]
    assert True in padded and False in padded
    with HostReads() as reads:
        vectors = fast.encode(texts)
    assert not reads.seen
    np.testing.assert_allclose(vectors, model.encode(texts, normalize_embeddings=True), atol=2e-5)
    with HostReads() as reads, torch.inference_mode():
        model(fast._pack(texts, np.arange(len(texts)))[0][1])
    assert reads.seen, "the counter no longer sees transformers' own mask check: it proves nothing"


def test_encoders_order_a_call_by_token_count(adi_rows):
    """A batch pads to its longest row, and texts of one length in characters differ widely in
    tokens: the torch feed (with nanotoken) and the ONNX encoder sort a call by token count, so
    row lengths fall from batch to batch; the torch feed with `tokenizers` sorts each group of
    batches by token count."""
    import pathlib

    import numpy as np

    from hnmine.packaged.resolve import resolve_model
    from hnmine.retrievers import encoders, torch_feed
    from hnmine.retrievers.onnx_encoder import OnnxSentenceEncoder
    from hnmine.retrievers.tokenization import BatchTokenizer

    texts = [d["title"] + " " + d["text"] for d in read_jsonl(dataset("scifact") / "corpus.jsonl.gz")[:600]]
    texts += [q["text"] for q in adi_rows[1][:40]]
    path = pathlib.Path(resolve_model(MODEL))
    model = encoders._load_model(path, "cpu", None, "fp32")

    def row_lengths(batches):
        return [features["attention_mask"].sum(axis=1).numpy() for _, features, _ in batches]

    for batch_tokens in (None, 4096):
        fast = torch_feed.PrefetchTorchEncoder(model, path, None, batch_size=16, normalize=True, batch_tokens=batch_tokens)
        assert fast.tokenizer.engine == "nanotoken"
        lengths = np.concatenate(row_lengths(fast.packed_batches(texts)))
        assert len(lengths) == len(texts) and (np.diff(lengths) <= 0).all()
        fast.tokenizer = BatchTokenizer(path, fast.tokenizer.max_length, "tokenizers")
        groups = row_lengths(fast.packed_batches(texts))
        step = fast.batch_size * fast.GROUP_BATCHES
        per_group = np.split(np.concatenate(groups), range(step, len(texts), step))
        assert all((np.diff(g) <= 0).all() for g in per_group)

    onnx = OnnxSentenceEncoder(str(path), max_length=None, batch_size=16, normalize=True)
    session, seen = onnx.session, []

    class Recording:  # the real session, with each batch's row lengths noted on the way in
        def run(self, names, feed):
            seen.append(feed["attention_mask"].sum(axis=1))
            return session.run(names, feed)

    onnx.session = Recording()
    some = texts[::12]
    vectors = onnx.encode(some)
    assert (np.diff(np.concatenate(seen)) <= 0).all()
    np.testing.assert_allclose(vectors, model.encode(some, normalize_embeddings=True), atol=2e-5)


def test_torch_feed_streams_chunks_without_draining_between_them(tmp_path, monkeypatch, adi_rows):
    """A corpus is encoded in resumable chunks. The torch feed takes them as one stream: when the
    first chunk's vectors come out, later chunks have been drawn and are being tokenized, so a
    chunk boundary does not stall the device, yet the stream is not drawn to its end; each chunk's
    vectors are sentence-transformers', an empty chunk gives none. encode_corpus saves each chunk
    in a thread meanwhile: a save that fails stops the stage with nothing that looks finished, and
    the rerun resumes from the chunks saved; parts (Ray, --devices) assemble the same matrix."""
    import pathlib
    import threading

    import numpy as np

    from hnmine.packaged.resolve import resolve_model
    from hnmine.retrievers import embedding_store, encoders, torch_feed

    corpus, queries, _ = adi_rows
    texts = [d["title"] + " " + d["text"] for d in corpus[:45]]
    chunks = [texts[:20], texts[20:27], []] + [[t] for t in texts[27:]]
    path = pathlib.Path(resolve_model(MODEL))
    model = encoders._load_model(str(path), "cpu", None, "fp32")
    fast = torch_feed.PrefetchTorchEncoder(model, path, None, batch_size=4, normalize=True)
    first_text = {"passage: " + c[0]: k for k, c in enumerate(chunks) if c}
    drawn, packed, lock = [], [], threading.Lock()
    pack = fast._pack

    def recording_pack(chunk_texts, rows):
        with lock:
            packed.append(first_text[chunk_texts[0]])
        return pack(chunk_texts, rows)

    def source():
        for k, chunk in enumerate(chunks):
            drawn.append(k)
            yield chunk

    fast._pack = recording_pack
    out, at_first_yield = [], None
    for vectors in fast.encode_chunks(source(), prompt="passage: "):
        if at_first_yield is None:
            with lock:
                at_first_yield = (len(drawn), set(packed))
        out.append(vectors)
    assert fast.AHEAD < at_first_yield[0] < len(chunks)  # drawn ahead, but not to the stream's end
    assert {0, 1, 3} <= at_first_yield[1]  # the next chunks' groups were tokenizing meanwhile
    assert [len(v) for v in out] == [len(c) for c in chunks]
    np.testing.assert_allclose(np.concatenate(out), model.encode(["passage: " + t for t in texts],
                                                                 normalize_embeddings=True), atol=2e-5)

    encoder = encoders.Encoder(str(path), "cpu", batch_size=4, backend="torch")
    reference = model.encode(texts, normalize_embeddings=True)
    matrix, stats = embedding_store.encode_corpus(texts, tmp_path / "dense", lambda: encoder, identity={}, prompt="",
                                                  chunk_size=8)
    assert stats["docs_encoded"] == 45 and stats["dim"] == 384
    np.testing.assert_allclose(matrix, reference, atol=2e-5)

    def failing_save(target, vectors):
        if target.name == "00002.npy":
            raise OSError("No space left on device")
        save(target, vectors)

    save = embedding_store._save_chunk
    monkeypatch.setattr(embedding_store, "_save_chunk", failing_save)
    with pytest.raises(OSError, match="No space"):
        embedding_store.encode_corpus(texts, tmp_path / "full", lambda: encoder, identity={}, prompt="", chunk_size=8)
    assert not (tmp_path / "full" / embedding_store.EMBEDDINGS_FILE).exists()
    assert {f.name for f in (tmp_path / "full").rglob("*.npy")} == {"00000.npy", "00001.npy"}
    monkeypatch.setattr(embedding_store, "_save_chunk", save)
    shown = []
    matrix, stats = embedding_store.encode_corpus(texts, tmp_path / "full", lambda: encoder, identity={}, prompt="",
                                                  chunk_size=8, progress=shown.append)
    assert (stats["docs_resumed"], stats["docs_encoded"], sum(shown)) == (16, 29, 45)
    np.testing.assert_allclose(matrix, reference, atol=2e-5)

    for k in (0, 1):
        none, stats = embedding_store.encode_corpus(texts, tmp_path / "parts", lambda: encoder, identity={}, prompt="",
                                                    chunk_size=8, part=(k, 2))
        assert none is None and stats["docs_encoded"] == (24, 21)[k]
    matrix, stats = embedding_store.encode_corpus(texts, tmp_path / "parts", lambda: encoder, identity={}, prompt="",
                                                  chunk_size=8)
    assert (stats["docs_resumed"], stats["docs_encoded"]) == (45, 0)
    np.testing.assert_allclose(matrix, reference, atol=2e-5)


def test_token_budget_batches_fill_the_budget_in_order():
    import numpy as np

    from hnmine.retrievers.torch_feed import token_budget_batches

    lengths = np.array([500, 120, 100, 100, 60, 20, 20, 20, 20, 20, 20])
    assert token_budget_batches(lengths, 4, None) == [slice(0, 4), slice(4, 8), slice(8, 11)]
    batches = token_budget_batches(lengths, 4, 240)
    assert batches == [slice(0, 1), slice(1, 3), slice(3, 5), slice(5, 9), slice(9, 11)]
    assert all(b.stop - b.start == 1 or (b.stop - b.start) * lengths[b.start] <= 240 for b in batches)


def test_encoding_on_several_devices_gives_the_one_process_matrix(tmp_path, adi, adi_indexed):
    """--devices (one process per GPU on a multi-GPU machine), run here as two CPU processes: each
    encodes every other chunk, the parent assembles, and the matrix is the single-process one."""
    import json

    import numpy as np

    from hnmine.errors import HnmineError
    from hnmine.stages.index import index

    params = IndexParams(retrievers=["dense"], model=MODEL, chunk_size=16, devices=["cpu", "cpu"])
    result = index(tmp_path / "work", DataParams(beir=adi), params, progress=False)
    stats = result.stats["dense"]
    assert stats["devices"] == ["cpu", "cpu"] and stats["docs_encoded"] == stats["docs"] == 82
    assert stats["docs_resumed"] == 0 and "encoding_seconds" not in stats  # this process only assembled
    single = np.load(adi_indexed / "index" / "dense" / "embeddings.npy")
    np.testing.assert_allclose(np.load(tmp_path / "work" / "index" / "dense" / "embeddings.npy"), single, atol=1e-5)
    assert not (tmp_path / "work" / "index" / "dense" / "chunks").exists()
    manifest = json.loads((tmp_path / "work" / "index" / "dense" / "manifest.json").read_text())
    assert manifest["outputs"]["embeddings"]["rows"] == 82
    # devices are execution-only: the single-process run's index is current for the same params
    again = index(tmp_path / "work", DataParams(beir=adi), params.model_copy(update={"devices": None}), progress=False)
    assert again.reused

    with pytest.raises(HnmineError, match=r"encoding failed on nodevice.*--devices"):
        index(tmp_path / "bad", DataParams(beir=adi), params.model_copy(update={"devices": ["cpu", "nodevice"]}),
              progress=False)
    assert not (tmp_path / "bad" / "index" / "dense" / "embeddings.npy").exists()


def test_int8_encoding_stays_close_to_fp32_and_mines_the_same_neighbours(tmp_path, adi, adi_indexed):
    """--precision int8: ONNX Runtime with quantized weights (per channel, reduce_range). The vectors
    stay at cosine >= 0.98 to the fp32 index's and most of each query's top 10 is the same."""
    import shutil

    import numpy as np

    from hnmine.errors import HnmineError
    from hnmine.stages.index import index

    data = DataParams(beir=adi)
    result = index(tmp_path / "int8", data, IndexParams(retrievers=["dense"], model=MODEL, precision="int8"), progress=False)
    assert result.stats["dense"]["precision"] == "int8" and result.stats["dense"]["backend"] == "onnx"
    int8 = np.load(tmp_path / "int8" / "index" / "dense" / "embeddings.npy")
    fp32 = np.load(adi_indexed / "index" / "dense" / "embeddings.npy")
    cosine = (int8 * fp32).sum(axis=1)
    assert cosine.min() >= 0.98, cosine.min()

    mine(tmp_path / "int8", data, MineParams(retriever="dense", top_k=10), progress=False)
    fp32_work = tmp_path / "fp32"
    shutil.copytree(adi_indexed, fp32_work)
    mine(fp32_work, data, MineParams(retriever="dense", top_k=10), progress=False)

    def top(work):
        table = read_table(work / "candidates.arrow", ["query_id", "doc_id"]).to_pylist()
        out: dict[str, set] = {}
        for row in table:
            out.setdefault(row["query_id"], set()).add(row["doc_id"])
        return out

    a, b = top(tmp_path / "int8"), top(fp32_work)
    agreement = sum(len(a[q] & b[q]) for q in b) / sum(len(b[q]) for q in b)
    assert agreement >= 0.9, agreement

    with pytest.raises(HnmineError, match="--precision int8 needs the ONNX encoder"):
        index(tmp_path / "bad", data, IndexParams(retrievers=["dense"], model=MODEL, precision="int8", backend="torch"),
              progress=False)


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_bm25_scores_for_candidates_are_bm25s_scores_bit_for_bit(adi_rows, method):
    """mine's BM25 column looks candidates up in the postings instead of scoring the whole corpus:
    it must give bm25s' own scores exactly, absent tokens (bm25l, bm25+) and unknown words included."""
    import numpy as np

    from hnmine.retrievers.bm25 import BM25Index

    corpus, queries, _ = adi_rows
    bm25 = BM25Index.build([f"{d['title']} {d['text']}" for d in corpus], method=method, k1=1.2, b=0.75,
                           stemmer="english", stopwords="en")
    everything = list(range(len(corpus)))
    for text in [q["text"] for q in queries] + ["zzzz qqqq", "the of and"]:
        tokens = bm25.tokenize([text])[0]
        expected = bm25.retriever.get_scores(tokens).tolist() if any(tokens) else [0.0] * len(corpus)
        assert bm25.scores_for(text, everything) == expected
        shuffled = list(np.random.default_rng(len(text)).permutation(len(corpus))[:20])
        assert bm25.scores_for(text, shuffled) == [expected[p] for p in shuffled]
    assert sum(s > 0 for s in bm25.scores_for(queries[0]["text"], everything)) > 0


def test_one_named_device_is_the_device_encoded_on(tmp_path, adi):
    """--devices with one entry encodes there: a device this machine lacks is an error, not a
    silent fall-back to the default device."""
    from hnmine.errors import HnmineError
    from hnmine.stages.index import index

    with pytest.raises(HnmineError, match=r"device 'cuda:7' is not on this machine"):
        index(tmp_path / "w", DataParams(beir=adi), IndexParams(model=MODEL, devices=["cuda:7"]), progress=False)
    assert not (tmp_path / "w" / "index" / "dense" / "manifest.json").exists()
    built = index(tmp_path / "w", DataParams(beir=adi), IndexParams(model=MODEL, devices=["cpu"]), progress=False)
    assert built.parts[1].stats["docs"] == 82


def test_mine_encodes_queries_in_the_index_runtime_on_any_device(adi_indexed):
    """A CPU-built (ONNX Runtime) index mined on a GPU machine: the query encoder stays the
    corpus's ONNX fp32 one instead of asking ONNX for the GPU's fp16 (an error naming flags that
    mine does not have)."""
    import numpy as np

    from hnmine.io.manifest import read_manifest
    from hnmine.stages.mine import query_encoder

    manifest = read_manifest(adi_indexed / "index" / "dense" / "manifest.json")
    assert manifest["stats"]["backend"] == "onnx" and manifest["stats"]["precision"] == "fp32"
    on_gpu, on_cpu = query_encoder(manifest, "cuda", 256), query_encoder(manifest, "cpu", 256)
    assert (on_gpu.backend, on_gpu.precision) == ("onnx", "fp32")
    texts = ["what is information retrieval", "document indexing by computer"]
    np.testing.assert_array_equal(on_gpu.encode(texts), on_cpu.encode(texts))
