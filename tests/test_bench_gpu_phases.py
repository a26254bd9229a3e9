"""scripts/bench_gpu.py runs once on a lent GPU machine: a phase that fails must be brought back as
a figure, and the phases after it must still run and be rendered."""

from __future__ import annotations

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench_gpu  # noqa: E402
import gpu_report  # noqa: E402


def test_a_failed_phase_is_saved_and_the_next_one_runs(tmp_path):
    results: dict = {}

    def save(phase, figures):
        results[phase] = figures
        (tmp_path / "out.json").write_text(json.dumps(results))

    def feed():
        raise RuntimeError("CUDA error: misaligned address")

    bench_gpu.guarded("feed", save, feed)
    bench_gpu.guarded("st_mine_hard_negatives", save, lambda: save("st_mine_hard_negatives", {"seconds": 2.0}))
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["feed_error"]["error"] == "RuntimeError: CUDA error: misaligned address"
    assert saved["feed_error"]["at"].startswith("test_bench_gpu_phases.py:")
    assert saved["st_mine_hard_negatives"] == {"seconds": 2.0}


def test_render_shows_a_failed_phase_and_where_a_short_run_stopped():
    results = {"args": {"docs": "1000", "queries": "10", "batch_size": "512", "device": "cuda"},
               "torch": "2.11", "python": "3.12", "cpus": 16, "gpu": "NVIDIA H200", "commit": "abc1234",
               "inputs": {"docs": 1000, "queries": 10, "mean_doc_chars": 380.0, "seconds": 0.1},
               "hnmine_ingest": {"seconds": 0.5},
               "feed_error": {"error": "RuntimeError: CUDA error: misaligned address", "at": "torch_feed.py:120"}}
    text = gpu_report.render(results)
    assert "| feed | **failed**: `RuntimeError: CUDA error: misaligned address` at torch_feed.py:120 |" in text
    assert "| ingest | 0.5 s |" in text
    assert "no extrapolation without mine" in text
