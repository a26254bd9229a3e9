"""Texts to the padded int64 arrays a BERT-style encoder takes, as sentence-transformers tokenizes
(truncation at max_seq_length, right padding to the batch's longest row).

Two engines behind one interface, chosen per model:
- nanotoken: a WordPiece tokenizer in Rust that encodes a whole batch outside the GIL, on all cores,
  straight into padded numpy arrays. It reads WordPiece tokenizer.json files (BERT-family models
  such as all-MiniLM-L6-v2) and refuses the rest (`UnsupportedTokenizerError`).
- HF `tokenizers` for every other tokenizer: `encode_batch`, then the arrays filled in one vectorized
  step (a mask of row lengths), not row by row in Python.
tests/test_tokenization.py pins nanotoken's arrays to `tokenizers`' for all-MiniLM-L6-v2's tokenizer
on every shared set's passages and queries; scripts/bench_feed.py measures both.
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError

ENGINES = ("auto", "nanotoken", "tokenizers")


def _settings(path: Path, max_length: int | None) -> tuple[int, str]:
    """The truncation length (the argument, else sentence_bert_config's max_seq_length, else the
    tokenizer's model_max_length, else 512) and the pad token."""
    tokenizer_config = path / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text()) if tokenizer_config.exists() else {}
    config_file = path / "sentence_bert_config.json"
    configured = json.loads(config_file.read_text()).get("max_seq_length") if config_file.exists() else None
    model_max = settings.get("model_max_length")
    model_max = model_max if isinstance(model_max, int) and model_max < 1_000_000 else None
    pad = settings.get("pad_token") or "[PAD]"
    return int(max_length or configured or model_max or 512), pad if isinstance(pad, str) else pad.get("content", "[PAD]")


class BatchTokenizer:
    """The model folder's tokenizer.json, with `engine` "auto" (nanotoken where it supports the
    tokenizer, else `tokenizers`), or one of them by name. `.engine` says which one runs.

    `parallel=False` keeps nanotoken on the calling thread: the ONNX encoder's batches run on every
    core, and a tokenizer thread pool waiting between them took about 2 % of its speed."""

    COUNT_ROWS = 16_384  # texts per tokenizer call in `lengths`

    def __init__(self, path: Path, max_length: int | None, engine: str = "auto", parallel: bool | None = None):
        path = Path(path)
        if not (path / "tokenizer.json").exists():
            raise HnmineError("this encoding path needs the model's tokenizer.json", path=path, fix="use --backend torch")
        if engine not in ENGINES:
            raise HnmineError(f"unknown tokenizer engine '{engine}'", fix=f"use one of {', '.join(ENGINES)}")
        self.max_length, pad = _settings(path, max_length)
        self.parallel = parallel
        self.fast = None
        if engine in ("auto", "nanotoken"):
            self.fast = _nanotoken(path / "tokenizer.json", required=engine == "nanotoken")
        if self.fast is not None and self.fast.pad_token_id is None:  # it cannot pad without one
            if engine == "nanotoken":
                raise HnmineError("the tokenizer has no pad token, so nanotoken cannot pad a batch",
                                  path=path / "tokenizer.json", fix="use the tokenizers engine")
            self.fast = None
        self.engine = "nanotoken" if self.fast is not None else "tokenizers"
        if self.fast is None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
            self.tokenizer.no_padding()
            self.tokenizer.enable_truncation(max_length=self.max_length)
            self.pad_id = self.tokenizer.token_to_id(pad) or 0
        else:
            self.pad_id = self.fast.pad_token_id

    def arrays(self, texts: list[str]) -> dict[str, np.ndarray]:
        """input_ids, attention_mask and token_type_ids, int64, rows x the longest row's length."""
        if self.fast is not None:
            out = self.fast.encode_batch_padded(texts, max_length=self.max_length, truncation=True, padding="longest",
                                                parallel=self.parallel)
            return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"],
                    "token_type_ids": out["token_type_ids"]}
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        width = int(lengths.max()) if len(lengths) else 0
        mask = np.arange(width)[None, :] < lengths[:, None]
        total = int(lengths.sum())
        input_ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        input_ids[mask] = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
        token_type_ids = np.zeros((len(texts), width), dtype=np.int64)
        token_type_ids[mask] = np.fromiter(chain.from_iterable(e.type_ids for e in encodings), dtype=np.int64, count=total)
        return {"input_ids": input_ids, "attention_mask": mask.astype(np.int64), "token_type_ids": token_type_ids}

    def lengths(self, texts: list[str]) -> np.ndarray:
        """Each text's token count after truncation (special tokens included), the row lengths
        `arrays` would give, without building the padded arrays: what an encoder sorts a call by, so
        that the rows of a batch are about as long as each other. nanotoken skips the padded
        arrays; `tokenizers` runs a whole `encode_batch` for it."""
        out = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), self.COUNT_ROWS):  # bounded memory: the ids of one slice at a time
            part = texts[start:start + self.COUNT_ROWS]
            if self.fast is not None:
                out[start:start + len(part)] = self.fast.encode_batch(part, max_length=self.max_length,
                                                                      parallel=self.parallel).lengths
            else:
                out[start:start + len(part)] = [len(e.ids) for e in self.tokenizer.encode_batch(part)]
        return out


def _nanotoken(tokenizer_json: Path, required: bool):
    """nanotoken's tokenizer for the file, or None where nanotoken is missing or does not support it
    (an error when it was asked for by name)."""
    try:
        import nanotoken
    except ImportError:
        if required:
            raise HnmineError("nanotoken is not installed", fix="pip install nanotoken, or use the tokenizers engine") from None
        return None
    try:
        return nanotoken.Tokenizer(str(tokenizer_json))
    except nanotoken.UnsupportedTokenizerError as error:
        if required:
            raise HnmineError(f"nanotoken does not support this tokenizer ({error})", path=tokenizer_json,
                              fix="use the tokenizers engine") from None
        return None
