"""The array path of candidate collection gives the walk's candidates.arrow byte for byte: on adi
edited so every exclusion fires (positives copied under new ids, a document that is a query's text,
repeated texts, evaluation positives), for dense and BM25, and deep enough that queries run out of
their first depth and search again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
def test_rows_built_in_worker_processes_are_the_in_process_rows(edited, tmp_path, retriever):
    """Batches of 7 queries (several per worker, one of them searched deeper in the mining process)."""
    folder, eval_qrels, work = edited
    runs = {}
    for workers in (0, 2):
        target = tmp_path / f"workers-{workers}"
        shutil.copytree(work, target)
        result = mine(target, DataParams(beir=folder),
                      MineParams(retriever=retriever, top_k=12, batch_size=7, exclude_qrels=eval_qrels,
                                 exclude_queries=folder / "queries.jsonl", row_workers=workers), progress=False)
        with ipc.open_file(target / "candidates.arrow") as reader:
            runs[workers] = reader.read_all(), result.stats
    (in_process, in_stats), (pooled, pooled_stats) = runs[0], runs[2]
    assert (in_stats["row_workers"], pooled_stats["row_workers"]) == (0, 2)
    assert pooled.num_rows > 0 and pooled.equals(in_process)
    for key in ("candidates", "queries", "queries_short_of_top_k", "queries_searched_deeper", *candidate_rows.COUNTS):
        assert pooled_stats[key] == in_stats[key], key
    assert all(in_stats[key] > 0 for key in candidate_rows.COUNTS)
    # copies of positives send queries deeper, in the mining process (BM25 alone never searches deeper)
    assert (pooled_stats["queries_searched_deeper"] > 0) == (retriever != "bm25")


def test_row_workers_by_default():
    from hnmine.stages.row_pool import MIN_BATCHES, worker_count

    assert worker_count(None, 100, 2) == 0  # a 2-core machine collects in the mining process
    assert worker_count(None, MIN_BATCHES - 1, 16) == 0
    assert worker_count(None, 100, 16) == 4 and worker_count(None, 100, 8) == 2
    assert worker_count(None, 100, 16, sharded=True) == 0  # shards run side by side, each seeing every core
    assert worker_count(3, 1, 2) == 3  # asked for: as asked


def test_a_script_that_mines_at_import_fails_instead_of_hanging(edited, tmp_path):
    """Spawned row workers import the calling script; one without a main guard would run mine again
    in each worker, which then waits forever for the work dir lock its parent holds."""
    folder, _, work = edited
    target = tmp_path / "work"
    shutil.copytree(work, target)
    script = tmp_path / "unguarded.py"
    script.write_text("from hnmine.config import DataParams, MineParams\nfrom hnmine.stages.mine import mine\n"
                      f"mine({str(target)!r}, DataParams(beir={str(folder)!r}), "
                      "MineParams(top_k=12, batch_size=7, row_workers=1), progress=False)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert 'put the script\'s calls under `if __name__ == "__main__":`' in result.stderr
    assert not (target / "candidates.arrow").exists()


def test_a_script_run_by_a_launcher_still_runs_its_stages(edited, tmp_path):
    """A launcher (IPython's %run, coverage, runpy) swaps __main__ after multiprocessing was imported:
    that is not a spawned worker's import, and the stage runs."""
    folder, _, work = edited
    target = tmp_path / "work"
    shutil.copytree(work, target)
    script = tmp_path / "guarded.py"
    script.write_text("from hnmine.config import DataParams, MineParams\nfrom hnmine.stages.mine import mine\n"
                      "if __name__ == '__main__':\n"
                      f"    mine({str(target)!r}, DataParams(beir={str(folder)!r}), MineParams(top_k=12, row_workers=0),"
                      " progress=False)\n")
    launcher = f"import multiprocessing, runpy\nrunpy.run_path({str(script)!r}, run_name='__main__')\n"
    result = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / "candidates.arrow").exists()


def test_a_worker_that_dies_is_one_error_naming_the_fix(edited, tmp_path, monkeypatch):
    """The matrix vanishes after the mining process opened it: the worker's start fails, and mine
    says so in one error instead of a pool traceback, with no candidates.arrow written."""
    from hnmine.errors import HnmineError
    from hnmine.stages import mine as mine_stage

    folder, _, work = edited
    target = tmp_path / "work"
    shutil.copytree(work, target)
    search = mine_stage._search

    def search_then_remove(*args, **kwargs):
        batch = search(*args, **kwargs)
        for matrix in (target / "index").rglob("embeddings.npy"):
            matrix.unlink()  # this process keeps its memory map
        return batch

    monkeypatch.setattr(mine_stage, "_search", search_then_remove)
    with pytest.raises(HnmineError, match="candidate-row worker process died.*--row-workers 1, or 0"):
        mine(target, DataParams(beir=folder), MineParams(top_k=12, batch_size=7, row_workers=1), progress=False)
    assert not (target / "candidates.arrow").exists()
