"""A run config (`hnmine run CONFIG`): the work dir and one table per stage, read from TOML."""

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
