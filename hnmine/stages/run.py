"""`hnmine run CONFIG`: every stage in order; each one reuses its output when its manifest matches."""

from __future__ import annotations

from hnmine.config import IndexParams
from hnmine.io.lock import workdir_lock
from hnmine.run_config import RunConfig
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score
from hnmine.workdir import StageResult


def index_params(config: RunConfig) -> IndexParams:
    """The index section, plus the BM25 or dense index the mine section's retrievers search (a
    pooled run's named dense indexes are built by `hnmine index --name`; mine names any missing)."""
    needed = [r for r in config.mine.retriever_names() if r in ("dense", "bm25")]
    missing = [r for r in needed if r not in config.index.retrievers]
    if missing:
        return config.index.model_copy(update={"retrievers": [*config.index.retrievers, *missing]})
    return config.index


def run(config: RunConfig, progress: bool = True) -> list[StageResult]:
    """All stages under one hold of the work dir's lock, so another run never slips in between."""
    workdir = config.workdir
    index_params_ = index_params(config)
    with workdir_lock(workdir):
        return [
            index(workdir, config.data, index_params_, progress=progress),
            mine(workdir, config.data, config.mine, progress=progress),
            score(workdir, config.score, progress=progress),
            filter_stage(workdir, config.filter, progress=progress),
            export(workdir, config.export, progress=progress),
        ]
