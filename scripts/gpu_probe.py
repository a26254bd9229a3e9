"""Where does GPU encoding time go? (run on the GPU machine after scripts/bench_gpu.py made the corpus)

Measures, on 100k documents: the model's tokenizer as sentence-transformers calls it, the Rust
`tokenizers` library on the same tokenizer.json, `SentenceTransformer.encode` at two batch sizes,
and the forward pass alone.   python3 scripts/gpu_probe.py MODEL_DIR [CORPUS_PARQUET]
"""

import json
import os
import sys
import time

import pyarrow.parquet as pq
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

corpus = sys.argv[2] if len(sys.argv) > 2 else "/tmp/gpu/input/corpus.parquet"
texts = pq.read_table(corpus).column("text").to_pylist()[:100_000]
model = SentenceTransformer(sys.argv[1], device="cuda")
model.to(torch.float16)
out = {"cpus": os.cpu_count(), "tokenizer_class": type(model[0].tokenizer).__name__}

t = time.perf_counter()
for s in range(0, len(texts), 512):
    model.tokenize(texts[s:s + 512])
out["model_tokenizer_docs_per_s"] = round(len(texts) / (time.perf_counter() - t))

tok = Tokenizer.from_file(os.path.join(sys.argv[1], "tokenizer.json"))
tok.enable_truncation(256)
tok.enable_padding()
t = time.perf_counter()
for s in range(0, len(texts), 2048):
    tok.encode_batch(texts[s:s + 2048])
out["rust_tokenizers_docs_per_s"] = round(len(texts) / (time.perf_counter() - t))
print(out, flush=True)

for bs in (512, 2048):
    model.encode(texts[:2048], batch_size=bs)
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.encode(texts, batch_size=bs, convert_to_numpy=True)
    torch.cuda.synchronize()
    out[f"encode_bs{bs}_docs_per_s"] = round(len(texts) / (time.perf_counter() - t))
    print(out, flush=True)

enc = tok.encode_batch(sorted(texts, key=len)[50_000:50_512])
feats = {"input_ids": torch.tensor([e.ids for e in enc]).cuda(),
         "attention_mask": torch.tensor([e.attention_mask for e in enc]).cuda(),
         "token_type_ids": torch.tensor([e.type_ids for e in enc]).cuda()}
out["median_batch_tokens"] = int(feats["input_ids"].shape[1])
with torch.inference_mode():
    model(feats)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        model(feats)
    torch.cuda.synchronize()
out["forward_only_docs_per_s_bs512_median_len"] = round(20 * 512 / (time.perf_counter() - t))
print(json.dumps(out), flush=True)
