"""The batch sampler that trains on an export's batch plan (`hnmine export --batch-plan ...`).

    from hnmine.exports.sampler import planned_batches

    args = SentenceTransformerTrainingArguments(..., per_device_train_batch_size=32,
                                                batch_sampler=planned_batches("export/n-tuple.ids.parquet"))

Each epoch yields the planned batches whole (membership is the plan), in an order shuffled by the
trainer's seed and the epoch. The training file must be the one exported with the plan (rows in
plan order): the sampler checks the row count and the batch size against the ids file.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pyarrow.parquet as pq

try:  # sentence-transformers 6 exports it at the top; 3-5 from .sampler
    from sentence_transformers import DefaultBatchSampler
except ImportError:  # pragma: no cover (older sentence-transformers)
    from sentence_transformers.sampler import DefaultBatchSampler

logger = logging.getLogger(__name__)


def read_plan(ids_file: Path) -> list[list[int]]:
    """The planned batches of an export's ids file, as lists of training-row positions."""
    table = pq.read_table(ids_file, columns=None)
    if "batch" not in table.column_names:
        raise ValueError(f"{ids_file}: no `batch` column, so no batch plan (fix: export with --batch-plan "
                         "no-false-negatives --batch-size B)")
    batches: dict[int, list[int]] = {}
    for row, batch in enumerate(table.column("batch").to_pylist()):
        batches.setdefault(batch, []).append(row)
    return [batches[b] for b in sorted(batches)]


class PlannedBatchSampler(DefaultBatchSampler):
    """sentence-transformers' batch sampler over fixed batches (see the module docstring)."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0, *, batches: list[list[int]], source: str = "the plan"):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns,
                         generator=generator, seed=seed)
        rows = sum(len(b) for b in batches)
        if rows != len(dataset):
            raise ValueError(f"{source} plans {rows} rows but the training set has {len(dataset)} (fix: train on "
                             "the file exported with this plan)")
        widest = max((len(b) for b in batches), default=0)
        if widest > batch_size:
            raise ValueError(f"{source} has batches of {widest} rows, more than the trainer's batch size {batch_size} "
                             "(fix: set per_device_train_batch_size to the plan's --batch-size)")
        self.batches = batches

    def _kept(self) -> list[list[int]]:
        kept = [b for b in self.batches if not (self.drop_last and len(b) < self.batch_size)]
        if len(kept) < len(self.batches) and not getattr(self, "_told", False):
            self._told = True
            dropped = sum(len(b) for b in self.batches) - sum(len(b) for b in kept)
            logger.warning("dataloader_drop_last leaves out the plan's %d short batches (%d rows) every epoch",
                           len(self.batches) - len(kept), dropped)
        return kept

    def __iter__(self):
        batches = self._kept()
        order = list(range(len(batches)))
        random.Random(self.seed + self.epoch).shuffle(order)
        for position in order:
            yield list(batches[position])

    def __len__(self) -> int:
        return len(self._kept())


def planned_batches(ids_file: str | Path):
    """A `batch_sampler` for SentenceTransformerTrainingArguments that trains on the plan in
    `ids_file` (the export's `.ids.parquet`)."""
    batches = read_plan(Path(ids_file))

    def make(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        return PlannedBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed,
                                   batches=batches, source=str(ids_file))

    return make
