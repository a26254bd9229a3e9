"""The host side of encoding: texts to padded model inputs, without the model, for docs/benchmarks.md.

Passages: every shared set's documents cut into pieces of 60 words (title + text), the first
--passages of them. Paths, each on all cores and on one (a child process with RAYON_NUM_THREADS=1,
nanotoken with parallel=False), in batches of 512 at max_length 256 (all-MiniLM-L6-v2):
- `tokenizers` + a row-by-row fill: HF `encode_batch`, then each row copied into the arrays in
  Python (the reference the others are compared with);
- `tokenizers` + the vectorized fill (BatchTokenizer's fallback engine);
- nanotoken (BatchTokenizer's engine for WordPiece models).
Every batch's arrays are compared with the first path's. Then the CPU encode path (ONNX Runtime,
fp32) on --encode-passages of them, with each engine and with the call ordered by characters instead
of token counts: its docs/s must not fall; and the torch backend on a CPU, sentence-transformers'
encode against the torch feed that hnmine's Encoder runs there. Last, the share of
padding in the batches the torch (GPU) feed forms, on these passages and on --padding-passages of
scripts/bench_gpu.py's corpus: the most unpadded attention could save. Last, the gaps between forward
passes at the chunk boundaries of a corpus saved in chunks (`chunk_boundaries`).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_feed.py [--passages 39000] [--encode-passages 2000] [--padding-passages 100000] [--chunk-passages 4096]

Writes docs/benchmarks.md between `<!-- BEGIN feed -->` and `<!-- END feed -->`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _common import cpu_cores, load_beir, machine_line, padding_share, splice_section  # noqa: E402  (scripts/ is on sys.path)

DOC = REPO / "docs" / "benchmarks.md"
SETS = ("scifact", "nfcorpus", "medline-glasgow", "cacm", "adi")
BATCH = 512
MAX_LENGTH = 256


def passages(limit: int) -> list[str]:
    out = []
    for name in SETS:
        for text in load_beir(name).texts:
            words = text.split()
            out += [" ".join(words[i:i + 60]) for i in range(0, len(words), 60)]
    return out[:limit]


def rowwise(tokenizer, pad_id: int, texts: list[str]) -> dict[str, np.ndarray]:
    """`tokenizers` encode_batch and a row-by-row fill: the packing this benchmark compares with."""
    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    arrays = {"input_ids": np.full((len(texts), width), pad_id, dtype=np.int64),
              "attention_mask": np.zeros((len(texts), width), dtype=np.int64),
              "token_type_ids": np.zeros((len(texts), width), dtype=np.int64)}
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        arrays["input_ids"][row, :n] = encoding.ids
        arrays["attention_mask"][row, :n] = 1
        arrays["token_type_ids"][row, :n] = encoding.type_ids
    return arrays


def paths(model: Path, one_core: bool) -> dict:
    from tokenizers import Tokenizer

    from hnmine.retrievers.tokenization import BatchTokenizer

    reference = Tokenizer.from_file(str(model / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(max_length=MAX_LENGTH)
    fallback = BatchTokenizer(model, MAX_LENGTH, "tokenizers")
    fast = BatchTokenizer(model, MAX_LENGTH, "nanotoken")
    if one_core:
        def nano(texts):
            out = fast.fast.encode_batch_padded(texts, max_length=MAX_LENGTH, parallel=False)
            return {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    else:
        nano = fast.arrays
    return {"tokenizers, row-by-row fill": lambda t: rowwise(reference, fallback.pad_id, t),
            "tokenizers, vectorized fill": fallback.arrays, "nanotoken": nano}


def measure(model: Path, texts: list[str], one_core: bool) -> dict:
    """docs/s of each path over `texts`, and the batches whose arrays differ from the first path's."""
    runs = paths(model, one_core)
    batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
    reference = [runs["tokenizers, row-by-row fill"](b) for b in batches]  # also warms every cache
    out = {}
    for name, run in runs.items():
        run(batches[0])
        start = time.perf_counter()
        arrays = [run(b) for b in batches]
        seconds = time.perf_counter() - start
        differ = sum(any(not np.array_equal(a[k], r[k]) for k in r) for a, r in zip(arrays, reference))
        out[name] = {"docs_per_second": len(texts) / seconds, "batches_differing": differ, "batches": len(batches)}
    return out


