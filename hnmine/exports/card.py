"""The dataset card of an export folder (`README.md` with Hugging Face YAML).

`datasets.load_dataset(FOLDER)` then loads the last export's training file as is, and every other
file hnmine exported there is its own config (`load_dataset(FOLDER, "n-tuple-ids")`): without the
card, `datasets` would take every file whose name says "train" (ids sidecars too) as one split, and
FlagEmbedding's and Tevatron's folder modes would read whatever JSON lies there. The card is built
from the export manifests in the folder's `.hnmine/` alone, so it says for each file how it was
mined (each stage's parameters and command) and the false-negative audit when one was run on the
same negatives. A README.md that hnmine did not write is left alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from hnmine.errors import HnmineError
from hnmine.io.files import atomic_path
from hnmine.io.manifest import HIDDEN_DIR, MANIFEST_SUFFIX, changed_files, manifest_path, read_manifest

CARD = "README.md"
MARK = "hnmine_export"  # the front-matter key of a card hnmine wrote
_STAGES = (("corpus", "index: corpus"), ("dense", "index: dense"), ("bm25", "index: bm25"), ("candidates", "mine"),
           ("scored", "score"), ("negatives", "filter"))


def provenance(upstream: dict[str, Path], audit_summary: Path | None) -> dict:
    """What the card says of one export's data: each upstream stage's command, parameters and main
    counts (from the manifests of `upstream`, by the names in _STAGES), and the audit of the same
    negatives when `audit_summary` is one."""
    stages, fingerprints = {}, {}
    for name, label in _STAGES:
        path = upstream.get(name)
        manifest_file = manifest_path(path) if path else None
        if manifest_file is None or not manifest_file.exists():
            continue
        manifest = read_manifest(manifest_file)
        fingerprints[name] = manifest["fingerprint"]
        params = {k: v for k, v in _flat(manifest.get("params", {})).items() if v not in (None, [], {}, "")}
        stats = manifest.get("stats", {})
        counts = {k: v for k, v in stats.items()
                  if isinstance(v, (int, float, str)) and not isinstance(v, bool) and v != 0}
        if isinstance(stats.get("dropped_by"), dict):
            counts["dropped_by"] = stats["dropped_by"]
        stages[label] = {"command": manifest.get("command"), "params": params, "counts": counts}
    audit = None
    if audit_summary is not None and Path(audit_summary).is_file():
        summary = json.loads(Path(audit_summary).read_text())
        if fingerprints.get("negatives") and summary.get("negatives_fingerprint") == fingerprints["negatives"]:
            audit = {k: summary.get(k) for k in ("qrels", "kept_negatives", "false_negatives", "false_negative_rate",
                                                 "queries_with_audit_labels", "queries_with_a_false_negative")}
    return {"stages": stages, "audit": audit}


def _flat(params: dict) -> dict:
    """A stage's parameters with nested groups (mine's `data` and `mine`) opened into their keys."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict) and key != "scorer":
            flat |= _flat(value)
        else:
            flat[key] = value
    return flat


def _exports(folder: Path) -> list[dict]:
    """The export manifests of the folder whose training files are still the bytes they describe,
    oldest first."""
    found = []
    for manifest_file in sorted((folder / HIDDEN_DIR).glob(f"*{MANIFEST_SUFFIX}")):
        try:
            manifest = read_manifest(manifest_file)
        except (OSError, HnmineError):  # a manifest that is not one describes no file of the card
            continue
        train = folder / manifest_file.name.removesuffix(MANIFEST_SUFFIX)
        if manifest.get("stage") != "export" or not train.is_file() or changed_files(train, manifest):
            continue
        found.append(manifest | {"_train": train})
    return sorted(found, key=lambda m: (m.get("finished_at", ""), m["_train"].name))


def _builder(path: Path) -> str:
    return "parquet" if path.suffix == ".parquet" else "json"


