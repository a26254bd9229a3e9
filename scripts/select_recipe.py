"""Choose the shipped filter recipe on held-apart halves of every development set.

Reads the work dirs `scripts/bench_quality.py --sets ... --root ROOT` built (index, mine and score
done: dense all-MiniLM-L6-v2 top 50, the cross-encoder over the top 40, one visible positive per
query) and reruns only the filter for each recipe of a grid. Each set's queries are split by their
sorted ids: the even positions choose, the odd ones are held out and only reported.

A recipe qualifies when, on the choosing half of **every** set, its false-negative rate is at most
`--max-ratio` of top-5's on the same half, at least `--min-full` of the queries keep 5 negatives, and
its rate on nfcorpus is at most `--nfcorpus-max`. Of the qualifying recipes the one with the lowest
worst-set ratio is chosen (the bar holds per set, and the recipe must carry to corpora nobody
measured: the largest margin to it on the worst set); ties go to the hardest (the lowest mean, over
the sets, of the median dense rank of the kept negatives). The held-out halves then say how far the
choice carries.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/select_recipe.py --root DIR \
        --sets nfcorpus:test scifact:test adi:test medline-glasgow:test cacm:test

Writes docs/quality.md between `<!-- BEGIN quality:selection -->` and `<!-- END quality:selection -->`;
every (recipe, set) measurement is cached in DIR/selection.json, so a rerun or an added set only
measures what is new.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, splice_section  # noqa: E402  (this folder is on sys.path)
from bench_quality import DOC, measure_subset, prepare  # noqa: E402
from train_eval import SHIPPED as RECOMMENDED  # noqa: E402  (configs/recommended.toml's [filter] as shipped)

TOP_5 = {"near_duplicate": 0, "duplicate_negatives": 0}
GRID = {
    "rank_min": [1, 6, 8, 11, 16, 21],
    "rank_max": [30, 40],
    "margin": [-2.0, 0.0, 2.0],
    "sampling": ["lowest-score", "top"],
}


def grid() -> list[dict]:
    """The grid's recipes; each sets likely positives aside as the shipped recipe does (that part is
    chosen by training, scripts/train_eval.py's hnmine-relabel arm), so only the negatives' rule varies."""
    keys = list(GRID)
    relabel = {"likely_positive": RECOMMENDED["likely_positive"]} if "likely_positive" in RECOMMENDED else {}
    recipes = [dict(zip(keys, values)) | {"short_queries": "keep"} | relabel for values in itertools.product(*GRID.values())]
    return [r for r in recipes if r["rank_min"] < r["rank_max"]]


def recipe_name(options: dict) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


def measure_halves(workdir: Path, labeled: dict[str, set[str]], options: dict, whole: bool = False) -> dict:
    from hnmine.config import FilterParams
    from hnmine.io.files import read_table
    from hnmine.stages.filter import filter_stage

    filter_stage(workdir, FilterParams(num_negatives=5, **options), progress=False)
    kept = pl.from_arrow(read_table(workdir / "negatives.arrow"))
    ordered = sorted(labeled)
    halves = {half: measure_subset(kept, workdir, {q: labeled[q] for q in ordered[start::2]})
              for half, start in (("choose", 0), ("held-out", 1))}
    return halves | ({"whole set": measure_subset(kept, workdir, labeled)} if whole else {})


def qualifies(per_set: dict[str, dict], half: str, args) -> bool:
    for name, m in per_set.items():
        rec, top = m["recipe"][half], m["top-5"][half]
        if rec["fn_rate"] is None or rec["fn_rate"] > args.max_ratio * top["fn_rate"]:
            return False
        if rec["full"] < args.min_full * rec["queries"]:
            return False
        if name.startswith("nfcorpus") and rec["fn_rate"] > args.nfcorpus_max:
            return False
    return True


def preference(per_set: dict[str, dict], half: str) -> tuple[float, float]:
    """Sort key of qualifying recipes: the worst set's false-negative ratio, then the mean median rank."""
    ratios = [m["recipe"][half]["fn_rate"] / m["top-5"][half]["fn_rate"] for m in per_set.values()]
    ranks = [m["recipe"][half]["median_rank"] for m in per_set.values()]
    return max(ratios), statistics.mean(ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the --root of bench_quality.py --sets")
    parser.add_argument("--sets", nargs="+", required=True, metavar="SET:SPLIT")
    parser.add_argument("--max-ratio", type=float, default=0.25, help="false-negative rate at most this share of top-5's")
    parser.add_argument("--min-full", type=float, default=0.9, help="share of queries that keep 5 negatives")
    parser.add_argument("--nfcorpus-max", type=float, default=0.05, help="false-negative rate ceiling on nfcorpus")
    args = parser.parse_args()

    cache_file = args.root / "selection.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    recipes = grid()
    if RECOMMENDED not in recipes:
        recipes.append(dict(RECOMMENDED))
    sets = {}
    for spec in args.sets:
        name, _, split = spec.partition(":")
        folder = args.root / f"{name}-{split or 'test'}"
        if not (folder / "work" / "scored.arrow").exists():
            raise SystemExit(f"{folder}/work/scored.arrow is missing (fix: run scripts/bench_quality.py --sets {spec} "
                             f"--root {args.root} first)")
        _, labeled = prepare(folder, None, DATA / name, split or "test")
        sets[f"{name} {split or 'test'}"] = (folder / "work", labeled)

    began = time.perf_counter()
    measured = 0
    for options in [TOP_5] + recipes:
        key = recipe_name(options)
        for set_name, (workdir, labeled) in sets.items():
            if set_name in cache.get(key, {}):
                continue
            cache.setdefault(key, {})[set_name] = measure_halves(workdir, labeled, options)
            measured += 1
        cache_file.write_text(json.dumps(cache, indent=1))
    print(f"{measured} filter runs in {time.perf_counter() - began:.0f} s ({len(recipes)} recipes x {len(sets)} sets)")

    def per_set(options):
        return {s: {"recipe": cache[recipe_name(options)][s], "top-5": cache[recipe_name(TOP_5)][s]} for s in sets}

    feasible = sorted((r for r in recipes if qualifies(per_set(r), "choose", args)),
                      key=lambda r: preference(per_set(r), "choose"))
    chosen = feasible[0] if feasible else None
    # the chosen and the current recipe also over each whole set (both halves together)
    for options in [TOP_5, *([chosen] if chosen else []), dict(RECOMMENDED)]:
        for set_name, (workdir, labeled) in sets.items():
            if "whole set" not in cache[recipe_name(options)][set_name]:
                cache[recipe_name(options)][set_name] = measure_halves(workdir, labeled, options, whole=True)
    cache_file.write_text(json.dumps(cache, indent=1))
    write_doc(args, sets, recipes, feasible, chosen, per_set)


def write_doc(args, sets, recipes, feasible, chosen, per_set) -> None:
    def pct(v):
        return "—" if v is None else f"{100 * v:.1f} %"

    def cells(options, half):
        out = []
        for m in per_set(options).values():
            rec, top = m["recipe"][half], m["top-5"][half]
            out.append(f"{pct(rec['fn_rate'])} ({rec['fn_rate'] / top['fn_rate']:.2f}), {rec['full']}/{rec['queries']}, "
                       f"rank {rec['median_rank']}")
        return out

    lines = [
        f"- Command: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/select_recipe.py --root DIR --sets {' '.join(args.sets)}` "
        "(DIR: the root of `bench_quality.py --sets`, whose index, mine and score it reuses)",
        f"- Machine: {os.cpu_count()}-core CPU, Python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}",
        f"- Grid: {len(recipes)} filter recipes ({', '.join(f'{k} in {v}' for k, v in GRID.items())}, and the current "
        "configs/recommended.toml), 5 negatives per query"
        + (f"; each sets likely positives aside (`--likely-positive {RECOMMENDED['likely_positive']:g}`, as "
           "configs/recommended.toml does)" if "likely_positive" in RECOMMENDED else "")
        + ". Each set's queries by sorted id: the even positions choose, the odd ones are held out.",
        f"- Rule: on the choosing half of every set, false negatives at most {args.max_ratio:g} of top-5's, at least "
        f"{100 * args.min_full:.0f} % of queries with 5 negatives, at most {100 * args.nfcorpus_max:.0f} % on nfcorpus; "
        "of those, the lowest false-negative ratio on the worst set, then the lowest mean median dense rank. "
        f"{len(feasible)} of {len(recipes)} recipes qualify.",
        "- Cells: false negatives (ratio to top-5 on the same half), queries with 5 / queries, median dense rank of "
        "the kept negatives.",
        "",
        "| recipe | half | " + " | ".join(sets) + " |",
        "|---|---|" + "---|" * len(sets),
    ]
    shown = ([chosen] if chosen else []) + [r for r in feasible[1:6]]
    if RECOMMENDED not in shown:
        shown.append(dict(RECOMMENDED))
    for options in shown:
        label = ("**chosen**: " if options == chosen else "current configs/recommended.toml: " if options == RECOMMENDED
                 else "") + f"`{recipe_name(options)}`"
        halves = ("choose", "held-out", "whole set") if options in (chosen, RECOMMENDED) else ("choose",)
        for half in halves:
            lines.append(f"| {label} | {half} | " + " | ".join(cells(options, half)) + " |")
            label = ""
    if chosen:
        qualifies_held_out = qualifies(per_set(chosen), "held-out", args)
        qualifies_whole = qualifies(per_set(chosen), "whole set", args)
        lines.append(f"\nThe chosen recipe {'meets' if qualifies_held_out else 'misses'} the same rule on the held-out "
                     f"halves, and {'meets' if qualifies_whole else 'misses'} it over the whole sets.")
    else:
        lines.append("\nNo recipe of the grid meets the rule on every set.")
    body = "\n".join(lines)
    splice_section(DOC, "quality:selection", body, heading="How the recipe is chosen")
    print(body, flush=True)


if __name__ == "__main__":
    main()