def encode_speed(model: Path, texts: list[str]) -> dict:
    from hnmine.retrievers.onnx_encoder import OnnxSentenceEncoder
    from hnmine.retrievers.tokenization import BatchTokenizer

    encoder = OnnxSentenceEncoder(str(model), max_length=None, batch_size=64, normalize=True)
    out, vectors = {}, {}
    for run in ("tokenizers", "nanotoken", "characters"):
        # as the encoder has it; "characters": nanotoken, the call ordered by characters (the reference)
        encoder.tokenizer = BatchTokenizer(model, encoder.max_length, "tokenizers" if run == "tokenizers" else "nanotoken",
                                           parallel=False)
        if run == "characters":
            encoder.tokenizer.lengths = lambda batch: np.array([len(t) for t in batch])
        encoder.encode(texts[:64])
        start = time.perf_counter()
        vectors[run] = encoder.encode(texts)
        out[run] = len(texts) / (time.perf_counter() - start)
    out["max_abs_difference"] = float(np.abs(vectors["tokenizers"] - vectors["nanotoken"]).max())
    out["max_abs_difference_orders"] = float(np.abs(vectors["characters"] - vectors["nanotoken"]).max())
    return out | torch_speed(model, texts, vectors["nanotoken"])


def torch_speed(model: Path, texts: list[str], onnx_vectors: np.ndarray) -> dict:
    """The torch backend on a CPU, fp32, batches of 64: sentence-transformers' own encode (the
    reference) and hnmine's Encoder, which runs the torch feed there."""
    from hnmine.retrievers.encoders import Encoder

    encoder = Encoder(str(model), "cpu", batch_size=64, backend="torch", precision="fp32")
    runs = {"sentence-transformers": lambda t: encoder.model.encode(t, batch_size=64, normalize_embeddings=True,
                                                                    convert_to_numpy=True),
            "feed": encoder.encode}
    out, vectors = {}, {}
    for name, run in runs.items():
        run(texts[:64])
        start = time.perf_counter()
        vectors[name] = run(texts)
        out[f"torch {name}"] = len(texts) / (time.perf_counter() - start)
    out["torch max_abs_difference"] = float(max(np.abs(vectors["feed"] - vectors["sentence-transformers"]).max(),
                                                np.abs(vectors["feed"] - onnx_vectors).max()))
    return out


def chunk_boundaries(model: Path, texts: list[str], chunk_size: int) -> dict:
    """The main thread's gaps between forward passes (time in which a GPU would get no batch) when
    the corpus is encoded in saved chunks, torch feed on a CPU, fp32, batches of 64: one `encode`
    call per chunk with the chunk saved on the main thread (the reference: how encode_corpus ran
    before), against encode_corpus, which streams the chunks through one pipeline and saves each
    in a thread. Gaps at a chunk boundary apart from those inside a chunk; the same vectors."""
    import tempfile

    from hnmine.retrievers import embedding_store
    from hnmine.retrievers.encoders import Encoder

    encoder = Encoder(str(model), "cpu", batch_size=64, backend="torch", precision="fp32")
    feed, forward = encoder.fast, encoder.fast._forward
    spans = []

    def timed_forward(*arguments):
        started = time.perf_counter()
        result = forward(*arguments)
        spans.append((started, time.perf_counter()))
        return result

    feed._forward = timed_forward
    order = np.argsort([-len(t) for t in texts], kind="stable")
    chunks = [order[s:s + chunk_size] for s in range(0, len(texts), chunk_size)]
    # batches per chunk (as the feed cuts them), to tell a boundary's gap from one inside a chunk
    per_chunk = [len(feed.packed_batches([texts[i] for i in rows])) for rows in chunks]
    boundaries = set(np.cumsum(per_chunk)[:-1].tolist())
    encoder.encode(texts[:64])
    out, matrices = {}, {}
    with tempfile.TemporaryDirectory() as root:
        for run in ("an encode call per chunk", "one stream"):
            spans.clear()
            started = time.perf_counter()
            if run == "one stream":
                matrix, _ = embedding_store.encode_corpus(texts, Path(root) / "stream", lambda: encoder, identity={},
                                                          prompt="", chunk_size=chunk_size)
                matrices[run] = np.asarray(matrix)
            else:
                matrices[run] = np.zeros((len(texts), 384), dtype=np.float32)
                for c, rows in enumerate(chunks):
                    vectors = encoder.encode([texts[i] for i in rows])
                    embedding_store._save_chunk(Path(root) / f"{c:05d}.npy", vectors)
                    matrices[run][rows] = vectors
            seconds = time.perf_counter() - started
            gaps = [spans[k][0] - spans[k - 1][1] for k in range(1, len(spans))]
            at = [g for k, g in enumerate(gaps, start=1) if k in boundaries]
            inside = [g for k, g in enumerate(gaps, start=1) if k not in boundaries]
            out[run] = {"seconds": seconds, "batches": len(spans), "boundary_ms": 1000 * float(np.mean(at)),
                        "inside_ms": 1000 * float(np.mean(inside)), "boundaries": len(at)}
    feed._forward = forward
    out["max_abs_difference"] = float(np.abs(matrices["one stream"] - matrices["an encode call per chunk"]).max())
    return out


