"""The report as one self-contained HTML file.

It needs nothing beside it: charts are SVG (`report.svg`) embedded as data URIs, the sample is
browsable with `<details>` (no JavaScript needed), and every text from the data is escaped. One
small inline script only records, on load, how many images the page has and how many failed to
decode (`data-images`, `data-broken-images` on `<body>`), so a headless browser can check that the
page renders.
"""

from __future__ import annotations

import base64
import html
import time

from hnmine import schema
from hnmine.report.data import (
    GROUPS,
    SECTIONS,
    QuerySample,
    RunData,
    calibration_notes,
    calibration_rows,
    calibration_verdict,
    flat_pairs,
    format_value,
    kept_columns,
    output_rows,
    rank_histogram,
    rule_tally,
    score_histogram,
    short_name,
    summary_pairs,
)
from hnmine.report.svg import svg_calibration_curve, svg_drop_bars, svg_rank_histogram, svg_score_histogram

HTML_BINS = 30


def _img(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img src="data:image/svg+xml;base64,{data}" alt="{html.escape(alt)}">'


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


def _html_rounds(run: RunData) -> str:
    if not run.rounds:
        return '<p class="muted">No other round: <code>hnmine round new WORKDIR NAME</code> starts one (see README).</p>'
    return "".join(f"<h3>{html.escape(title)}</h3><ul>{''.join(f'<li>{html.escape(line)}</li>' for line in described)}</ul>"
                   for title, described in run.rounds)


def _html_calibration(run: RunData) -> str:
    parts = [f'<p class="muted">{html.escape(note)}</p>' for note in calibration_notes(run)]
    for option in (run.calibration or {}).get("options", []):
        parts.append(f"<p>{html.escape(calibration_verdict(option))}</p>")
        if option["curve"]:
            alt = (f"share of queries full and of candidates passing against --{option['option']}; suggested "
                   f"{option['suggested']}")
            parts.append(f"<figure>{_img(svg_calibration_curve(option), alt)}</figure>")
            rows = [[html.escape(c) for c in row] for row in calibration_rows(option)]
            parts.append(_table(["value chosen for", "value", "queries full", "candidates passing"], rows, {1, 2, 3}))
    return "".join(parts)


def _kv_list(pairs: list[tuple[str, str]], inline: bool = False) -> str:
    items = "".join(f"<li>{html.escape(k)}={html.escape(v)}</li>" for k, v in pairs)
    return f'<ul class="kv{" inline" if inline else ""}">{items}</ul>'


def _html_stages(run: RunData) -> str:
    rows = []
    for path, manifest in run.manifests:
        params = flat_pairs(manifest.get("params", {}))
        rows.append([
            html.escape(manifest["stage"]),
            f"<code>{html.escape(str(path.relative_to(run.workdir)))}</code>",
            html.escape(format_value(manifest.get("seconds"))),
            html.escape(output_rows(manifest)),
            _kv_list(flat_pairs(manifest.get("stats", {})), inline=True),
            f"<details><summary>{len(params)} parameters</summary>{_kv_list(params)}</details>",
            html.escape(str(manifest.get("finished_at", ""))),
        ])
    if not rows:
        return '<p class="muted">No manifests found.</p>'
    return _table(["stage", "manifest", "seconds", "rows", "stats", "params", "finished"], rows, {2})


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
                         else html.escape(format_value(value)))
        cells.append(first + [html.escape(format_value(row.get(c))) for c in score_columns]
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
    parts.append(_doc_rows(sample.kept, kept_columns(sample), score_columns) if sample.kept else "<p>none</p>")
    parts.append(f'<h4 class="dropped">Dropped candidates</h4><p class="muted">{html.escape(rule_tally(sample.dropped))}</p>')
    if sample.dropped:
        parts.append(_doc_rows(sample.dropped, [(schema.DROPPED_BY, "dropped by"), (schema.RANK, "rank")], score_columns))
    parts.append("</details>")
    return "".join(parts)


def _html_sample(run: RunData, samples: list[QuerySample], seed: int) -> str:
    intro = (f'<p class="muted">{len(samples)} of {run.queries.height} queries, sampled with seed {seed} '
             f"(<code>--sample</code>, <code>--seed</code>). Open a query to see its documents.</p>")
    return intro + "".join(_html_query(s, run.score_columns, i == 0) for i, s in enumerate(samples))


def render_html(run: RunData, samples: list[QuerySample], seed: int) -> str:
    title = f"hnmine report: {short_name(run.workdir)}"
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in summary_pairs(run))
    summary = f'<table class="summary"><tbody>{summary}</tbody></table>'
    sections = {
        "scores": _html_scores(run), "ranks": _html_ranks(run), "drops": _html_drops(run),
        "stages": _html_stages(run), "calibration": _html_calibration(run), "rounds": _html_rounds(run),
        "sample": _html_sample(run, samples, seed),
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
