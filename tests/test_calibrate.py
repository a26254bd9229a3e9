"""`hnmine calibrate`: the suggested threshold, applied by the real filter, keeps the target share of queries full."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import dataset
from typer.testing import CliRunner

from hnmine.calibrate import calibrate
from hnmine.cli import app
from hnmine.config import (
    CalibrateParams,
    DataParams,
    FilterParams,
    IndexParams,
    MineParams,
    ScoreParams,
)
from hnmine.errors import HnmineError
from hnmine.run_config import load_config, write_threshold
from hnmine.stages.filter import filter_stage
from hnmine.stages.index import index
from hnmine.stages.mine import mine
from hnmine.stages.score import score

# the filter being calibrated: a rank window, 5 negatives, no embedding checks (a BM25-only run), the
# best positive as the reference (the least relevant of nfcorpus's ~38 labeled positives often shares
# no term with the query: a BM25 score of 0, under which max_relative drops every candidate)
BASE = {"rank_max": 30, "num_negatives": 5, "near_duplicate": 0, "duplicate_negatives": 0, "reference_positive": "max"}


@pytest.fixture(scope="module", params=["nfcorpus", "scifact"])
def bm25_run(request, tmp_path_factory):
    """A whole development set's test queries, BM25 top 40 candidates, its scores kept (`score --scorer none`).
    BM25 finds fewer than 30 candidates for about a quarter of nfcorpus's short queries: no threshold
    keeps those full, so the targets below stay under what the sets can reach."""
    workdir = tmp_path_factory.mktemp(f"calibrate-{request.param}")
    data = DataParams(beir=dataset(request.param), split="test")
    index(workdir, data, IndexParams(retrievers=["bm25"]), progress=False)
    mine(workdir, data, MineParams(retriever="bm25", top_k=40), progress=False)
    score(workdir, ScoreParams(), progress=False)
    return workdir


def _share_full(workdir, params: FilterParams) -> float:
    stats = filter_stage(workdir, params, progress=False).stats
    return stats["queries_with_all_negatives"] / stats["queries"]


@pytest.mark.parametrize("target", [0.6, 0.4])
@pytest.mark.parametrize("option", ["margin", "max_relative"])
def test_suggested_score_threshold_keeps_the_target_share_full(bm25_run, option, target):
    result = calibrate(bm25_run, CalibrateParams(target_full=target, options=[option]), FilterParams(**BASE))
    calibrated = result.options[0]
    assert calibrated.suggested is not None, calibrated.note
    share = _share_full(bm25_run, FilterParams(**BASE, **{option: calibrated.suggested}))
    assert target <= share <= target + 0.02
    # the curve is computed without running the filter: it predicts the real filter exactly here
    assert calibrated.applied["queries_full"] == pytest.approx(share)
    predicted = [row for row in calibrated.table if row["share"] == target]
    assert predicted and predicted[0]["queries_full"] == pytest.approx(share)


def test_suggested_rank_min_is_the_strictest_that_keeps_the_target(bm25_run):
    # with a margin on, how deep the window starts decides how many queries keep 5 survivors
    recipe = BASE | {"margin": -3.0}
    calibrated = calibrate(bm25_run, CalibrateParams(target_full=0.6, options=["rank_min"]), FilterParams(**recipe)).options[0]
    rank_min = int(calibrated.suggested)
    assert _share_full(bm25_run, FilterParams(**recipe | {"rank_min": rank_min})) >= 0.6
    assert _share_full(bm25_run, FilterParams(**recipe | {"rank_min": rank_min + 1})) < 0.6


def test_curve_runs_from_loose_to_strict_and_the_positives_are_described(bm25_run):
    result = calibrate(bm25_run, CalibrateParams(options=["margin"]), FilterParams(**BASE))
    curve = result.options[0].curve
    assert len(curve) > 10
    full = [p["queries_full"] for p in curve]
    passing = [p["candidates_pass"] for p in curve]
    assert full == sorted(full, reverse=True) and passing == sorted(passing, reverse=True)
    assert [p["value"] for p in curve] == sorted(p["value"] for p in curve)  # larger margin is stricter
    positives = result.summary["positive_scores"]["bm25_score"]
    assert positives["count"] > 0 and positives["p0"] <= positives["p50"] <= positives["p100"]
    saved = json.loads(result.output.read_text())
    assert saved["options"][0]["suggested"] == result.options[0].suggested


def test_a_rule_without_its_inputs_is_listed_not_calibrated(bm25_run):
    # a BM25-only run has no probability column: max_probability cannot be calibrated
    result = calibrate(bm25_run, CalibrateParams(target_full=0.5, options=["max_probability", "margin"]), FilterParams(**BASE))
    probability, margin = result.options
    assert probability.suggested is None and not probability.curve and "probability" in probability.note
    assert margin.suggested is not None


def test_write_keeps_the_config_and_run_reads_the_value(bm25_run, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text(
        f'# my run\nworkdir = "{bm25_run}"\n\n[data]\nbeir = "{dataset("nfcorpus")}"\n\n'
        '[filter]\nrank_max = 30\nmargin = 9.0  # too strict, to be calibrated\nnum_negatives = 5\n'
        'near_duplicate = 0\nduplicate_negatives = 0\nreference_positive = "max"\n\n[calibrate]\ntarget_full = 0.5\noptions = ["margin"]\n')
    result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "--write", "margin"])
    assert result.exit_code == 0, result.output
    loaded = load_config(config)
    text = config.read_text()
    assert "# my run" in text and "# too strict, to be calibrated" in text and "[calibrate]" in text
    assert loaded.filter.margin != 9.0 and f"set margin = {loaded.filter.margin:g}" in result.output
    assert 0.5 <= _share_full(bm25_run, loaded.filter) <= 0.52
    # an option the table lacks is added under [filter]
    write_threshold(config, "rank_min", 3)
    assert load_config(config).filter.rank_min == 3 and load_config(config).filter.margin == loaded.filter.margin


def test_calibrate_errors_are_one_line(bm25_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(bm25_run), "--write", "margin"])
    assert result.exit_code == 2 and "--config" in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["calibrate", str(bm25_run), "--options", "top_k"])
    assert result.exit_code == 2 and "--options: Input should be 'rank_min'" in result.output
    empty = tmp_path / "empty"
    shutil.copytree(bm25_run, empty, ignore=shutil.ignore_patterns("scored*"))
    with pytest.raises(HnmineError, match="hnmine score"):
        calibrate(empty)


def test_report_draws_the_calibration_and_says_when_it_is_stale(bm25_run, tmp_path):
    import xml.etree.ElementTree as ET

    from hnmine.report.data import load_run
    from hnmine.report.svg import svg_calibration_curve
    from hnmine.report.write import write_report

    filter_stage(bm25_run, FilterParams(**BASE, margin=0.0), progress=False)
    result = calibrate(bm25_run, CalibrateParams(target_full=0.5, options=["margin", "max_probability"]))
    assert result.summary["filter_params_from"] == "the work dir's last filter run"
    margin = result.options[0]
    assert margin.current == 0.0
    ET.fromstring(svg_calibration_curve(vars(margin)))  # well-formed SVG
    page = write_report(bm25_run, output=tmp_path / "report.html").path.read_text()
    assert 'id="calibration"' in page and "against --margin" in page
    markdown = write_report(bm25_run, output=tmp_path / "report.md").path.read_text()
    section = markdown.split("## Calibration of the thresholds")[1].split("\n## ")[0]
    assert f"--margin {margin.suggested:g} is the strictest value" in section
    assert "--max-probability: not calibrated" in section and "| current setting | 0 |" in section
    assert "earlier scored file" not in section
    saved = json.loads(result.output.read_text())
    result.output.write_text(json.dumps(saved | {"scored_fingerprint": "another"}))
    assert not load_run(bm25_run).calibration_current
    assert "earlier scored file" in write_report(bm25_run, output=tmp_path / "stale.md").path.read_text()


@pytest.mark.parametrize(("critical", "stricter", "inclusive", "expected"), [
    (1.1, "larger", False, 1.09),     # 1.1 * 100 is 110.00000000000001 in floating point
    (0.07, "larger", False, 0.0699),
    (-1.234, "larger", False, -1.24),
    (1.15, "smaller", False, 1.16),
    (4.35, "smaller", False, 4.36),
    (1.0, "smaller", True, 1.0),      # max_probability drops only above its value: 1.0 keeps a probability of 1.0
    (0.00123, "smaller", True, 0.00123),
])
def test_suggested_values_are_readable_and_just_looser(critical, stricter, inclusive, expected):
    from hnmine.calibrate import _Scale

    scale = _Scale(stricter, inclusive, integer=False)
    value = scale.looser(critical)
    assert value == expected and scale.passes(critical, value)


def test_write_keeps_line_endings_and_refuses_a_value_the_filter_rejects(tmp_path):
    config = tmp_path / "crlf.toml"
    config.write_bytes(b'workdir = "w"\r\n[data]\r\nbeir = "b"\r\n[ filter ]  # mine\r\nmargin = 1.0')
    write_threshold(config, "margin", 2.5)
    assert config.read_bytes() == b'workdir = "w"\r\n[data]\r\nbeir = "b"\r\n[ filter ]  # mine\r\nmargin = 2.5\r\n'
    with pytest.raises(HnmineError, match="max_relative"):
        write_threshold(config, "max_relative", -1.0)
    assert b"max_relative" not in config.read_bytes()


def test_near_copy_negatives_the_curve_cannot_see_are_made_up_by_a_looser_value(filtered):
    # adi with its dense index: at a cosine of 0.5 many negatives are near copies of one another,
    # so the real filter empties queries the curve counts as full
    recipe = FilterParams(num_negatives=3, duplicate_negatives=0.5, near_duplicate=0)
    calibrated = calibrate(filtered, CalibrateParams(target_full=0.8, options=["margin"]), recipe).options[0]
    predicted = next(row for row in calibrated.table if row["share"] == 0.8)
    assert calibrated.applied["target_met"]
    share = _share_full(filtered, recipe.model_copy(update={"margin": calibrated.suggested}))
    assert share == pytest.approx(calibrated.applied["queries_full"]) and share >= 0.8
    assert calibrated.suggested < predicted["value"]  # looser than the curve's value (larger margins are stricter)
    # and the curve's own value really leaves fewer full
    assert _share_full(filtered, recipe.model_copy(update={"margin": predicted["value"]})) < 0.8
