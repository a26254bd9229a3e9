"""sentence-transformers' forward pass fed from hnmine.retrievers.tokenization: the torch encoding path
(on CUDA and on a CPU; MPS keeps sentence-transformers' own encode).

On a GPU, `SentenceTransformer.encode` spends its time in the Python tokenizer (docs/gpu.md: 3.6k
docs/s on an H200, the forward pass alone 49.5k). Here:

- the texts of a call are sorted by token count (nanotoken counts a call's tokens in a small
  fraction of the encode; with `tokenizers`, which would pay a second whole tokenization, by
  characters) and tokenized in groups of GROUP_BATCHES batches, AHEAD groups ahead, in threads
  (no GIL, every core);
- each group is re-sorted by token count and cut into batches: `batch_size` rows, or, with
  `batch_tokens`, as many rows as fit that many padded tokens (rows x the batch's longest row), so
  short texts (queries) go in large batches and long ones in small. A batch pads to its longest
  row, and texts of one length in characters differ widely in tokens (numbers, formulas, rare
  words); scripts/bench_feed.py counts the padding of both orders;
- on CUDA the tokenizer threads pack each batch into one pinned host tensor, the main thread copies
  it on a side stream and the forward pass waits for that copy on the device (an event), not on the
  host: the host queues batch k + 1 while the GPU computes batch k. The vectors stay on the device
  until a chunk ends, then come back in one copy the device queues behind the chunk's last batch;
- `encode_chunks` keeps one pipeline across the chunks of a corpus (embedding_store saves each as
  it comes): the chunks' tokens are counted (to order them) up to AHEAD chunks ahead and their
  groups tokenized AHEAD groups ahead, across chunk boundaries, so a chunk boundary does not
  drain the device's queue;
- an SDPA model gets its attention mask already in 4D (or none for a batch without padding): from
  the 2D mask, transformers' mask builder reads `mask.all()` back to the host to decide whether it
  can drop the mask, a device sync in every batch's forward pass.

Same modules, same vectors (to float rounding: a batch's padding changes a row's sums only at that
level). tests/test_inputs_and_indexes.py checks them against `SentenceTransformer.encode` on a CPU;
scripts/bench_gpu.py measures the speed, the forward-pass ceiling and the agreement on a GPU.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def sdpa_transformer(model):
    """The model's first module when it runs a Hugging Face model through SDPA, else None."""
    first = model[0]
    hf_model = getattr(first, "auto_model", None) or getattr(first, "model", None)
    implementation = getattr(getattr(hf_model, "config", None), "_attn_implementation", None)
    return first if implementation == "sdpa" else None


def embedding_dimension(model) -> int:
    """The model's output width (sentence-transformers 6 renamed the method; 5 has only the old name)."""
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(method())


