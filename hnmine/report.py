"""`hnmine report`: one page that shows a person what a run mined.

Reads a finished work dir (scored.arrow, negatives.arrow, dropped.arrow, the query and document
texts, and every stage's manifest) and writes either one self-contained HTML file or the same
sections as Markdown (for a terminal or a pull request):

  scores  histograms of positives, kept negatives and dropped candidates, per score column
  ranks   the retrieval ranks of the kept negatives
  drops   how many candidates each filter rule dropped
  stages  every manifest: counts, timings and parameters
  sample  a seeded sample of queries with their positives, kept negatives and dropped candidates

The HTML needs nothing beside it: charts are SVG drawn here (no plotting dependency) and embedded
as data URIs, the sample is browsable with `<details>` (no JavaScript needed), and every text from
the data is escaped. One small inline script only records, on load, how many images the page has
and how many failed to decode (`data-images`, `data-broken-images` on `<body>`), so a headless
browser can check that the page renders.
"""

from __future__ import annotations

import base64
import html
import json
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from hnmine import schema
from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path, read_table
from hnmine.io.manifest import manifest_path, read_manifest
from hnmine.stages.common import stage_input
from hnmine.stages.index import corpus_path

# every score column a stage may write, in the order the report shows them
SCORE_COLUMNS = (schema.score_column("dense"), schema.score_column("bm25"), schema.FUSED_SCORE,
                 "ce_logit", "ce_prob", "judge_score")
GROUPS = ("positives", "kept", "dropped")
COLORS = {"positives": "#2e7d32", "kept": "#1565c0", "dropped": "#8d8d8d"}
SECTIONS = {
    "scores": "Score histograms",
    "ranks": "Ranks of kept negatives",
    "drops": "Drops per filter rule",
    "stages": "Stages",
    "sample": "Sample of queries",
}
STAGE_ORDER = ("corpus", "dense", "bm25", "mine", "score", "filter", "export")
HTML_BINS, MD_BINS = 30, 10
MD_TEXT_CHARS, MD_DROPPED_ROWS = 200, 10


@dataclass
class RunData:
    """What the report reads from a work dir, loaded once."""

    workdir: Path
    queries: pl.DataFrame  # query_id, text: the scored queries, in work-dir order
    positives: pl.DataFrame  # scored rows of the labeled positives
    kept: pl.DataFrame  # negatives.arrow
    dropped: pl.DataFrame  # dropped.arrow, with dropped_by
    score_columns: list[str]
    dropped_by: dict[str, int]  # from the filter manifest(s)
    candidates: int
    manifests: list[tuple[Path, dict]]


@dataclass
class QuerySample:
    query_id: str
    text: str
    positives: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)


@dataclass
class ReportResult:
    path: Path
    format: str
    queries_sampled: int
    queries: int


# ---------------------------------------------------------------------------------------------
# reading the work dir


def _require(workdir: Path, name: str, command: str) -> Path:
    """The whole-run file or shard folder of `name`, or a one-line error naming the command that writes it."""
    path = stage_input(workdir, name)
    if not path.exists():
        raise HnmineError("not found (the report reads it)", path=workdir / f"{name}.arrow",
                          fix=f"run `hnmine {command} --workdir {workdir}` first")
    return path


def score_columns(scored: pl.DataFrame) -> list[str]:
    """The score columns that hold values; fused_score only where it is not a copy of a retriever's score
    (it is, up to float rounding, unless mine ran hybrid)."""
    present = [c for c in SCORE_COLUMNS if c in scored.columns and scored[c].drop_nulls().drop_nans().len()]
    if schema.FUSED_SCORE in present:
        fused = pl.col(schema.FUSED_SCORE)
        for other in present:
            same = ((fused - pl.col(other)).abs() <= 1e-5 * (1 + pl.col(other).abs())).fill_null(False)
            if other != schema.FUSED_SCORE and scored.select((fused.is_null() | same).all()).item():
                present.remove(schema.FUSED_SCORE)
                break
    return present


