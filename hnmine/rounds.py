"""Re-mining rounds: mine again in the same work dir with another model (a checkpoint fine-tuned on
the first round's negatives), keeping every file of the first round.

`hnmine round new WORKDIR NAME` makes WORKDIR/rounds/NAME/, a work dir of its own whose corpus,
indexes and score cache are its parent's (relative symlinks): the round's `hnmine index --name
NAME --model CHECKPOINT` adds a dense index beside the parent's in index/dense/, its scorer reuses
every pair already scored, and its queries, candidates, scored, negatives, dropped and export files
are its own, so nothing of the parent's run is overwritten. A round mines its parent's corpus: an
index run with other data is refused rather than re-encoding the shared default index.

`hnmine round compare A B` (and `hnmine report` of a round) compares two runs' negatives per
query: how many they share, and where each run's negatives sit in the other run's candidates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.index_names import INDEX_NAME
from hnmine.io.files import read_table
from hnmine.io.manifest import manifest_path
from hnmine.workdir import WorkDir

ROUNDS = "rounds"
# what a round shares with its parent, by name in the work dir
SHARED = ("corpus.arrow", "corpus.manifest.json", "corpus.skipped.arrow", "corpus.skipped.manifest.json", "index",
          "cache")


def new_round(workdir: Path, name: str) -> Path:
    """WORKDIR/rounds/NAME with the parent's corpus, indexes and score cache linked in; running it
    again is a no-op."""
    if not INDEX_NAME.fullmatch(name):
        raise HnmineError(f"round name '{name}' must be lower-case letters, digits, '-' or '_' (at most 64)",
                          fix="e.g. hnmine round new WORKDIR r2")
    root = Path(workdir)
    if not manifest_path(WorkDir(root).corpus).exists():
        raise HnmineError("no finished corpus in the work dir", path=root,
                          fix="run `hnmine index` (and the first round) in it first")
    target = root / ROUNDS / name
    target.mkdir(parents=True, exist_ok=True)
    for entry in SHARED:
        source = root / entry
        if entry in ("index", "cache"):
            source.mkdir(exist_ok=True)
        if not source.exists():
            continue
        link, relative = target / entry, os.path.relpath(source, target)
        if link.is_symlink() and os.readlink(link) == relative:
            continue
        if link.exists() or link.is_symlink():
            raise HnmineError(f"{link.name} is there and is not the parent's", path=link,
                              fix="choose another round name, or remove that round's folder")
        link.symlink_to(relative)
    return target


def parent_of(workdir: Path) -> Path | None:
    """The work dir a round was made in, or None for a work dir that is not a round."""
    root = Path(workdir)
    corpus = root / "corpus.arrow"
    if corpus.is_symlink() and root.parent.name == ROUNDS:
        return root.parent.parent
    return None


def check_round_corpus(corpus: Path) -> None:
    """Called before a corpus would be written: a round's corpus is its parent's, never replaced."""
    if Path(corpus).is_symlink():
        raise HnmineError("this work dir is a round: its corpus and indexes are its parent's, and the corpus options "
                          "given are not the parent's", path=corpus,
                          fix="give the data options the parent was indexed with (or start a new work dir)")


@dataclass
class RoundComparison:
    queries: int  # queries with negatives in both runs
    negatives: tuple[int, int]
    shared: int  # negatives both runs kept for the same query
    mean_jaccard: float | None
    new_in_second: int  # the second run's negatives the first did not keep
    new_not_in_first_candidates: int  # ... of which the first run never mined
    median_first_rank_of_new: float | None  # where the first run's retriever ranked the new ones
    dropped_from_first: int  # the first run's negatives the second did not keep
    median_second_rank_of_dropped: float | None  # where the second run's retriever ranks them
    dropped_not_in_second_candidates: int


def compare_runs(first: Path, second: Path) -> RoundComparison:
    """The negatives of two filtered work dirs, compared per query (see the module docstring)."""
    keys = [schema.QUERY_ID, schema.DOC_ID]
    runs = []
    for workdir in (first, second):
        wd = WorkDir(workdir)
        path = wd.stage_input("negatives")  # the whole-run file, or a sharded run's folder
        if not path.exists():
            raise HnmineError("has no negatives to compare", path=path, fix=f"run `hnmine filter --workdir {workdir}` first")
        negatives = pl.from_arrow(read_table(path, keys))
        candidates = pl.from_arrow(read_table(wd.stage_input("candidates"), [*keys, schema.RANK, schema.IS_POSITIVE]))
        runs.append((negatives, candidates.filter(~pl.col(schema.IS_POSITIVE)).select(*keys, schema.RANK)))
    (neg_a, cand_a), (neg_b, cand_b) = runs
    both = set(neg_a[schema.QUERY_ID].unique()) & set(neg_b[schema.QUERY_ID].unique())
    neg_a = neg_a.filter(pl.col(schema.QUERY_ID).is_in(list(both)))
    neg_b = neg_b.filter(pl.col(schema.QUERY_ID).is_in(list(both)))
    shared = neg_a.join(neg_b, on=keys, how="inner")
    per_query = (neg_a.group_by(schema.QUERY_ID).len("a").join(neg_b.group_by(schema.QUERY_ID).len("b"), on=schema.QUERY_ID)
                 .join(shared.group_by(schema.QUERY_ID).len("s"), on=schema.QUERY_ID, how="left").fill_null(0))
    jaccard = per_query.select(pl.col("s") / (pl.col("a") + pl.col("b") - pl.col("s"))).to_series()
    new = neg_b.join(neg_a, on=keys, how="anti").join(cand_a, on=keys, how="left")
    dropped = neg_a.join(neg_b, on=keys, how="anti").join(cand_b, on=keys, how="left")

    def median(frame: pl.DataFrame) -> float | None:
        ranks = frame[schema.RANK].drop_nulls()
        return float(ranks.median()) if ranks.len() else None

    return RoundComparison(
        queries=len(both), negatives=(neg_a.height, neg_b.height), shared=shared.height,
        mean_jaccard=float(jaccard.mean()) if jaccard.len() else None,
        new_in_second=new.height, new_not_in_first_candidates=int(new[schema.RANK].is_null().sum()),
        median_first_rank_of_new=median(new), dropped_from_first=dropped.height,
        median_second_rank_of_dropped=median(dropped),
        dropped_not_in_second_candidates=int(dropped[schema.RANK].is_null().sum()))


def describe(comparison: RoundComparison, first: str = "first", second: str = "second") -> list[str]:
    c = comparison
    share = f"{100 * c.shared / c.negatives[1]:.1f} %" if c.negatives[1] else "—"
    jaccard = "—" if c.mean_jaccard is None else f"{c.mean_jaccard:.3f}"
    return [
        f"queries with negatives in both: {c.queries}; negatives {first} {c.negatives[0]}, {second} {c.negatives[1]}",
        f"shared: {c.shared} ({share} of {second}'s); mean per-query Jaccard {jaccard}",
        f"new in {second}: {c.new_in_second}; {c.new_not_in_first_candidates} were not among {first}'s candidates; the "
        f"rest had median rank {c.median_first_rank_of_new} there",
        f"{first}'s not kept by {second}: {c.dropped_from_first}; {c.dropped_not_in_second_candidates} are not among "
        f"{second}'s candidates; the rest have median rank {c.median_second_rank_of_dropped} there",
    ]
