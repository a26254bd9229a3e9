"""`hnmine score`: give every candidate and positive the scores the filters compare.

With `--scorer none` the retriever scores pass through unchanged (scored.arrow = candidates.arrow);
cross-encoder and LLM-judge scorers add their own columns beside them.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from hnmine.config import ScoreParams
from hnmine.io.files import BatchWriter, shard_files
from hnmine.io.manifest import is_current, manifest_path, read_manifest, write_manifest
from hnmine.stages.common import StageResult, Timer, fingerprints, shard_output, stage_input


def score(workdir: Path, params: ScoreParams, progress: bool = True) -> StageResult:
    workdir = Path(workdir)
    source = shard_output(workdir, "candidates", params.shard) if params.shard else stage_input(workdir, "candidates")
    out = shard_output(workdir, "scored", params.shard)
    inputs_fp = fingerprints({"candidates": source})
    identity = params.identity()
    if is_current(out, "score", identity, inputs_fp):
        return StageResult("score", {"scored": out}, read_manifest(manifest_path(out))["stats"], reused=True)
    manifest_path(out).unlink(missing_ok=True)
    with Timer() as timer:
        files = shard_files(source)
        schema = ipc.open_file(pa.memory_map(str(files[0]))).schema
        with BatchWriter(out, schema) as writer:
            for file in files:
                reader = ipc.open_file(pa.memory_map(str(file)))
                for i in range(reader.num_record_batches):
                    writer.write(reader.get_batch(i))
        stats = {"scorer": params.scorer, "rows": writer.rows}
    write_manifest(out, stage="score", params=identity, inputs=inputs_fp, outputs={"scored": {"rows": writer.rows}},
                   stats=stats, seconds=timer.seconds)
    return StageResult("score", {"scored": out}, stats, seconds=timer.seconds)