def find_manifests(workdir: Path) -> list[tuple[Path, dict]]:
    """Every stage manifest in the work dir (shard and export folders included, the score cache not),
    in pipeline order."""
    paths: set[Path] = set()
    for pattern in ("*.manifest.json", "*/manifest.json", "*/*.manifest.json", "*/*/manifest.json"):
        paths.update(p for p in workdir.glob(pattern) if p.relative_to(workdir).parts[0] != "cache")
    found = []
    for path in paths:
        try:
            manifest = read_manifest(path)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(manifest, dict) and "stage" in manifest:
            found.append((path, manifest))

    def order(item: tuple[Path, dict]) -> tuple[int, str]:
        stage = item[1]["stage"]
        return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), str(item[0]))

    return sorted(found, key=order)


def _drop_counts(negatives_source: Path, dropped: pl.DataFrame) -> dict[str, int]:
    """stats.dropped_by of the filter manifest, summed over shards; counted from dropped.arrow when
    no manifest is there."""
    if negatives_source.is_dir():
        manifests = sorted(negatives_source.glob("*.manifest.json"))
    else:
        manifests = [manifest_path(negatives_source)]
    counts: dict[str, int] = {}
    seen = False
    for path in manifests:
        if path.exists():
            seen = True
            for rule, n in read_manifest(path).get("stats", {}).get("dropped_by", {}).items():
                counts[rule] = counts.get(rule, 0) + int(n)
    if not seen:
        counts = {rule: int(n) for rule, n in dropped.group_by(schema.DROPPED_BY).len().iter_rows()}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def load_run(workdir: Path) -> RunData:
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise HnmineError("work dir not found", path=workdir, fix="pass the work directory the stages wrote to")
    negatives_source = _require(workdir, "negatives", "filter")
    dropped_source = _require(workdir, "dropped", "filter")
    scored_source = _require(workdir, "scored", "score")
    queries_source = _require(workdir, "queries", "mine")
    if not corpus_path(workdir).exists():
        raise HnmineError("not found (the report reads the document texts from it)", path=corpus_path(workdir),
                          fix=f"run `hnmine index --workdir {workdir}` first")
    scored = pl.from_arrow(read_table(scored_source))
    kept = pl.from_arrow(read_table(negatives_source))
    dropped = pl.from_arrow(read_table(dropped_source))
    order = scored.select(schema.QUERY_ID).unique(maintain_order=True)
    queries = order.join(pl.from_arrow(read_table(queries_source)).select(schema.QUERY_ID, schema.TEXT),
                         on=schema.QUERY_ID, how="left", maintain_order="left")
    return RunData(
        workdir=workdir, queries=queries, positives=scored.filter(pl.col(schema.IS_POSITIVE)), kept=kept,
        dropped=dropped, score_columns=score_columns(scored), dropped_by=_drop_counts(negatives_source, dropped),
        candidates=scored.filter(~pl.col(schema.IS_POSITIVE)).height, manifests=find_manifests(workdir))


# ---------------------------------------------------------------------------------------------
# numbers behind the charts


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.empty(0)
    return frame[column].cast(pl.Float64).drop_nulls().drop_nans().to_numpy()