def token_budget_batches(lengths: np.ndarray, max_rows: int, batch_tokens: int | None) -> list[slice]:
    """Consecutive batches over rows sorted by length, longest first: `max_rows` rows each, or with
    `batch_tokens` as many rows (up to `max_rows`) as keep rows x the batch's first (longest) length
    within the budget; a row longer than the budget goes alone."""
    n = len(lengths)
    if batch_tokens is None:
        return [slice(s, min(s + max_rows, n)) for s in range(0, n, max_rows)]
    out, start = [], 0
    while start < n:
        rows = max(1, min(max_rows, batch_tokens // max(int(lengths[start]), 1), n - start))
        out.append(slice(start, start + rows))
        start += rows
    return out


class PrefetchTorchEncoder:
    """A loaded SentenceTransformer (Transformer + Pooling [+ Normalize] folder) encoding through
    BatchTokenizer; `batch_tokens` turns on batches by a padded-token budget (see the module)."""

    AHEAD = 4
    GROUP_BATCHES = 8  # a tokenizer call covers this many batch_size-row batches

    def __init__(self, model, path: Path, max_length: int | None, batch_size: int, normalize: bool,
                 batch_tokens: int | None = None):
        from hnmine.retrievers.onnx_encoder import _modules
        from hnmine.retrievers.tokenization import BatchTokenizer

        _modules(path)
        self.model = model
        self.tokenizer = BatchTokenizer(path, max_length or model.max_seq_length)
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.normalize = normalize
        self.cuda = model.device.type == "cuda"
        self.sdpa = sdpa_transformer(model)
        # Seconds the last `encode` (or `encode_chunks`) call's main thread spent on the tokenizer
        # instead of queueing batches: waiting for a chunk's tokens to be counted (to order it) and
        # for each tokenized group.
        # An upper bound on the time the device starved for the tokenizer (it may still have had
        # batches queued), so a feed far under its forward-pass ceiling with little of it is not
        # bound by the tokenizer threads (the main thread's own Python, copies and the GIL may be).
        self.waited = 0.0

    def _max_rows(self) -> int:
        """The most rows in a batch: batch_size, or with a token budget a whole group (queries)."""
        return self.batch_size * self.GROUP_BATCHES if self.batch_tokens else self.batch_size

    def _groups(self, texts: list[str]) -> list[np.ndarray]:
        """The call's positions, longest text first, in the groups one tokenizer call covers."""
        if self.tokenizer.engine == "nanotoken":
            key = self.tokenizer.lengths(texts)
        else:
            key = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        order = np.argsort(-key, kind="stable")
        step = self.batch_size * self.GROUP_BATCHES
        return [order[s:s + step] for s in range(0, len(texts), step)]

    def packed_batches(self, texts: list[str]) -> list[tuple[np.ndarray, object, bool]]:
        """Every batch `encode` would run on these texts, packed as it packs them, on the calling
        thread: what the benchmarks time the forward pass on and count the padding of."""
        return [batch for group in self._groups(texts) for batch in self._pack(texts, group)]

    def _pack(self, texts: list[str], rows: np.ndarray) -> list[tuple[np.ndarray, object, bool]]:
        """Tokenize one group; returns (positions in the call, features, padded) per batch: the
        features a [3, rows, width] int64 tensor, pinned on CUDA, or a dict of arrays on a CPU;
        padded whether any row is shorter than the batch's width."""
        import torch

        arrays = self.tokenizer.arrays([texts[i] for i in rows])
        lengths = arrays["attention_mask"].sum(axis=1)
        by_length = np.argsort(-lengths, kind="stable")
        lengths = lengths[by_length]
        out = []
        for part in token_budget_batches(lengths, self._max_rows(), self.batch_tokens):
            picked, width = by_length[part], int(lengths[part.start])
            padded = bool(lengths[part.stop - 1] < width)
            if self.cuda:
                stacked = np.stack([arrays[name][picked, :width] for name in FEATURES])
                out.append((rows[picked], torch.from_numpy(stacked).pin_memory(), padded))
            else:
                out.append((rows[picked], {name: torch.from_numpy(np.ascontiguousarray(arrays[name][picked, :width]))
                                           for name in FEATURES}, padded))
        return out

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        (vectors,) = self.encode_chunks([texts], prompt)
        return vectors

    def encode_chunks(self, chunks: Iterable[list[str]], prompt: str = "") -> Iterator[np.ndarray]:
        """Each chunk's vectors, in order, from one pipeline that runs on across chunk boundaries:
        chunks are ordered (their tokens counted) up to AHEAD chunks ahead and tokenized AHEAD groups
        ahead, whichever chunk the groups belong to, and a finished chunk's vectors come back to the
        host by a copy the device queues behind its last batch, handed out once it has landed. So a chunk boundary (a corpus saved
        in resumable chunks) does not drain the device's queue, as one `encode` call per chunk did."""
        import torch

        self.waited = 0.0
        dim = embedding_dimension(self.model)
        device = self.model.device
        copy_stream = torch.cuda.Stream(device) if self.cuda else None
        landing: deque[_Landing] = deque()
        with ThreadPoolExecutor(max_workers=self.AHEAD) as pool:
            work = self._work(pool, chunks, prompt)
            pending = deque(itertools.islice(work, self.AHEAD))
            while pending:
                chunk, group = pending.popleft()
                started = time.perf_counter()
                batches = group.result() if group is not None else []
                self.waited += time.perf_counter() - started
                with torch.inference_mode():  # not held across a yield: the caller's code runs between
                    for rows, host, padded in batches:
                        features = self._to_device(host, device, copy_stream)
                        vectors = self._forward(features, padded)["sentence_embedding"].float()
                        if self.normalize:
                            vectors = torch.nn.functional.normalize(vectors, dim=-1)
                        chunk.positions.append(rows)
                        chunk.outputs.append(vectors)
                    chunk.groups_left -= 1
                    if chunk.groups_left <= 0:
                        landing.append(_Landing(chunk, dim, self.cuda))
                # drawn after this group's batches are queued: drawing may wait for a chunk's plan
                pending.extend(itertools.islice(work, 1))
                while landing and (landing[0].landed() or not pending):
                    yield landing.popleft().vectors()

    def _work(self, pool: ThreadPoolExecutor, chunks: Iterable[list[str]], prompt: str) -> Iterator[tuple]:
        """(chunk, the future of one tokenized group) for every group of every chunk, in order; an
        empty chunk comes once with no group. Chunks are ordered in the pool AHEAD chunks ahead,
        and a group is submitted for tokenizing as it is drawn (AHEAD groups ahead of the device)."""
        def plan(texts: list[str]) -> _Chunk:
            texts = [prompt + t for t in texts] if prompt else list(texts)
            return _Chunk(texts, self._groups(texts) if texts else [])

        chunks = iter(chunks)
        planned = deque(pool.submit(plan, texts) for texts in itertools.islice(chunks, self.AHEAD))
        while planned:
            started = time.perf_counter()
            chunk = planned.popleft().result()
            self.waited += time.perf_counter() - started
            planned.extend(pool.submit(plan, texts) for texts in itertools.islice(chunks, 1))
            if not chunk.groups:
                yield chunk, None
            for group in chunk.groups:
                yield chunk, pool.submit(self._pack, chunk.texts, group)

    def _forward(self, features: dict, padded: bool) -> dict:
        """The model on one batch. An SDPA transformer gets the mask as SDPA takes it (boolean,
        [rows, 1, 1, width], broadcast over heads and query positions), or none when no row is
        padded, so that nothing in the forward pass reads the device back; pooling gets the 2D mask."""
        if self.sdpa is None:
            return self.model(features)
        mask = features["attention_mask"]
        out = self.sdpa({**features, "attention_mask": mask[:, None, None, :].bool() if padded else None})
        out["attention_mask"] = mask
        for module in list(self.model)[1:]:
            out = module(out)
        return out

    @staticmethod
    def _to_device(host, device, copy_stream) -> dict:
        """A batch's features on the model's device: on CUDA copied on the side stream, with the
        compute stream waiting for the copy on the device (the host does not wait)."""
        import torch

        if copy_stream is None:
            return {name: value.to(device) for name, value in host.items()}
        compute = torch.cuda.current_stream(device)
        with torch.cuda.stream(copy_stream):
            stacked = host.to(device, non_blocking=True)
        compute.wait_stream(copy_stream)
        stacked.record_stream(compute)  # its block is not reused before compute is done with it
        return dict(zip(FEATURES, stacked.unbind(0)))


class _Chunk:
    """One chunk of an `encode_chunks` stream: its texts, their groups and the vectors so far."""

    def __init__(self, texts: list[str], groups: list[np.ndarray]):
        self.texts, self.groups = texts, groups
        self.groups_left = len(groups)
        self.positions: list[np.ndarray] = []
        self.outputs: list = []


class _Landing:
    """A finished chunk's vectors on their way to the host: on CUDA one copy into pinned memory,
    queued on the compute stream behind the chunk's last batch, with an event to ask whether it
    has landed without waiting for it."""

    def __init__(self, chunk: _Chunk, dim: int, cuda: bool):
        import torch

        self.count, self.dim = len(chunk.texts), dim
        self.positions = np.concatenate(chunk.positions) if chunk.positions else np.zeros(0, dtype=np.int64)
        self.event = None
        if not chunk.outputs:
            self.host = torch.zeros((0, dim))
            return
        vectors = torch.cat(chunk.outputs)
        chunk.outputs.clear()
        if cuda:
            # on the stream of the vectors' device, which need not be the current device (cuda:k)
            stream = torch.cuda.current_stream(vectors.device)
            self.host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
            with torch.cuda.stream(stream):
                self.host.copy_(vectors, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record(stream)
        else:
            self.host = vectors

    def landed(self) -> bool:
        return self.event is None or self.event.query()

    def vectors(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        out = np.empty((self.count, self.dim), dtype=np.float32)
        out[self.positions] = self.host.numpy()
        return out
