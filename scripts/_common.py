"""What the benchmark and evaluation scripts share: the shared data, a doc section they rewrite, the
machine line, one way to measure a command's peak memory, and the recipes of configs/*.toml.

Scripts import it as `from _common import ...` (Python puts a script's own folder on sys.path).
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"


# ------------------------------------------------------------------------------------------ docs


def splice_section(doc: Path, name: str, body: str, *, heading: str | None = None, title: str | None = None) -> None:
    """Write `body` into `doc` between `<!-- BEGIN name -->` and `<!-- END name -->`.

    Where the markers are missing, `heading` appends a `## heading` section holding them; a missing
    `doc` is created with `# title` when `title` is given. Without either, missing markers stop the
    script (the doc was edited by hand: better to say so than to append a second copy).
    """
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    doc = Path(doc)
    if doc.exists():
        text = doc.read_text(encoding="utf-8")
    elif title is not None:
        text = f"# {title}\n\n{begin}\n{end}\n"
    else:
        raise SystemExit(f"{doc} does not exist")
    if begin not in text or end not in text or text.index(begin) > text.index(end):
        if heading is None:
            raise SystemExit(f"{doc}: markers {begin} / {end} not found")
        text = text.rstrip() + f"\n\n## {heading}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{body}\n{end}{tail}", encoding="utf-8")


# --------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def padding_share(batches) -> float:
    """The share of padding among the tokens of `PrefetchTorchEncoder.packed_batches` (features as
    a dict, or stacked [input_ids, attention_mask, token_type_ids] on CUDA): the most that unpadded
    (variable-length) attention could take off the forward pass's work."""
    total = real = 0
    for _, features, _ in batches:
        mask = features["attention_mask"] if isinstance(features, dict) else features[1]
        total += mask.numel()
        real += int(mask.sum())
    return 1 - real / total if total else 0.0


def cpu_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_line(device: str = "cpu", packages: Sequence[str] = ()) -> str:
    """`2-core CPU (AMD EPYC ...), 8 GiB RAM, Python 3.11.9, torch 2.13.0`; on a GPU the GPU's name
    first. `packages` are added with their installed versions."""
    from importlib import metadata

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [f"{cpu_cores()}-core CPU ({cpu_model()}), {ram:.0f} GiB RAM"]
    if device.startswith("cuda"):
        import torch

        parts.insert(0, torch.cuda.get_device_name(0))
    parts.append(f"Python {platform.python_version()}")
    for package in packages:
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} not installed")
    return ", ".join(parts)


def today() -> str:
    return time.strftime("%Y-%m-%d")


# ------------------------------------------------------------------------------------------ data


@dataclass
class Beir:
    """A BEIR data set as hnmine reads it (hnmine.io.readers): texts are title + text."""

    doc_ids: list[str]
    texts: list[str]
    query_text: dict[str, str]  # every query of queries.jsonl
    qrels: dict[str, dict[str, float]]  # query id -> positive doc id -> relevance (>= min_relevance), file order

    def text_of(self) -> dict[str, str]:
        return dict(zip(self.doc_ids, self.texts))


def load_beir(name: str | Path, split: str = "test", *, min_relevance: float = 1.0, doc_prefix: str = "") -> Beir:
    """A data set of the shared data folder by name (or a BEIR folder by path), read through hnmine.io.

    `doc_prefix` is put before every doc id (to concatenate corpora without collisions)."""
    from hnmine.io.qrels import read_qrels
    from hnmine.io.readers import beir_file, beir_qrels, read_corpus, read_queries
    from hnmine.text import document_text

    folder = Path(name) if Path(name).is_dir() else DATA / str(name)
    corpus, _ = read_corpus(beir_file(folder, "corpus"))
    queries, _ = read_queries(beir_file(folder, "queries"))
    doc_ids = corpus.column("doc_id").to_pylist()
    texts = [document_text(t, x) for t, x in zip(corpus.column("title").to_pylist(), corpus.column("text").to_pylist())]
    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    table, _ = read_qrels(beir_qrels(folder, split), set(query_text), set(doc_ids), min_relevance=min_relevance,
                          on_unknown="skip")
    qrels: dict[str, dict[str, float]] = {}
    for qid, did, rel in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        qrels.setdefault(qid, {})[doc_prefix + did] = rel
    return Beir([doc_prefix + d for d in doc_ids], texts, query_text, qrels)