def score_histogram(run: RunData, column: str, bins: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Shared bin edges for the three groups of one score column, each group's counts and its values."""
    values = {"positives": _values(run.positives, column), "kept": _values(run.kept, column),
              "dropped": _values(run.dropped, column)}
    everything = np.concatenate(list(values.values()))
    lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return edges, {g: np.histogram(v, edges)[0] for g, v in values.items()}, values


def rank_histogram(run: RunData, max_bars: int = 50) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(first rank, last rank) per bar and the kept negatives' count in each; one bar per rank when
    they fit, else ranks grouped in equal widths."""
    ranks = run.kept[schema.RANK].drop_nulls().to_numpy() if schema.RANK in run.kept.columns else np.empty(0)
    top = int(ranks.max()) if ranks.size else 1
    width = max(1, math.ceil(top / max_bars))
    spans = [(start, min(start + width - 1, top)) for start in range(1, top + 1, width)]
    counts = np.array([int(((ranks >= a) & (ranks <= b)).sum()) for a, b in spans])
    return spans, counts


def sample_queries(run: RunData, n: int, seed: int) -> list[str]:
    """A seeded sample of query ids, listed in work-dir order; the same seed gives the same sample."""
    ids = run.queries[schema.QUERY_ID].to_list()
    chosen = set(random.Random(seed).sample(ids, min(max(n, 0), len(ids))))
    return [q for q in ids if q in chosen]


def _doc_texts(workdir: Path, doc_ids: Iterable[str]) -> dict[str, str]:
    """The texts of the sampled documents only: the corpus stays memory-mapped and only the matching
    rows are copied (converting the whole corpus would copy every text: 3.5 GB at 8.8M passages)."""
    table = read_table(corpus_path(workdir), [schema.DOC_ID, schema.TITLE, schema.TEXT])
    wanted = pa.array(sorted(set(doc_ids)), type=table.schema.field(schema.DOC_ID).type)
    corpus = pl.from_arrow(table.filter(pc.is_in(table[schema.DOC_ID], value_set=wanted)))
    joined = pl.concat_str([pl.col(schema.TITLE).fill_null(""), pl.col(schema.TEXT).fill_null("")], separator=" ")
    return dict(corpus.select(schema.DOC_ID, joined.str.strip_chars()).iter_rows())


def _rows(frame: pl.DataFrame, ids: list[str], sort: list[str], columns: list[str]) -> dict[str, list[dict]]:
    chosen = frame.filter(pl.col(schema.QUERY_ID).is_in(pl.Series(ids, dtype=pl.String).implode()))
    sort = [c for c in sort if c in chosen.columns]
    if sort:
        chosen = chosen.sort(sort, nulls_last=True, maintain_order=True)
    out: dict[str, list[dict]] = {}
    for row in chosen.select([c for c in columns if c in chosen.columns]).iter_rows(named=True):
        out.setdefault(row[schema.QUERY_ID], []).append(row)
    return out


def build_sample(run: RunData, ids: list[str]) -> list[QuerySample]:
    """Each sampled query with its positives, kept negatives and dropped candidates, texts attached."""
    base = [schema.QUERY_ID, schema.DOC_ID, schema.RANK, *run.score_columns]
    positives = _rows(run.positives, ids, [], base)
    kept = _rows(run.kept, ids, [schema.NEGATIVE_RANK], [*base, schema.NEGATIVE_RANK, schema.PADDED])
    dropped = _rows(run.dropped, ids, [schema.RANK], [*base, schema.DROPPED_BY])
    doc_ids = {r[schema.DOC_ID] for group in (positives, kept, dropped) for rows in group.values() for r in rows}
    texts = _doc_texts(run.workdir, doc_ids)
    query_text = dict(run.queries.iter_rows())
    samples = []
    for qid in ids:
        sample = QuerySample(qid, query_text.get(qid) or "", positives.get(qid, []), kept.get(qid, []), dropped.get(qid, []))
        for row in (*sample.positives, *sample.kept, *sample.dropped):
            row["text"] = texts.get(row[schema.DOC_ID], "")
        samples.append(sample)
    return samples


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flat(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested manifest dicts as (dotted key, value) pairs, nulls left out."""
    pairs = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            pairs += _flat(value, f"{prefix}{key}.")
        elif value is not None:
            pairs.append((f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else _fmt(value)))
    return pairs


def _outputs(manifest: dict) -> str:
    parts = []
    for name, info in manifest.get("outputs", {}).items():
        rows = info.get("rows") if isinstance(info, dict) else None
        parts.append(f"{name} {rows}" if rows is not None else name)
    return ", ".join(parts)


def _short_name(workdir: Path) -> str:
    """The work dir's last two path parts: `work` alone rarely says which run it is."""
    return "/".join(workdir.resolve().parts[-2:])


def _summary(run: RunData) -> list[tuple[str, str]]:
    seconds = sum(float(m.get("seconds") or 0) for _, m in run.manifests)
    return [
        ("queries", str(run.queries.height)),
        ("positives", str(run.positives.height)),
        ("candidates", str(run.candidates)),
        ("kept negatives", str(run.kept.height)),
        ("dropped", str(run.dropped.height)),
        ("score columns", ", ".join(run.score_columns) or "none"),
        ("stage time", f"{seconds:.1f} s"),
    ]


# ---------------------------------------------------------------------------------------------
# SVG charts


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _svg(width: int, height: int, body: list[str]) -> str:
    """A standalone SVG document; width and height are set so the image has an intrinsic size."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
            f'<rect width="{width}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def svg_score_histogram(column: str, edges: np.ndarray, counts: dict[str, np.ndarray],
                        values: dict[str, np.ndarray]) -> str:
    """One panel per group on shared bins; each panel has its own height scale, since dropped
    candidates usually outnumber positives many times over."""
    left, right, top, panel, gap, bottom = 140, 16, 26, 64, 12, 34
    width = 580
    plot = width - left - right
    height = top + len(GROUPS) * (panel + gap) + bottom
    lo, hi = float(edges[0]), float(edges[-1])

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot

    body = [_text(left, 16, f"{column}", font_weight="bold", font_size="13")]
    for i, group in enumerate(GROUPS):
        y0 = top + i * (panel + gap)
        base = y0 + panel
        n = values[group].size
        label = f"{group} n={n}"
        body.append(_text(left - 10, y0 + panel / 2 - 4, label, "end", fill=COLORS[group], font_weight="bold"))
        if n:
            body.append(_text(left - 10, y0 + panel / 2 + 11, f"median {_fmt(float(np.median(values[group])))}", "end"))
        peak = int(counts[group].max()) if n else 0
        for j, c in enumerate(counts[group]):
            if c:
                h = max(1.0, c / peak * (panel - 4))
                bar_width = max(x(edges[j + 1]) - x(edges[j]) - 1, 1)
                body.append(f'<rect x="{x(edges[j]) + 0.5:.1f}" y="{base - h:.1f}" width="{bar_width:.1f}" '
                            f'height="{h:.1f}" fill="{COLORS[group]}"/>')
        body.append(f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{base}" stroke="#999"/>')
        if peak:
            body.append(_text(left + plot, y0 + 10, f"max {peak}", "end", fill="#666", font_size="10"))
        else:
            body.append(_text(left + 6, base - 6, "no values", fill="#666"))
    axis = top + len(GROUPS) * (panel + gap)
    for tick in _nice_ticks(lo, hi):
        body.append(f'<line x1="{x(tick):.1f}" y1="{axis - gap}" x2="{x(tick):.1f}" y2="{axis - gap + 5}" stroke="#666"/>')
        body.append(_text(x(tick), axis + 6, f"{tick:.6g}", "middle"))
    return _svg(width, height, body)


def svg_rank_histogram(spans: list[tuple[int, int]], counts: np.ndarray) -> str:
    left, right, top, bottom, plot_h = 50, 20, 16, 40, 160
    width = 760
    plot = width - left - right
    height = top + plot_h + bottom
    base = top + plot_h
    peak = int(counts.max()) if counts.size and counts.max() else 1
    bar = min(plot / max(len(spans), 1), 40)  # a few ranks: narrow bars, not a wall
    body = [f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{base}" stroke="#999"/>',
            _text(left - 6, top + 4, str(peak), "end"), _text(left - 6, base, "0", "end")]
    label_every = max(1, math.ceil(len(spans) / 25))
    for i, ((a, b), c) in enumerate(zip(spans, counts)):
        if c:
            h = c / peak * plot_h
            body.append(f'<rect x="{left + i * bar + 1:.1f}" y="{base - h:.1f}" width="{max(bar - 2, 1):.1f}" '
                        f'height="{h:.1f}" fill="{COLORS["kept"]}"/>')
        if i % label_every == 0:
            body.append(_text(left + (i + 0.5) * bar, base + 14, str(a) if a == b else f"{a}-{b}", "middle", font_size="10"))
    body.append(_text(left + plot / 2, base + 32, "rank among the query's candidates (1 = retrieved first)", "middle"))
    return _svg(width, height, body)


def svg_drop_bars(counts: dict[str, int]) -> str:
    left, right, row, top = 170, 80, 22, 8
    width = 760
    plot = width - left - right
    height = top * 2 + max(len(counts), 1) * row
    peak = max(counts.values(), default=0) or 1
    body = []
    for i, (rule, n) in enumerate(counts.items()):
        y = top + i * row
        w = max(n / peak * plot, 1)
        body.append(_text(left - 8, y + 15, rule, "end"))
        body.append(f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" fill="{COLORS["dropped"]}"/>')
        body.append(_text(left + w + 6, y + 15, str(n)))
    if not counts:
        body.append(_text(left, top + 15, "nothing dropped"))
    return _svg(width, height, body)


def _img(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img src="data:image/svg+xml;base64,{data}" alt="{html.escape(alt)}">'


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; } .muted { color: #666; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.summary td:first-child { font-weight: 600; }
.kv { margin: 0; padding: 0; list-style: none; font-size: 12px; }
.kv.inline li { display: inline; } .kv.inline li:not(:last-child)::after { content: " · "; color: #999; }
figure { margin: 12px 0 20px; } .figures { display: flex; flex-wrap: wrap; column-gap: 20px; }
.figures figure { margin: 6px 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
details.query { border: 1px solid #ddd; border-radius: 4px; margin: 6px 0; padding: 4px 10px; }
details.query > summary { cursor: pointer; }
.doc { max-height: 7.5em; overflow: auto; max-width: 640px; font-size: 12px; }
.rule { font-family: monospace; background: #f1f1f1; padding: 0 4px; border-radius: 3px; }
.positive { color: #2e7d32; } .kept { color: #1565c0; } .dropped { color: #666; }
"""

# Records image counts on <body> once everything loaded: a headless browser test reads them back.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) broken++;
  }
  document.body.dataset.images = images.length;
  document.body.dataset.brokenImages = broken;
});
"""


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """Cells are HTML already (the caller escapes); `numeric` columns are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html_scores(run: RunData) -> str:
    if not run.score_columns:
        return '<p class="muted">No score column holds values.</p>'
    parts = ['<p class="muted">Each score column on shared bins; each group has its own height scale '
             '(its tallest bar is "max").</p>']
    for column in run.score_columns:
        edges, counts, values = score_histogram(run, column, HTML_BINS)
        alt = f"histogram of {column}: " + ", ".join(f"{g} n={values[g].size}" for g in GROUPS)
        parts.append(f"<figure>{_img(svg_score_histogram(column, edges, counts, values), alt)}</figure>")
    return parts[0] + '<div class="figures">' + "".join(parts[1:]) + "</div>"


