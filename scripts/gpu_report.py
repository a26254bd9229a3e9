"""The doc section for one scripts/bench_gpu.py results file: its table of phases and the
extrapolation to MS MARCO's 8.8M passages and 503k queries (`python scripts/bench_gpu.py --render
RESULTS.json` writes it into docs/gpu.md)."""

from __future__ import annotations

MS_MARCO_DOCS, MS_MARCO_QUERIES = 8_800_000, 503_000


def extrapolate(r: dict) -> dict:
    """8.8M passages and 503k queries from this run: ingest and encode at their per-1M rates, the
    search at the rate measured on the largest matrix, the rest of mine scaled by queries."""
    docs, queries = int(r["inputs"]["docs"]), int(r["inputs"]["queries"])
    search = r.get("search_large") or r["search"]
    search_docs = int(search.get("docs", docs))
    search_s = search["search_seconds"] * (MS_MARCO_DOCS / search_docs) * (MS_MARCO_QUERIES / queries)
    rest = max(r["hnmine_mine"]["seconds"] - r["search"]["search_seconds"], 0) * MS_MARCO_QUERIES / queries
    out = {"ingest": r["hnmine_ingest"]["seconds"] * MS_MARCO_DOCS / docs,
           "encode": r["hnmine_encode"]["seconds"] * MS_MARCO_DOCS / docs,
           "search": search_s, "rest of mine": rest}
    return {k: round(v, 1) for k, v in out.items()} | {"total": round(sum(out.values()), 1)}


def render(r: dict) -> str:
    """The doc section for one results file; a run cut short (the device's time limit) shows the
    phases it finished and says where it stopped, with no extrapolation unless mine finished."""
    a = r["args"]
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in a.items()
                     if k in ("docs", "queries", "batch_size", "chunk_size", "batch_tokens", "sample", "budget", "search_docs")
                     and v not in ("None", "0"))
    switches = "".join(f" --{k.replace('_', '-')}" for k in ("skip_st", "devices_check") if a.get(k) == "True")
    inputs = r.get("inputs", {"docs": a["docs"], "queries": a["queries"], "mean_doc_chars": "?"})
    docs, queries = int(inputs["docs"]), int(inputs["queries"])
    lines = [f"- Command: `python3 scripts/bench_gpu.py --sentences sentences.txt.gz --model all-MiniLM-L6-v2-fp16 {flags} "
             f"--out gpu_bench.json{switches}`",
             f"- Machine: {r.get('gpu', a['device'])}, {r.get('cpus', '?')} CPU cores, torch {r['torch']}, "
             f"Python {r['python']}, commit {r.get('commit', '?')}",
             f"- {docs:,} synthetic passages (mean {inputs['mean_doc_chars']} characters), {queries:,} queries, top 50", "",
             "| phase | figure |", "| --- | --- |"]
    if "hnmine_ingest" in r:
        lines.append(f"| ingest | {r['hnmine_ingest']['seconds']} s |")
    if "hnmine_encode" in r:
        e = r["hnmine_encode"]
        split = ""
        if e.get("encoding_seconds"):  # bench_gpu clears its work dir first: every document was encoded
            rest = max(e["seconds"] - e["encoding_seconds"] - e["encoder_load_seconds"], 0.0)  # rounded parts
            split = (f"; of it loading the model {e['encoder_load_seconds']:.1f} s, the encoder's calls "
                     f"{e['encoding_seconds']:.1f} s ({docs / e['encoding_seconds']:,.0f} docs/s), the rest (reading, "
                     f"hashing, sorting, assembling the matrix; chunks are saved in a thread meanwhile) {rest:.1f} s")
        chunks = f", saved in chunks of {e['chunk_size']:,}" if e.get("chunk_size") else ""
        lines.append(f"| encode, one process ({e.get('backend')}, {e.get('precision')}{chunks}) | {e['seconds']} s "
                     f"({e['docs_per_second']:,} docs/s){split} |")
    for f in r.get("feed", {}).values():
        if isinstance(f, dict):
            label = "by rows" if f["batch_tokens"] is None else f"by a budget of {f['batch_tokens']:,} tokens"
            lines.append(f"| sample of {r['feed']['sample_docs']:,}, batches {label}: encode / forward pass alone | "
                         f"{f['encode_docs_per_second']:,} / {f['forward_only_docs_per_second']:,} docs/s "
                         f"(**{f['encode_share_of_forward']:.0%}**); vs `SentenceTransformer.encode`: max difference "
                         f"{f['max_abs_diff_vs_st']:.1e}, top-10 agreement {f['top10_agreement_vs_st']:.1%}"
                         + (f"; padding {f['padding_share']:.1%} of the tokens" if "padding_share" in f else "")
                         + (f"; waiting for the tokenizer {f['tokenizer_wait_share']:.0%} of the encode"
                            if "tokenizer_wait_share" in f else "") + " |")
    if "st_encode_docs_per_second" in r.get("feed", {}):
        lines.append(f"| `SentenceTransformer.encode` on {r['feed']['checked_docs']:,} of the sample (the vectors compared) | "
                     f"{r['feed']['st_encode_docs_per_second']:,} docs/s |")
    if "search" in r:
        lines.append(f"| exact search alone, {queries:,} queries | {r['search']['search_seconds']} s |")
    if "search_large" in r:
        lines.append(f"| exact search alone, {queries:,} queries x {int(r['search_large']['docs']):,} rows "
                     f"| {r['search_large']['search_seconds']} s |")
    if "hnmine_mine" in r:
        workers = r["hnmine_mine"].get("row_workers")
        lines += [f"| `hnmine mine`{f' (candidate rows in {workers} worker processes)' if workers else ''} "
                  f"| {r['hnmine_mine']['seconds']} s |",
                  f"| **ingest + encode + mine** | **{r['hnmine_total']['seconds']} s** |"]
    if "hnmine_encode_two_processes" in r:
        e = r["hnmine_encode_two_processes"]
        lines.append(f"| encode, `index --devices` two processes on the one GPU | {e['seconds']} s ({e['docs_per_second']:,} docs/s) |")
    if "st_mine_hard_negatives" in r:
        lines.append(f"| `mine_hard_negatives`, same model and GPU | {r['st_mine_hard_negatives']['seconds']} s "
                     + (f"(hnmine **{r['ratio']['hnmine_over_st']}x** of it) |" if "ratio" in r else "|"))
    lines += [f"| {k.removesuffix('_error')} | **failed**: `{v['error']}` at {v['at']} |" for k, v in r.items()
              if k.endswith("_error")]
    finished = [k for k in r if isinstance(r[k], dict) and k != "args" and not k.endswith("_error")]
    if "hnmine_mine" not in r:
        return "\n".join(lines + ["", f"The run stopped after its `{finished[-1] if finished else 'start'}` phase: "
                                       "no extrapolation without mine."])
    x = extrapolate(r)
    lines += ["", f"Extrapolated to {MS_MARCO_DOCS / 1e6:.1f}M passages and {MS_MARCO_QUERIES // 1000}k queries "
                  "(`extrapolate` in scripts/gpu_report.py): " + ", ".join(f"{k} {v} s" for k, v in x.items() if k != "total")
              + f"; **total {x['total']} s = {x['total'] / 60:.1f} min**."]
    return "\n".join(lines)