def padding(model: Path, corpora: dict[str, list[str]], budget: int) -> dict:
    """The share of padding in the torch feed's batches (PrefetchTorchEncoder.packed_batches, one
    call per corpus), by rows and by a token budget, with each engine: nanotoken's feed orders a
    call by token count, the `tokenizers` feed by characters."""
    from sentence_transformers import SentenceTransformer

    from hnmine.retrievers.tokenization import BatchTokenizer
    from hnmine.retrievers.torch_feed import PrefetchTorchEncoder

    st = SentenceTransformer(str(model), device="cpu")
    out = {}
    for name, texts in corpora.items():
        for engine in ("nanotoken", "tokenizers"):
            for plan, tokens in ((f"batches of {BATCH} rows", None), (f"a budget of {budget:,} tokens", budget)):
                feed = PrefetchTorchEncoder(st, model, None, BATCH, True, tokens)
                feed.tokenizer = BatchTokenizer(model, feed.tokenizer.max_length, engine)
                out.setdefault(name, {})[f"{engine}, {plan}"] = padding_share(feed.packed_batches(texts))
    return out


def gpu_corpus(n: int) -> list[str]:
    """scripts/bench_gpu.py's synthetic passages (its first n, same seed)."""
    import tempfile

    from bench_gpu import synthetic_passages
    from bench_scale import sentences_file

    with tempfile.TemporaryDirectory() as root:
        return synthetic_passages(sentences_file(Path(root)), n, np.random.default_rng(0))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=39_000)
    parser.add_argument("--encode-passages", type=int, default=2000)
    parser.add_argument("--padding-passages", type=int, default=100_000,
                        help="passages of scripts/bench_gpu.py's corpus whose batches' padding is counted")
    parser.add_argument("--budget", type=int, default=65_536, help="the token budget of the padding count")
    parser.add_argument("--chunk-passages", type=int, default=4096,
                        help="passages encoded in saved chunks to time the chunk boundaries (0 = skip)")
    parser.add_argument("--chunk-size", type=int, default=2048, help="documents per chunk there (index's default)")
    parser.add_argument("--child", choices=["one-core"], help=argparse.SUPPRESS)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)

    from hnmine.packaged.resolve import resolve_model

    model = Path(resolve_model("all-MiniLM-L6-v2"))
    texts = passages(args.passages)
    if args.child:
        print(json.dumps(measure(model, texts, one_core=True)))
        return
    cores = cpu_cores()
    every = measure(model, texts, one_core=False)
    child = subprocess.run([sys.executable, __file__, "--passages", str(args.passages), "--child", "one-core"],
                           env=os.environ | {"RAYON_NUM_THREADS": "1"}, capture_output=True, text=True, check=True)
    one = json.loads(child.stdout.strip().splitlines()[-1])
    encode = encode_speed(model, texts[:args.encode_passages])
    pads = padding(model, {f"these {len(texts)} passages": texts,
                           f"{args.padding_passages:,} passages of scripts/bench_gpu.py's corpus": gpu_corpus(args.padding_passages)},
                   args.budget)
    chunked = chunk_boundaries(model, texts[:args.chunk_passages], args.chunk_size) if args.chunk_passages else None
    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_feed.py --passages {args.passages} "
        f"--encode-passages {args.encode_passages} --padding-passages {args.padding_passages} --budget {args.budget} "
        f"--chunk-passages {args.chunk_passages} --chunk-size {args.chunk_size}`",
        f"- Machine: {machine_line()}",
        f"- {len(texts)} passages of at most 60 words from {', '.join(SETS)}; all-MiniLM-L6-v2's tokenizer, "
        f"batches of {BATCH}, max_length {MAX_LENGTH}; one core = RAYON_NUM_THREADS=1 (nanotoken: parallel=False). "
        "Differing batches: those whose input_ids, attention_mask or token_type_ids differ from the first path's.",
        "",
        f"| host path (tokenize + pack, no model) | docs/s on {cores} cores | per core | docs/s on one core | "
        "differing batches |",
        "|---|---|---|---|---|",
    ]
    for name in every:
        lines.append(f"| {name} | {every[name]['docs_per_second']:,.0f} | {every[name]['docs_per_second'] / cores:,.0f} | "
                     f"{one[name]['docs_per_second']:,.0f} | {every[name]['batches_differing'] + one[name]['batches_differing']}"
                     f" of {every[name]['batches'] + one[name]['batches']} |")
    lines += ["", f"CPU encode (ONNX Runtime fp32, batches of 64, {args.encode_passages} passages, the tokenizer on "
                  "the calling thread as OnnxSentenceEncoder runs it): "
                  f"{encode['tokenizers']:.1f} docs/s fed by `tokenizers`, {encode['nanotoken']:.1f} by nanotoken, "
                  "each with the call ordered by token count; largest difference between their vectors "
                  f"{encode['max_abs_difference']:.1e}. Fed by nanotoken with the call ordered by characters "
                  f"(the reference): {encode['characters']:.1f} docs/s, vectors within "
                  f"{encode['max_abs_difference_orders']:.1e} of the ordered ones. The torch backend on the same "
                  f"passages (fp32, batches of 64): `SentenceTransformer.encode` {encode['torch sentence-transformers']:.1f} "
                  f"docs/s, hnmine's `Encoder` (the torch feed) {encode['torch feed']:.1f}; the feed's vectors within "
                  f"{encode['torch max_abs_difference']:.1e} of both sentence-transformers' and ONNX's."]
    plans = list(next(iter(pads.values())))
    lines += ["", "Padding in the torch (GPU) feed's batches, as a share of the tokens the forward pass runs on "
                  "(`PrefetchTorchEncoder.packed_batches`, the corpus as one call; with nanotoken the call is "
                  "ordered by token count, with `tokenizers` by characters; each group of 8 batches re-sorted "
                  "by token count):", "",
              "| passages | " + " | ".join(plans) + " |", "|---|" + "---|" * len(plans)]
    lines += [f"| {name} | " + " | ".join(f"{p[plan]:.1%}" for plan in plans) + " |" for name, p in pads.items()]
    if chunked:
        lines += ["", f"Chunk boundaries: {args.chunk_passages} of the passages encoded in saved chunks of {args.chunk_size} "
                      "(torch feed on this CPU, fp32, batches of 64), the main thread's gap between two forward passes, "
                      "in which a GPU is queued nothing new:", "",
                  "| chunks encoded as | seconds | mean gap at a chunk boundary | mean gap inside a chunk |",
                  "|---|---|---|---|"]
        lines += [f"| {run} | {chunked[run]['seconds']:.1f} | {chunked[run]['boundary_ms']:.1f} ms "
                  f"({chunked[run]['boundaries']} boundar{'y' if chunked[run]['boundaries'] == 1 else 'ies'}) | {chunked[run]['inside_ms']:.2f} ms |"
                  for run in ("an encode call per chunk", "one stream")]
        lines += ["", "An encode call per chunk, each chunk saved on the main thread, is the reference; one stream is "
                      "`embedding_store.encode_corpus` (`encode_chunks`, saves in a thread). Largest difference between "
                      f"their matrices: {chunked['max_abs_difference']:.1e}. The seconds include the saves, and for "
                      "one stream encode_corpus's hashing of the texts and assembly of the matrix."]
    body = "\n".join(lines)
    print(body)
    if not args.no_doc:
        splice_section(DOC, "feed", body, heading="The host feed: tokenizing without the GIL")


if __name__ == "__main__":
    main(sys.argv[1:])