def _html_ranks(run: RunData) -> str:
    spans, counts = rank_histogram(run)
    if not counts.sum():
        return '<p class="muted">No kept negative has a rank.</p>'
    alt = f"histogram of the ranks of {int(counts.sum())} kept negatives, ranks 1 to {spans[-1][1]}"
    padded = int(run.kept[schema.PADDED].sum()) if schema.PADDED in run.kept.columns else 0
    note = f'<p class="muted">{padded} padded negatives (random corpus documents) have no rank.</p>' if padded else ""
    return f"<figure>{_img(svg_rank_histogram(spans, counts), alt)}</figure>{note}"


def _html_drops(run: RunData) -> str:
    total = run.candidates or 1
    rows = [[f'<span class="rule">{html.escape(rule)}</span>', str(n), f"{100 * n / total:.1f} %"]
            for rule, n in run.dropped_by.items()]
    rows.append(["<b>kept</b>", str(run.kept.height), f"{100 * run.kept.height / total:.1f} %"])
    alt = "candidates dropped per filter rule: " + ", ".join(f"{r} {n}" for r, n in run.dropped_by.items())
    return (_table(["rule", "candidates", "share of candidates"], rows, {1, 2})
            + f"<figure>{_img(svg_drop_bars(run.dropped_by), alt)}</figure>")


