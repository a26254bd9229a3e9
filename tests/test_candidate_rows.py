"""The array path of candidate collection gives the walk's candidates.arrow byte for byte: on adi
edited so every exclusion fires (positives copied under new ids, a document that is a query's text,
repeated texts, evaluation positives), for dense and BM25, and deep enough that queries run out of
their first depth and search again."""

from __future__ import annotations

import shutil

import pyarrow.ipc as ipc
import pytest
from conftest import MODEL, write_beir

from hnmine.config import DataParams, IndexParams, MineParams
from hnmine.stages import candidate_rows
from hnmine.stages.index import index
from hnmine.stages.mine import mine


@pytest.fixture(scope="module")
def edited(adi_rows, tmp_path_factory):
    """adi with copies: 30 copies of query 1's first positive (so it loses more than its depth's
    spare 16 entries and searches deeper), one copy of every other query's first positive, two copies
    each of ten non-positive documents, and a document whose text is query 2's. Queries 3-7 are the
    evaluation set whose positives are kept out."""
    docs, queries, qrels = adi_rows
    by_id = {d["_id"]: d for d in docs}
    positives: dict[str, list[str]] = {}
    for q, d, s in qrels:
        if s >= 1:
            positives.setdefault(q, []).append(d)
    ids = sorted(positives, key=int)
    extra = [dict(by_id[positives[ids[0]][0]], _id=f"copy-a{i}") for i in range(30)]
    extra += [dict(by_id[positives[q][0]], _id=f"copy-{q}") for q in ids[1:]]
    labeled = {d for ds in positives.values() for d in ds}
    others = [d for d in docs if d["_id"] not in labeled][:10]
    extra += [dict(d, _id=f"twin-{d['_id']}-{i}") for d in others for i in range(2)]
    query_text = next(q["text"] for q in queries if q["_id"] == ids[1])
    extra.append({"_id": "query-text", "title": "", "text": query_text})
    evaluation = set(ids[2:7])
    root = tmp_path_factory.mktemp("edited")
    folder = write_beir(root / "beir", docs + extra, queries, [line for line in qrels if line[0] not in evaluation])
    eval_qrels = root / "eval.tsv"
    eval_qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s:g}\n" for q, d, s in qrels
                                                                    if q in evaluation))
    work = root / "work"
    index(work, DataParams(beir=folder), IndexParams(retrievers=["dense", "bm25"], model=MODEL), progress=False)
    return folder, eval_qrels, work


def _candidates(work, folder, eval_qrels, tmp_path, name, retriever, batch_size):
    target = tmp_path / name
    shutil.copytree(work, target)
    result = mine(target, DataParams(beir=folder),
                  MineParams(retriever=retriever, top_k=12, batch_size=batch_size, exclude_qrels=eval_qrels,
                             exclude_queries=folder / "queries.jsonl"), progress=False)
    with ipc.open_file(target / "candidates.arrow") as reader:
        return reader.read_all(), result.stats


@pytest.mark.parametrize("retriever", ["dense", "bm25"])
def test_the_array_path_gives_the_walks_rows_counts_and_short_queries(edited, tmp_path, monkeypatch, retriever):
    folder, eval_qrels, work = edited
    fast, fast_stats = _candidates(work, folder, eval_qrels, tmp_path, "fast", retriever, 7)
    monkeypatch.setattr(candidate_rows, "vectorized", candidate_rows.walk_lists)  # every batch walks
    walked, walked_stats = _candidates(work, folder, eval_qrels, tmp_path, "walked", retriever, 7)
    assert fast.schema == walked.schema
    assert fast.equals(walked)
    for key in ("candidates", "queries_short_of_top_k", *candidate_rows.COUNTS):
        assert fast_stats[key] == walked_stats[key], key
    # every exclusion fired, so each mask of the array path was compared
    assert all(fast_stats[key] > 0 for key in candidate_rows.COUNTS), {k: fast_stats[k] for k in candidate_rows.COUNTS}