def _files(folder: Path, manifest: dict) -> list[tuple[str, Path, dict]]:
    """(config name, file, its description in the manifest) of one export: the training file, and
    its ids sidecar or corpus file when it has one."""
    train, outputs = manifest["_train"], manifest.get("outputs", {})
    found = [(_config_name(train), train, outputs.get("train", {}))]
    for part in ("ids", "corpus"):
        described = outputs.get(part)
        if described and (folder / Path(described["path"]).name).is_file():
            found.append((f"{_config_name(train)}-{part}", folder / Path(described["path"]).name, described))
    return found


def _config_name(train: Path) -> str:
    return train.name.removesuffix(".parquet").removesuffix(".jsonl")


def is_ours(card: Path) -> bool:
    """A README.md hnmine wrote (its front matter has the mark), or none at all."""
    if not card.exists():
        return True
    head = card.read_text(encoding="utf-8", errors="replace")[:4096]
    return head.startswith("---") and f"\n{MARK}:" in head


def write_card(folder: Path, newest: Path | None = None) -> Path | None:
    """Write FOLDER/README.md for the exports in it, `newest` (the file just exported, or reused)
    the default; None (nothing written) when a README.md that hnmine did not write is there."""
    folder = Path(folder)
    card = folder / CARD
    if not is_ours(card):
        return None
    exports = _exports(folder)
    exports.sort(key=lambda m: newest is not None and m["_train"].name == Path(newest).name)
    configs, infos = [], []
    # `datasets` reads every config of a folder with the builder of the first one listed: the newest
    # export goes first (the default), and only files of its kind (Parquet or JSONL) are configs
    kind = _builder(exports[-1]["_train"]) if exports else None
    for manifest in reversed(exports):
        for name, path, described in _files(folder, manifest):
            if _builder(path) != kind:
                continue
            configs.append({"config_name": name, "data_files": [{"split": "train", "path": path.name}]}
                           | ({"default": True} if not configs else {}))
            if described.get("features"):
                infos.append({"config_name": name, "features": described["features"]})
    front = {MARK: True, "tags": ["hard-negatives", "retrieval", "hnmine"]} | ({"configs": configs} if configs else {})
    if infos:
        front["dataset_info"] = infos
    text = "---\n" + _yaml(front) + "---\n\n" + _body(folder, exports)
    with atomic_path(card) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return card


def _body(folder: Path, exports: list[dict]) -> str:
    lines = ["# Hard negatives mined by hnmine", "",
             "Queries, their positives and mined hard negatives, for training embedding and reranker models.", ""]
    if not exports:
        return "\n".join(lines + ["No export in this folder yet: run `hnmine export`.", ""])
    newest = exports[-1]["_train"]
    kind = _builder(newest)
    lines += ["## Files", "", "| config | file | format | rows | queries | columns |", "|---|---|---|---|---|---|"]
    others = []
    for manifest in reversed(exports):
        stats = manifest.get("stats", {})
        for name, path, described in _files(folder, manifest):
            columns = ", ".join(f"`{f['name']}`" for f in described.get("features", []))
            train = path == manifest["_train"]
            what = manifest["params"].get("format") if train else (
                "row-aligned ids" if name.endswith("-ids") else "the documents it names")
            config = f"`{name}`" if _builder(path) == kind else "(by file)"
            if _builder(path) != kind:
                others.append(path)
            lines.append(f"| {config} | `{path.name}` | {what} | {described.get('rows', '')} | "
                         f"{stats.get('queries', '') if train else ''} | {columns} |")
    lines += ["", f"`load_dataset` without a config name loads `{newest.name}`, the last one exported.", "",
              "```python", "from datasets import load_dataset", "",
              f'train = load_dataset("{folder.name}", split="train")  # {newest.name}']
    for name, path, _ in _files(folder, exports[-1])[1:]:
        if _builder(path) == kind:
            note = "row i: the ids of train row i" if name.endswith("-ids") else "the documents it names"
            lines.append(f'{name.rsplit("-", 1)[1]} = load_dataset("{folder.name}", "{name}", split="train")  # {note}')
    for path in others:  # `datasets` takes one kind of file per folder: the others by name
        lines.append(f'{_config_name(path).replace("-", "_").replace(".", "_")} = load_dataset("{_builder(path)}", '
                     f'data_files="{folder.name}/{path.name}", split="train")')
    lines += ["```", ""]
    lines += _extra_positive_lines(exports)
    seen: list[dict] = []
    for manifest in reversed(exports):
        mined = manifest.get("outputs", {}).get("provenance")
        if not mined or mined in seen:
            continue
        seen.append(mined)
        files = [f"`{m['_train'].name}`" for m in exports if m.get("outputs", {}).get("provenance") == mined]
        lines += [f"## How {', '.join(files)} {'was' if len(files) == 1 else 'were'} mined", ""]
        lines += _provenance_lines(mined, exports, files)
    return "\n".join(lines)