def _kv_list(pairs: list[tuple[str, str]], inline: bool = False) -> str:
    items = "".join(f"<li>{html.escape(k)}={html.escape(v)}</li>" for k, v in pairs)
    return f'<ul class="kv{" inline" if inline else ""}">{items}</ul>'


def _html_stages(run: RunData) -> str:
    rows = []
    for path, manifest in run.manifests:
        params = _flat(manifest.get("params", {}))
        rows.append([
            html.escape(manifest["stage"]),
            f"<code>{html.escape(str(path.relative_to(run.workdir)))}</code>",
            html.escape(_fmt(manifest.get("seconds"))),
            html.escape(_outputs(manifest)),
            _kv_list(_flat(manifest.get("stats", {})), inline=True),
            f"<details><summary>{len(params)} parameters</summary>{_kv_list(params)}</details>",
            html.escape(str(manifest.get("finished_at", ""))),
        ])
    if not rows:
        return '<p class="muted">No manifests found.</p>'
    return _table(["stage", "manifest", "seconds", "rows", "stats", "params", "finished"], rows, {2})


def _rule_tally(dropped: list[dict]) -> str:
    """`rank_window 31, not_sampled 14`: how many of these dropped rows each rule dropped, most first."""
    rules: dict[str, int] = {}
    for row in dropped:
        rules[row[schema.DROPPED_BY]] = rules.get(row[schema.DROPPED_BY], 0) + 1
    return ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])))


