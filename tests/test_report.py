"""`hnmine report` on a real run: the HTML page renders in a real browser (headless Chromium) with
every chart decoded and every section there; the Markdown has the same sections and the filter's
counts; a missing input is one line that names the file and the command that writes it."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hnmine.cli import app
from hnmine.config import DataParams, ExportParams, FilterParams, MineParams, ScoreParams
from hnmine.report.data import SECTIONS
from hnmine.stages.export import export
from hnmine.stages.filter import filter_stage
from hnmine.stages.mine import mine
from hnmine.stages.score import score

SAMPLE = 6


@pytest.fixture(scope="module")
def workdir(adi_indexed, adi, tmp_path_factory) -> Path:
    """adi mined hybrid (dense, bm25 and fused scores), filtered with a rank window, exported."""
    target = tmp_path_factory.mktemp("report") / "work"
    shutil.copytree(adi_indexed, target)
    mine(target, DataParams(beir=adi), MineParams(retriever="hybrid", top_k=10), progress=False)
    score(target, ScoreParams(), progress=False)
    filter_stage(target, FilterParams(rank_min=2, num_negatives=3), progress=False)
    export(target, ExportParams(format="n-tuple"), progress=False)
    return target


def _report(*args: str) -> str:
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _chromium() -> str:
    """The browser binary; without one the test fails (never skips), naming the fix."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("chromium is not installed: apt-get install chromium (.ci/run installs it)")


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _image_counts(dom: str) -> tuple[int, int]:
    """What the page's load handler wrote on <body>: images, and images that failed to decode."""
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    broken = re.search(r'data-broken-images="(\d+)"', body.group(0))
    assert images and broken, f"the load handler did not run: {body.group(0)}"
    return int(images.group(1)), int(broken.group(1))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_html_report_renders_in_a_browser_with_every_chart_and_section(workdir, tmp_path):
    out = _report(str(workdir), "--sample", str(SAMPLE))
    page = workdir / "report.html"  # the default output
    assert out.strip() == f"report: wrote {page} (html, {SAMPLE} of 35 queries sampled)"
    text = page.read_text()
    # self-contained: every src is a data URI, no stylesheet or script is fetched
    assert not re.search(r'\bsrc="(?!data:)', text) and "<link" not in text and "<script src" not in text
    for column in ("dense_score", "bm25_score", "fused_score"):
        assert f'alt="histogram of {column}: positives n=' in text
    assert text.count('<details class="query"') == SAMPLE

    dom = _browse(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    images, broken = _image_counts(dom.stdout)
    assert images == 3 + 2 and broken == 0  # a histogram per score column, the ranks, the drops
    for key, title in SECTIONS.items():
        assert re.search(rf'<section id="{key}"><h2>{re.escape(title)}</h2>', dom.stdout), key

    shot = tmp_path / "report.png"
    result = _browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert _png_size(shot) == (1280, 2400)
    assert shot.stat().st_size > 40_000  # charts and tables; a blank page of this size is ~10 KB


def test_the_browser_check_catches_a_broken_chart(workdir, tmp_path):
    """The same page with one SVG that does not parse: the load handler counts it as broken."""
    _report(str(workdir), "--output", str(tmp_path / "ok.html"), "--sample", "1")
    text = (tmp_path / "ok.html").read_text()
    bad = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>a & b</text></svg>')
    broken_page = tmp_path / "broken.html"
    broken_page.write_text(re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+",
                                  "data:image/svg+xml;base64," + bad.decode(), text, count=1))
    dom = _browse(broken_page, tmp_path / "profile", "--dump-dom")
    assert _image_counts(dom.stdout)[1] == 1


def test_markdown_report_has_the_sections_and_the_filter_counts(workdir, tmp_path):
    out = _report(str(workdir), "--format", "md", "--output", str(tmp_path / "r.md"), "--sample", str(SAMPLE))
    assert out.strip().endswith(f"(md, {SAMPLE} of 35 queries sampled)")
    text = (tmp_path / "r.md").read_text()
    for title in SECTIONS.values():
        assert f"\n## {title}\n" in text
    for column in ("dense_score", "bm25_score", "fused_score"):
        assert f"\n### {column}\n" in text

    drops = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", text, flags=re.M))
    manifest = json.loads((workdir / "negatives.manifest.json").read_text())
    assert {rule: int(n) for rule, n in drops.items()} == manifest["stats"]["dropped_by"]
    assert {"rank_window", "not_sampled"} <= drops.keys()
    assert re.search(rf"^\| \*\*kept\*\* \| {manifest['stats']['kept']} \|", text, flags=re.M)
    for stage in ("corpus", "dense", "bm25", "mine", "score", "filter", "export"):
        assert re.search(rf"^\| {stage} \| `", text, flags=re.M), stage

    queries = re.findall(r"^### `([^`]+)`", text, flags=re.M)
    assert len(queries) == SAMPLE
    sample_part = text.split("## Sample of queries", 1)[1]
    text_cells = [line.rsplit(" | ", 1)[-1].removesuffix(" |").replace("\\|", "|")
                  for line in sample_part.splitlines() if line.startswith("| ")]
    assert text_cells and max(len(c) for c in text_cells) <= 200 + 1  # texts cut at 200 characters, + "…"

    again = _report(str(workdir), "--format", "md", "--output", str(tmp_path / "again.md"), "--sample", str(SAMPLE))
    assert "again.md" in again
    assert re.findall(r"^### `([^`]+)`", (tmp_path / "again.md").read_text(), flags=re.M) == queries  # same seed
    _report(str(workdir), "--format", "md", "--output", str(tmp_path / "other.md"), "--sample", str(SAMPLE), "--seed", "7")
    assert re.findall(r"^### `([^`]+)`", (tmp_path / "other.md").read_text(), flags=re.M) != queries


def test_missing_negatives_is_one_line_naming_the_file_and_the_command(workdir, tmp_path):
    partial = tmp_path / "work"
    shutil.copytree(workdir, partial, ignore=shutil.ignore_patterns("negatives.arrow", "index", "report.*"))
    result = subprocess.run([sys.executable, "-m", "hnmine.cli", "report", str(partial)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(partial / "negatives.arrow") in lines[0] and "hnmine filter" in lines[0]
    assert not (partial / "report.html").exists()
