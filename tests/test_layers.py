"""The package's shape: the import-linter contracts in pyproject.toml (DESIGN.md's layering, no import
cycle) hold, and no module grows past 400 lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def test_import_contracts_hold():
    # a fresh interpreter, so the graph is of the hnmine this test suite imports, not a cached one
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "0 broken" in result.stdout


def test_no_module_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in sorted((REPO / "hnmine").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