def _kept_columns(sample: QuerySample) -> list[tuple[str, str]]:
    """Order and rank of the kept negatives; `padded` only where the query has a padded one."""
    columns = [(schema.NEGATIVE_RANK, "#"), (schema.RANK, "rank")]
    return columns + [(schema.PADDED, "padded")] if any(r.get(schema.PADDED) for r in sample.kept) else columns


def _doc_rows(rows: list[dict], columns: list[tuple[str, str]], score_columns: list[str]) -> str:
    header = [title for _, title in columns] + score_columns + ["doc_id", "text"]
    numeric = {i for i, (key, _) in enumerate(columns) if key in (schema.RANK, schema.NEGATIVE_RANK)}
    numeric |= set(range(len(columns), len(columns) + len(score_columns)))
    cells = []
    for row in rows:
        first = []
        for key, _ in columns:
            value = row.get(key)
            first.append(f'<span class="rule">{html.escape(str(value))}</span>' if key == schema.DROPPED_BY
                         else html.escape(_fmt(value)))
        cells.append(first + [html.escape(_fmt(row.get(c))) for c in score_columns]
                     + [f"<code>{html.escape(str(row[schema.DOC_ID]))}</code>",
                        f'<div class="doc">{html.escape(row["text"])}</div>'])
    return _table(header, cells, numeric)


def _html_query(sample: QuerySample, score_columns: list[str], open_: bool) -> str:
    counts = (f'<span class="positive">{len(sample.positives)} positive</span>, '
              f'<span class="kept">{len(sample.kept)} kept</span>, '
              f'<span class="dropped">{len(sample.dropped)} dropped</span>')
    parts = [f'<details class="query"{" open" if open_ else ""}><summary><code>{html.escape(sample.query_id)}</code> '
             f"{html.escape(sample.text)} <small>({counts})</small></summary>"]
    parts.append('<h4 class="positive">Positives</h4>')
    parts.append(_doc_rows(sample.positives, [], score_columns) if sample.positives else "<p>none</p>")
    parts.append('<h4 class="kept">Kept negatives</h4>')
    parts.append(_doc_rows(sample.kept, _kept_columns(sample), score_columns) if sample.kept else "<p>none</p>")
    parts.append(f'<h4 class="dropped">Dropped candidates</h4><p class="muted">{html.escape(_rule_tally(sample.dropped))}</p>')
    if sample.dropped:
        parts.append(_doc_rows(sample.dropped, [(schema.DROPPED_BY, "dropped by"), (schema.RANK, "rank")], score_columns))
    parts.append("</details>")
    return "".join(parts)


