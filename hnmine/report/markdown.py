"""The report as Markdown, for a terminal or a pull request: the same sections as the HTML page."""

from __future__ import annotations

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

MD_BINS = 10
MD_TEXT_CHARS, MD_DROPPED_ROWS = 200, 10


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
    rows = [[manifest["stage"], f"`{path.relative_to(run.workdir)}`", format_value(manifest.get("seconds")),
             _md_cell(output_rows(manifest)),
             _md_cell(", ".join(f"{k}={v}" for k, v in flat_pairs(manifest.get("stats", {})))),
             _md_cell(", ".join(f"{k}={v}" for k, v in flat_pairs(manifest.get("params", {}))))]
            for path, manifest in run.manifests]
    return _md_table(["stage", "manifest", "seconds", "rows", "stats", "params"], rows) if rows else ["No manifests found."]


def _md_doc_table(rows: list[dict], columns: list[tuple[str, str]], score_columns: list[str]) -> list[str]:
    header = [title for _, title in columns] + score_columns + ["doc_id", "text"]
    cells = [[_md_cell(format_value(row.get(key))) for key, _ in columns] + [format_value(row.get(c)) for c in score_columns]
             + [f"`{row[schema.DOC_ID]}`", _md_cell(row["text"], MD_TEXT_CHARS)] for row in rows]
    return _md_table(header, cells)


def _md_sample(run: RunData, samples: list[QuerySample], seed: int) -> list[str]:
    lines = [f"{len(samples)} of {run.queries.height} queries, sampled with seed {seed}; texts cut at "
             f"{MD_TEXT_CHARS} characters, at most {MD_DROPPED_ROWS} dropped candidates per query."]
    for s in samples:
        lines += ["", f"### `{s.query_id}` {_md_cell(s.text, MD_TEXT_CHARS)}", "", "Positives:", ""]
        lines += _md_doc_table(s.positives, [], run.score_columns) if s.positives else ["none"]
        lines += ["", "Kept negatives:", ""]
        lines += _md_doc_table(s.kept, kept_columns(s), run.score_columns) if s.kept else ["none"]
        lines += ["", f"Dropped candidates ({len(s.dropped)}):", ""]
        if s.dropped:
            lines += _md_doc_table(s.dropped[:MD_DROPPED_ROWS], [(schema.DROPPED_BY, "dropped by"), (schema.RANK, "rank")],
                                   run.score_columns)
        rest = s.dropped[MD_DROPPED_ROWS:]
        if rest:
            lines += ["", f"… and {len(rest)} more: {rule_tally(rest)}"]
    return lines


def _md_calibration(run: RunData) -> list[str]:
    lines = list(calibration_notes(run))
    for option in (run.calibration or {}).get("options", []):
        lines += ["", calibration_verdict(option)]
        if option["curve"]:
            lines += ["", *_md_table(["value chosen for", "value", "queries full", "candidates passing"],
                                     calibration_rows(option))]
    return lines


def _md_rounds(run: RunData) -> list[str]:
    if not run.rounds:
        return ["No other round: `hnmine round new WORKDIR NAME` starts one (see README)."]
    lines: list[str] = []
    for title, described in run.rounds:
        lines += [f"**{title}**", "", *(f"- {line}" for line in described), ""]
    return lines[:-1]


def render_markdown(run: RunData, samples: list[QuerySample], seed: int) -> str:
    lines = [f"# hnmine report: {short_name(run.workdir)}", "", f"`{run.workdir}`", ""]
    lines += _md_table(["", ""], [[k, _md_cell(v)] for k, v in summary_pairs(run)])
    sections = {"scores": _md_scores(run), "ranks": _md_ranks(run), "drops": _md_drops(run),
                "stages": _md_stages(run), "calibration": _md_calibration(run),
                "rounds": _md_rounds(run), "sample": _md_sample(run, samples, seed)}
    for key, content in sections.items():
        lines += ["", f"## {SECTIONS[key]}", "", *content]
    return "\n".join(lines) + "\n"
