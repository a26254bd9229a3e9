"""`hnmine run --ray`: a real local Ray cluster runs the per-shard work; the files equal a local run's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import MODEL

pytest.importorskip("ray", reason="the ray extra is part of the test extra; install it with pip install 'hnmine[ray]'")

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head` on loopback with 2 CPUs; stopped (and its processes killed) afterwards."""
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1")
    temp = tmp_path_factory.mktemp("ray")
    started = subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--node-ip-address",
                              "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _config(path: Path, workdir: Path, adi: Path) -> Path:
    path.write_text(f'''workdir = "{workdir}"
[data]
beir = "{adi}"
[index]
retrievers = ["dense", "bm25"]
model = "{MODEL}"
chunk_size = 16
[mine]
retriever = "hybrid"
top_k = 10
[filter]
rank_min = 2
num_negatives = 3
sampling = "random"
seed = 7
short_queries = "pad"
[export]
format = "n-tuple"
''')
    return path


def test_a_sharded_ray_run_writes_the_local_runs_files(ray_cluster, adi, tmp_path):
    from typer.testing import CliRunner

    from hnmine.cli import app

    local = CliRunner().invoke(app, ["run", str(_config(tmp_path / "local.toml", tmp_path / "local", adi)), "-q"])
    assert local.exit_code == 0, local.output
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    hnmine = str(Path(sys.executable).with_name("hnmine"))
    ray_config = _config(tmp_path / "ray.toml", tmp_path / "ray", adi)
    cluster = subprocess.run([hnmine, "run", str(ray_config), "-q", "--ray", ray_cluster, "--shards", "3"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert cluster.returncode == 0, cluster.stderr[-3000:]
    assert "run: ran index, mine, score, filter, export; reused nothing" in cluster.stdout
    # the merged per-stage counts are the local run's (the timing aside)
    for stage in ("mine", "filter", "export"):
        assert _counts(cluster.stdout, stage) == _counts(local.output, stage) != "", stage

    work = tmp_path / "ray"
    for name in ("candidates", "scored", "negatives", "dropped"):
        assert not (work / f"{name}.arrow").exists()
        assert sorted(p.name for p in (work / name).glob("*.arrow")) == [f"shard-{k:05d}-of-00003.arrow" for k in (1, 2, 3)]
    for name in ("candidates", "scored", "negatives"):  # each complete shard set has its folder manifest
        folder = json.loads((work / name / "manifest.json").read_text())
        whole = json.loads((tmp_path / "local" / f"{name}.manifest.json").read_text())
        assert folder["params"] == _without_shard(whole["params"]) | {"shards": 3}, name
    # the tasks encoded every chunk; the driver only assembled them
    dense = json.loads((work / "index" / "dense" / "manifest.json").read_text())["stats"]
    assert dense["docs_resumed"] == 82 and dense["docs_encoded"] == 0
    assert "docs_encoded_by_ray_tasks=82" in cluster.stdout

    mine_local = pl.read_ipc(tmp_path / "local" / "candidates.arrow")
    mine_ray = pl.concat([pl.read_ipc(p) for p in sorted((work / "candidates").glob("*.arrow"))])
    assert mine_ray.equals(mine_local)
    for name in ("n-tuple.parquet", "n-tuple.ids.parquet"):
        assert pl.read_parquet(work / "export" / name).equals(pl.read_parquet(tmp_path / "local" / "export" / name))

    again = subprocess.run([hnmine, "run", str(ray_config), "-q", "--ray", ray_cluster, "--shards", "3"],
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "ran nothing" in again.stdout, again.stdout + again.stderr[-2000:]
    shutil.rmtree(work / "export")


def _without_shard(params):
    if isinstance(params, dict):
        return {k: _without_shard(v) for k, v in params.items() if k != "shard"}
    return params


def _counts(output: str, stage: str) -> str:
    """The counts on a stage's summary line (`mine    ran in 1.2 s   queries=35, ...`)."""
    line = next((line for line in output.splitlines() if line.startswith(f"{stage} ")), "")
    return line.split(" s ", 1)[-1].strip() if " s " in line else ""


def test_an_unreachable_cluster_is_one_line_and_exit_2(adi, tmp_path):
    from typer.testing import CliRunner

    from hnmine.cli import app

    result = CliRunner().invoke(app, ["run", str(_config(tmp_path / "c.toml", tmp_path / "w", adi)), "-q",
                                      "--ray", f"127.0.0.1:{_free_port()}"])
    assert result.exit_code == 2 and "cannot reach a Ray cluster" in result.output
