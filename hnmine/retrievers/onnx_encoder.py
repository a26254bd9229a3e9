"""Sentence embeddings through ONNX Runtime: the CPU lever (see DESIGN: "encoding is the cost").

The transformer of a sentence-transformers model (Transformer -> Pooling [-> Normalize]) is exported
once to ONNX into the cache, traced with a *padded* batch so the attention mask stays live in the
graph, and run by ONNX Runtime; pooling and normalisation are done in numpy exactly as the model's
Pooling module says. Export needs torch; running needs only onnxruntime and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError
from hnmine.packaged.locate import cache_root
from hnmine.retrievers.tokenization import BatchTokenizer

_SUPPORTED_POOLING = ("mean", "cls", "max")
# a Pooling config.json written before sentence-transformers 6 has one bool per mode
_LEGACY_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def _pooling_modes(config: dict) -> list[str]:
    """The modes a Pooling config.json names, in sentence-transformers 6's names: its
    `pooling_mode` (a name or a list), or the legacy `pooling_mode_*` bools."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return [mode] if isinstance(mode, str) else list(mode)
    return [_LEGACY_POOLING.get(k, k) for k, v in config.items() if k.startswith("pooling_mode") and v]


def _modules(model_path: Path) -> tuple[dict, bool]:
    """(pooling config, has Normalize module) of a sentence-transformers folder; error if unsupported."""
    modules_file = model_path / "modules.json"
    if not modules_file.exists():
        raise HnmineError("the onnx backend needs a local sentence-transformers folder (modules.json)", path=model_path,
                          fix="use --backend torch, or point --model at a local folder")
    modules = json.loads(modules_file.read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise HnmineError(f"the onnx backend handles Transformer + Pooling [+ Normalize] models, not {kinds}",
                          path=modules_file, fix="use --backend torch")
    config_file = model_path / modules[1]["path"] / "config.json"
    pooling = json.loads(config_file.read_text())
    active = _pooling_modes(pooling)
    if len(active) != 1 or active[0] not in _SUPPORTED_POOLING:
        raise HnmineError(f"pooling {active} is not supported by the onnx backend", path=config_file,
                          fix="use --backend torch")
    if pooling.get("include_prompt") is False:  # prompt tokens left out of the pool: not done here
        raise HnmineError("pooling that leaves the prompt's tokens out is not supported by the onnx backend",
                          path=config_file, fix="use --backend torch")
    return {"mode": active[0]}, "Normalize" in kinds


def _weights_digest(model_path: Path) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for name in sorted(p.name for p in model_path.iterdir() if p.suffix in (".safetensors", ".bin", ".json")):
        digest.update(name.encode())
        with open(model_path / name, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def export_onnx(model_path: Path) -> Path:
    """Export the model's transformer to `<cache>/onnx/<weights digest>/model.onnx`, once."""
    model_path = Path(model_path)
    target = cache_root() / "onnx" / _weights_digest(model_path)
    if (target / "model.onnx").exists():
        return target / "model.onnx"
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    # float32 whatever the folder was saved in: ONNX Runtime has no fast fp16 kernels on a CPU.
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").float().eval()
    sample = tokenizer(["a short text", "a somewhat longer text that needs more tokens than the first"],
                       padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.inference_mode():
        torch.onnx.export(Wrapped(model), tuple(sample[n] for n in names), str(tmp / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    fused = _fuse_transformer_ops(tmp / "model.onnx", model.config)
    (tmp / "source.json").write_text(json.dumps({"model": str(model_path), "inputs": names, "fused": fused}))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target / "model.onnx"


def quantize_onnx(onnx_file: Path) -> Path:
    """int8 weights next to `onnx_file` (model.int8.onnx), made once: ONNX Runtime's dynamic
    quantization, per output channel and with reduce_range. Without reduce_range the u8 x s8 products
    can saturate on CPUs without VNNI (AVX2); with it, cosine 0.99 to fp32 (docs/benchmarks.md). The
    settings are written beside the file, so a cache made with other settings is redone."""
    target = onnx_file.with_name("model.int8.onnx")
    marker = onnx_file.with_name("int8.json")
    settings = {"per_channel": True, "reduce_range": True, "weight_type": "QInt8"}
    if target.exists() and marker.exists() and json.loads(marker.read_text()) == settings:
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f"model.int8.tmp-{os.getpid()}.onnx")
    quantize_dynamic(str(onnx_file), str(tmp), per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                     weight_type=QuantType[settings["weight_type"]],
                     extra_options={"DefaultTensorType": 1})  # fused ops have no inferred output type: float
    tmp.replace(target)
    marker.write_text(json.dumps(settings))
    return target


_FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "mpnet": "bert", "distilbert": "bert"}


def _fuse_transformer_ops(onnx_file: Path, config) -> bool:
    """Fuse attention, GELU and LayerNorm into ONNX Runtime's transformer kernels (about 1.2x on
    CPU here, same outputs to ~2e-7). Architectures the optimizer does not know keep the plain graph."""
    kind = _FUSABLE.get(getattr(config, "model_type", ""))
    if kind is None:
        return False
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(onnx_file), model_type=kind, num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size, opt_level=1)
    optimized.save_model_to_file(str(onnx_file))
    return True


class OnnxSentenceEncoder:
    def __init__(self, model_path: str, *, max_length: int | None, batch_size: int, normalize: bool, int8: bool = False):
        import onnxruntime as ort

        path = Path(model_path)
        self.pooling, has_normalize = _modules(path)
        self.normalize = normalize or has_normalize
        self.tokenizer = BatchTokenizer(path, max_length, parallel=False)  # ONNX Runtime has the cores
        self.max_length = self.tokenizer.max_length
        onnx_file = export_onnx(path)
        if int8:
            onnx_file = quantize_onnx(onnx_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.enable_cpu_mem_arena = False  # the arena keeps the largest batch's buffers for good
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.batch_size = batch_size
        self.dim = int(self.session.get_outputs()[0].shape[-1]) if isinstance(self.session.get_outputs()[0].shape[-1], int) else None

    def encode(self, texts: list[str], prompt: str = "") -> np.ndarray:
        texts = [prompt + t for t in texts] if prompt else list(texts)
        # by token count, not characters: texts of one length in characters differ widely in tokens
        # (numbers, formulas, rare words), and a batch pads to its longest row
        order = np.argsort(-self.tokenizer.lengths(texts), kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), self.batch_size):
            batch = order[start:start + self.batch_size]
            arrays = self.tokenizer.arrays([texts[i] for i in batch])
            hidden = self.session.run(None, {n: arrays[n] for n in self.inputs})[0]
            vectors = self._pool(hidden, arrays["attention_mask"])
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        if out is None:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = mask[..., None].astype(np.float32)
        mode = self.pooling["mode"]
        if mode == "cls":
            vectors = hidden[:, 0]
        elif mode == "max":
            vectors = np.where(mask > 0, hidden, -1e9).max(axis=1)
        else:
            vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors.astype(np.float32)
