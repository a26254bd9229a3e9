"""int8 against fp32 encoding on the CPU: docs/s, and how many of each query's mined top 10
stay the same (recall@10 agreement of the candidates) on nfcorpus test.

Both runs go through `hnmine index` + `hnmine mine --top-k 10` with ONNX Runtime; only `--precision`
differs (int8 = dynamic quantization of the weights, per channel, reduce_range). Work dirs are kept in
--root, so a rerun reuses what is encoded.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_int8.py --root /tmp/int8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "nfcorpus"


def top10(workdir: Path) -> dict[str, set[str]]:
    from hnmine.io.files import read_table

    out: dict[str, set[str]] = {}
    for row in read_table(workdir / "candidates.arrow", ["query_id", "doc_id"]).to_pylist():
        out.setdefault(row["query_id"], set()).add(row["doc_id"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--speed-docs", type=int, default=400, help="documents timed with each encoder")
    parser.add_argument("--beir", type=Path, default=DATA, help="the BEIR folder (default: ../shared/data/nfcorpus)")
    args = parser.parse_args()
    import numpy as np

    from hnmine.config import DataParams, IndexParams, MineParams
    from hnmine.stages.index import index
    from hnmine.stages.mine import mine

    data = DataParams(beir=args.beir, split="test")
    figures = {}
    for precision in ("fp32", "int8"):
        work = args.root / precision
        # fp32 = the CPU default (precision auto), so a work dir indexed with the defaults is reused
        params = IndexParams(retrievers=["dense"], **({"precision": "int8"} if precision == "int8" else {}))
        result = index(work, data, params, progress=True)
        dense = result.stats["dense"]
        mine(work, data, MineParams(retriever="dense", top_k=10), progress=False)
        figures[precision] = {"docs": dense["docs"], "backend": dense["backend"]}
    # docs/s of both encoders back to back on the same sample, in this process (the index runs above
    # may have been reused from an earlier run under other load)
    import time

    from hnmine.io.files import read_table
    from hnmine.retrievers.encoders import Encoder
    from hnmine.stages.index import doc_texts
    from hnmine.workdir import WorkDir

    sample = doc_texts(read_table(WorkDir(args.root / "fp32").corpus))[:args.speed_docs]
    for precision in ("fp32", "int8"):
        encoder = Encoder("all-MiniLM-L6-v2", "cpu", precision=precision)
        encoder.encode(sample[:32])
        began = time.perf_counter()
        encoder.encode(sample)
        figures[precision]["docs_per_second_same_sample"] = round(len(sample) / (time.perf_counter() - began), 2)
    figures["speed_sample_docs"] = len(sample)
    a, b = top10(args.root / "int8"), top10(args.root / "fp32")
    per_query = [len(a[q] & b[q]) / len(b[q]) for q in b]
    vectors = [np.load(args.root / p / "index" / "dense" / "embeddings.npy") for p in ("fp32", "int8")]
    cosine = (vectors[0] * vectors[1]).sum(axis=1)
    figures["agreement"] = {"recall@10_of_fp32_candidates": round(float(np.mean(per_query)), 4),
                            "queries_identical": sum(x == 1.0 for x in per_query), "queries": len(per_query),
                            "cosine_mean": round(float(cosine.mean()), 4), "cosine_min": round(float(cosine.min()), 4)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