def beir_subset(source: Path, target: Path, query_ids: set[str], split: str = "test") -> Path:
    """A BEIR folder with the whole corpus of `source` and only the given queries and their qrels lines
    (the lines copied as they are, so hnmine reads what it would read from the source)."""
    from hnmine.io.readers import beir_file, beir_qrels

    target.mkdir(parents=True, exist_ok=True)
    corpus = beir_file(source, "corpus")
    link = target / corpus.name
    if not link.exists():
        link.symlink_to(corpus.resolve())

    def lines(path: Path) -> list[str]:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return handle.readlines()

    queries = [line for line in lines(beir_file(source, "queries"))
               if line.strip() and str(json.loads(line)["_id"]) in query_ids]
    (target / "queries.jsonl").write_text("".join(queries), encoding="utf-8")
    qrels = lines(beir_qrels(source, split))
    kept = [qrels[0]] + [line for line in qrels[1:] if line.split("\t", 1)[0] in query_ids]
    (target / "qrels").mkdir(exist_ok=True)
    (target / "qrels" / f"{split}.tsv").write_text("".join(kept), encoding="utf-8")
    return target


# ----------------------------------------------------------------------------------- measurement


def _high_water(pid: int) -> int:
    """A process's peak RSS since its exec (VmHWM in /proc/PID/status), in bytes; 0 where not readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(cmd: list[str], log_stem: Path, env: dict[str, str] | None = None, poll_seconds: float = 0.1) -> dict:
    """Run `cmd` (in the repository) to completion, its output in `log_stem`.stdout.txt / .stderr.txt.

    Returns wall seconds, the exit code, the output, and the peak RSS in bytes of the command and its
    descendants: psutil polling every `poll_seconds` (the tree's summed RSS, and the command's own
    high-water mark, VmHWM, which exec resets), and the child's ru_maxrss from wait4; the largest is
    `peak_rss`, each is kept. ru_maxrss counts only where it exceeds this process's own peak: Linux
    carries the spawning process's high-water mark into the child through fork and exec, so a small
    child of a large parent would report the parent's memory."""
    import resource

    import psutil

    out_path, err_path = (log_stem.with_name(log_stem.name + suffix) for suffix in (".stdout.txt", ".stderr.txt"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    peak = high_water = 0
    parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        proc = psutil.Process(child.pid)
        while True:
            # wait4 (not Popen.poll) so the child's own rusage comes back with its exit status
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = proc.memory_info().rss
                for sub in proc.children(recursive=True):
                    try:
                        rss += sub.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, rss)
                high_water = max(high_water, _high_water(child.pid))
            except psutil.Error:
                pass
            time.sleep(poll_seconds)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    rss_from_rusage = usage.ru_maxrss * 1024  # Linux: KiB
    own_rusage = rss_from_rusage if rss_from_rusage > parent_peak else 0
    return {
        "cmd": cmd, "wall_s": wall, "peak_rss": max(peak, high_water, own_rusage), "peak_rss_polled": peak,
        "peak_rss_high_water": high_water, "peak_rss_rusage": rss_from_rusage, "rc": child.returncode,
        "stdout": out_path.read_text(), "stderr": err_path.read_text(), "stdout_path": out_path, "stderr_path": err_path,
    }


# --------------------------------------------------------------------------------------- recipes


def read_config(name: str | Path) -> dict:
    """A config of configs/ by name (`recommended`) or by path, as the dict `hnmine run` reads."""
    path = Path(name)
    if not path.suffix:
        path = CONFIGS / f"{name}.toml"
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def filter_recipe(name: str | Path) -> dict:
    """The [filter] table of a config (`filter_recipe("recommended")`): FilterParams keyword arguments."""
    return dict(read_config(name).get("filter", {}))


# ----------------------------------------------------------------------------------- judge server


JUDGE_ALIAS = "smollm2"


class LlamaServer:
    """llama-cpp-python (the test extra) serving the packaged SmolLM2 GGUF as an OpenAI-compatible
    endpoint on loopback, for the http judge. (tests/llama_server.py is the tests' own copy, which
    fails a test instead of stopping a script.)"""

    def __init__(self, log_dir: Path, port: int | None = None):
        import socket

        from hnmine.packaged.locate import packaged_judge_gguf

        if port is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        self.gguf, self.port = packaged_judge_gguf(), port
        self.log = Path(log_dir) / f"llama-server-{port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        import urllib.request

        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
                   "--port", str(self.port), "--n_ctx", "2048", "--n_threads", str(min(2, os.cpu_count() or 1)),
                   "--model_alias", JUDGE_ALIAS, "--logits_all", "true"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"llama.cpp server exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise SystemExit(f"llama.cpp server did not answer within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        import signal

        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