def _html_sample(run: RunData, samples: list[QuerySample], seed: int) -> str:
    intro = (f'<p class="muted">{len(samples)} of {run.queries.height} queries, sampled with seed {seed} '
             f"(<code>--sample</code>, <code>--seed</code>). Open a query to see its documents.</p>")
    return intro + "".join(_html_query(s, run.score_columns, i == 0) for i, s in enumerate(samples))


def render_html(run: RunData, samples: list[QuerySample], seed: int) -> str:
    title = f"hnmine report: {_short_name(run.workdir)}"
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _summary(run))
    summary = f'<table class="summary"><tbody>{summary}</tbody></table>'
    sections = {
        "scores": _html_scores(run), "ranks": _html_ranks(run), "drops": _html_drops(run),
        "stages": _html_stages(run), "sample": _html_sample(run, samples, seed),
    }
    nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in SECTIONS.items())
    body = "".join(f'<section id="{key}"><h2>{html.escape(SECTIONS[key])}</h2>{content}</section>'
                   for key, content in sections.items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
            f"<body><h1>{html.escape(title)}</h1>"
            f'<p class="muted"><code>{html.escape(str(run.workdir))}</code> · made {time.strftime("%Y-%m-%d %H:%M")}</p>'
            f"{summary}<nav>{nav}</nav>{body}</body></html>\n")


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str, limit: int | None = None) -> str:
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        text = text[:limit].rstrip() + "…"
    return text.replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _bar(count: int, peak: int, width: int = 10) -> str:
    return "█" * round(width * count / peak) if peak and count else ""


def _md_scores(run: RunData) -> list[str]:
    if not run.score_columns:
        return ["No score column holds values."]
    lines = ["Candidates per score bin; each group's bars are scaled to its own largest bin."]
    for column in run.score_columns:
        edges, counts, values = score_histogram(run, column, MD_BINS)
        peaks = {g: int(counts[g].max()) if values[g].size else 0 for g in GROUPS}
        header = ["bin"] + [f"{g} (n={values[g].size})" for g in GROUPS]
        rows = [[f"{edges[j]:.4g} – {edges[j + 1]:.4g}"]
                + [f"{counts[g][j]} {_bar(int(counts[g][j]), peaks[g])}".strip() for g in GROUPS]
                for j in range(len(edges) - 1)]
        lines += ["", f"### {column}", "", *_md_table(header, rows)]
    return lines


def _md_ranks(run: RunData) -> list[str]:
    spans, counts = rank_histogram(run, max_bars=20)
    if not counts.sum():
        return ["No kept negative has a rank."]
    peak = int(counts.max())
    rows = [[str(a) if a == b else f"{a}-{b}", str(c), _bar(int(c), peak, 20)] for (a, b), c in zip(spans, counts)]
    return _md_table(["rank", "kept negatives", ""], rows)


def _md_drops(run: RunData) -> list[str]:
    total = run.candidates or 1
    peak = max(run.dropped_by.values(), default=0)
    rows = [[f"`{rule}`", str(n), f"{100 * n / total:.1f} %", _bar(n, peak, 20)] for rule, n in run.dropped_by.items()]
    rows.append(["**kept**", str(run.kept.height), f"{100 * run.kept.height / total:.1f} %", ""])
    return _md_table(["rule", "candidates", "share of candidates", ""], rows)


