"""A run config (`hnmine run CONFIG`): the work dir and one table per stage, read from TOML, and
one filter threshold written back into it (`hnmine calibrate --write`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

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
from hnmine.io.files import atomic_path


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workdir: Path
    data: DataParams
    index: IndexParams = IndexParams()
    mine: MineParams = MineParams()
    score: ScoreParams = ScoreParams()
    filter: FilterParams = FilterParams()
    export: ExportParams = ExportParams()
    calibrate: CalibrateParams = CalibrateParams()  # read by `hnmine calibrate --config`, not by `hnmine run`


def _resolve_paths(model: BaseModel, base: Path) -> None:
    for name, value in model:
        if isinstance(value, Path) and not value.is_absolute():
            setattr(model, name, (base / value).resolve())


def load_config(path: Path) -> RunConfig:
    """Read a TOML run config. Relative paths in it are relative to the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise HnmineError("config file not found", path=path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HnmineError(f"invalid TOML ({exc})", path=path) from None
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HnmineError(f"{where}: {validation_message(first)} ({len(exc.errors())} problem(s))", path=path) from None
    base = path.parent.resolve()
    if not config.workdir.is_absolute():
        config.workdir = (base / config.workdir).resolve()
    for section in (config.data, config.index, config.mine, config.score, config.filter, config.export):
        _resolve_paths(section, base)
    # a model is a name or a path: a relative one that is there beside the config (or starts with
    # ".") is that path, as every other path in a config is
    for section, name in ((config.index, "model"), (config.score, "model"), (config.score, "judge_model")):
        value = getattr(section, name)
        if value and not Path(value).expanduser().is_absolute() and (value.startswith(".") or (base / value).exists()):
            setattr(section, name, str((base / value).resolve()))
    return config


def write_threshold(config: Path, option: str, value: float) -> None:
    """Set `option = value` in the [filter] table of a TOML config, keeping every other line, comment
    and line ending; the result is read back and validated before it replaces the file."""
    import re

    config = Path(config)
    with open(config, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    literal = str(int(value)) if option == "rank_min" else repr(float(value))
    header = re.compile(r"^\s*\[\s*filter\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line.rstrip("\r\n"))), None)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    if start is None:
        lines.append(f"{newline}[filter]{newline}{option} = {literal}{newline}")
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        for i in range(start + 1, end):
            if "=" in lines[i] and lines[i].split("=", 1)[0].strip() == option:
                comment = lines[i].split("#", 1)[1].rstrip("\r\n") if "#" in lines[i] else None
                lines[i] = f"{option} = {literal}" + (f"  #{comment}" if comment else "") + newline
                break
        else:
            lines.insert(start + 1, f"{option} = {literal}{newline}")
    new_text = "".join(lines)
    fix = f"set `{option} = {literal}` under [filter] by hand"
    try:
        table = tomllib.loads(new_text)["filter"]
        FilterParams.model_validate(table)
    except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        raise HnmineError(f"could not set {option} in its [filter] table ({str(exc).splitlines()[0]})", path=config,
                          fix=fix) from None
    if table.get(option) != (int(value) if option == "rank_min" else float(value)):
        raise HnmineError(f"{option} reads back as {table.get(option)!r}, not {literal}", path=config, fix=fix)
    with atomic_path(config) as tmp:
        with open(tmp, "w", newline="") as handle:
            handle.write(new_text)
