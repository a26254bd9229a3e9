"""A real OpenAI-compatible server for judge tests: llama-cpp-python serving the packaged SmolLM2 GGUF."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    def __init__(self, log_dir: Path, port: int | None = None):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            pytest.fail("llama-cpp-python is not installed: run `make install` (the test extra builds it)")
        from hnmine.packaged.locate import packaged_judge_gguf

        self.gguf = packaged_judge_gguf()
        self.port = port or free_port()
        self.log = Path(log_dir) / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
                   "--port", str(self.port), "--n_ctx", "2048", "--n_threads", str(min(2, os.cpu_count() or 1)),
                   "--model_alias", MODEL_ALIAS, "--logits_all", "true"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.kill()
        pytest.fail(f"llama.cpp server did not answer within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no graceful shutdown."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