def _md_stages(run: RunData) -> list[str]:
    rows = [[manifest["stage"], f"`{path.relative_to(run.workdir)}`", _fmt(manifest.get("seconds")),
             _md_cell(_outputs(manifest)),
             _md_cell(", ".join(f"{k}={v}" for k, v in _flat(manifest.get("stats", {})))),
             _md_cell(", ".join(f"{k}={v}" for k, v in _flat(manifest.get("params", {}))))]
            for path, manifest in run.manifests]
    return _md_table(["stage", "manifest", "seconds", "rows", "stats", "params"], rows) if rows else ["No manifests found."]


def _md_doc_table(rows: list[dict], columns: list[tuple[str, str]], score_columns: list[str]) -> list[str]:
    header = [title for _, title in columns] + score_columns + ["doc_id", "text"]
    cells = [[_md_cell(_fmt(row.get(key))) for key, _ in columns] + [_fmt(row.get(c)) for c in score_columns]
             + [f"`{row[schema.DOC_ID]}`", _md_cell(row["text"], MD_TEXT_CHARS)] for row in rows]
    return _md_table(header, cells)


def _md_sample(run: RunData, samples: list[QuerySample], seed: int) -> list[str]:
    lines = [f"{len(samples)} of {run.queries.height} queries, sampled with seed {seed}; texts cut at "
             f"{MD_TEXT_CHARS} characters, at most {MD_DROPPED_ROWS} dropped candidates per query."]
    for s in samples:
        lines += ["", f"### `{s.query_id}` {_md_cell(s.text, MD_TEXT_CHARS)}", "", "Positives:", ""]
        lines += _md_doc_table(s.positives, [], run.score_columns) if s.positives else ["none"]
        lines += ["", "Kept negatives:", ""]
        lines += _md_doc_table(s.kept, _kept_columns(s), run.score_columns) if s.kept else ["none"]
        lines += ["", f"Dropped candidates ({len(s.dropped)}):", ""]
        if s.dropped:
            lines += _md_doc_table(s.dropped[:MD_DROPPED_ROWS], [(schema.DROPPED_BY, "dropped by"), (schema.RANK, "rank")],
                                   run.score_columns)
        rest = s.dropped[MD_DROPPED_ROWS:]
        if rest:
            lines += ["", f"… and {len(rest)} more: {_rule_tally(rest)}"]
    return lines


def render_markdown(run: RunData, samples: list[QuerySample], seed: int) -> str:
    lines = [f"# hnmine report: {_short_name(run.workdir)}", "", f"`{run.workdir}`", ""]
    lines += _md_table(["", ""], [[k, _md_cell(v)] for k, v in _summary(run)])
    sections = {"scores": _md_scores(run), "ranks": _md_ranks(run), "drops": _md_drops(run),
                "stages": _md_stages(run), "sample": _md_sample(run, samples, seed)}
    for key, content in sections.items():
        lines += ["", f"## {SECTIONS[key]}", "", *content]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def default_output(workdir: Path, fmt: str) -> Path:
    return Path(workdir) / f"report.{fmt}"


def write_report(workdir: Path, output: Path | None = None, fmt: str | None = None, sample: int = 20,
                 seed: int = 42) -> ReportResult:
    """Write the report of a finished work dir. `fmt` None: md when `output` ends in .md, else html."""
    if fmt is None:
        fmt = "md" if output is not None and Path(output).suffix.lower() == ".md" else "html"
    if fmt not in ("html", "md"):
        raise HnmineError(f"unknown report format '{fmt}'", fix="use --format html or --format md")
    if sample < 0:
        raise HnmineError(f"--sample must be 0 or more, not {sample}", fix="pass --sample 20, or 0 for no sample")
    run = load_run(Path(workdir))
    samples = build_sample(run, sample_queries(run, sample, seed))
    text = render_html(run, samples, seed) if fmt == "html" else render_markdown(run, samples, seed)
    output = Path(output) if output is not None else default_output(run.workdir, fmt)
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return ReportResult(output, fmt, len(samples), run.queries.height)