# formats with a row per (query, positive): a query with extra positives has several rows, which an
# in-batch-negative loss must not see in one batch (its other rows' positives would be its negatives)
_ROW_PER_POSITIVE = ("n-tuple", "triplet", "labeled-pair", "labeled-list")


def _extra_positive_lines(exports: list[dict]) -> list[str]:
    """How to batch the files whose extra positives give a query several rows."""
    files = [manifest for manifest in exports if manifest.get("params", {}).get("format") in _ROW_PER_POSITIVE
             and manifest.get("stats", {}).get("extra_positives")]
    if not files:
        return []
    lines = ["## Extra positives", ""]
    for manifest in reversed(files):
        planned = manifest["params"].get("batch_plan", "none") != "none"
        lines.append(
            f"`{manifest['_train'].name}` has {manifest['stats']['extra_positives']} extra positives (the filter's likely "
            "positives; `labeled` or `positive_labeled` is false for them in the ids file), so a query can have several "
            "rows. With an in-batch-negative loss (MultipleNegativesRankingLoss) one query's rows must not share a "
            "batch, or its own positives become its negatives: "
            + ("its rows are in a batch plan that keeps them apart; train with `hnmine.exports.sampler.planned_batches`."
               if planned else
               "train with `batch_sampler=BatchSamplers.NO_DUPLICATES` (sentence-transformers), or export with "
               "`--batch-plan no-false-negatives`."))
        lines.append("")
    return lines


def _provenance_lines(mined: dict, exports: list[dict], files: list[str]) -> list[str]:
    lines = []
    for label, stage in mined["stages"].items():
        params = ", ".join(f"{k}={_short(v)}" for k, v in stage["params"].items())
        lines.append(f"- **{label}**: {params}")
        counts = stage["counts"]
        if counts:
            lines.append("  - " + ", ".join(f"{k} {_short(v)}" for k, v in counts.items()))
    commands = []
    for stage in mined["stages"].values():
        if stage.get("command") and stage["command"] not in commands:
            commands.append(stage["command"])
    for manifest in exports:
        if f"`{manifest['_train'].name}`" in files and manifest.get("command") and manifest["command"] not in commands:
            commands.append(manifest["command"])
    if commands:
        lines += ["", "Made by (in the folder they ran in):", "", "```sh", *commands, "```"]
    audit = mined.get("audit")
    if audit and audit.get("kept_negatives"):
        rate = audit.get("false_negative_rate")
        lines += ["", f"False-negative audit against `{audit['qrels']}`: {audit['false_negatives']} of "
                      f"{audit['kept_negatives']} kept negatives are labeled relevant"
                      + (f" ({100 * rate:.1f} %)" if rate is not None else "")
                      + f", in {audit.get('queries_with_a_false_negative')} of {audit.get('queries_with_audit_labels')} "
                        "queries with audit labels."]
    return lines + [""]


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def _yaml(value, indent: int = 0) -> str:
    """A small YAML emitter for the card's front matter: mappings, lists and JSON-quoted scalars."""
    pad = "  " * indent
    if isinstance(value, dict):
        out = ""
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out += f"{pad}{key}:\n" + _yaml(item, indent + 1)
            else:
                out += f"{pad}{key}: {_scalar(item)}\n"
        return out
    out = ""
    for item in value:
        if isinstance(item, (dict, list)) and item:
            body = _yaml(item, indent + 1)
            out += f"{pad}- " + body[len(pad) + 2:]
        else:
            out += f"{pad}- {_scalar(item)}\n"
    return out


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(str(value), ensure_ascii=False)
