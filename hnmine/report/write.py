"""`hnmine report`: one page that shows a person what a run mined, as HTML or Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.report.data import build_sample, load_run, sample_queries
from hnmine.report.html import render_html
from hnmine.report.markdown import render_markdown


@dataclass
class ReportResult:
    path: Path
    format: str
    queries_sampled: int
    queries: int


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
