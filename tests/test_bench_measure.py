"""The benchmarks' memory figure (scripts/_common.measure) is the measured command's own: Linux
carries a spawning process's high-water mark into its child's ru_maxrss through fork and exec, so
a script that holds a large array while it runs a small stage must not report the array."""

from __future__ import annotations

import sys

import numpy as np
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from _common import measure  # noqa: E402


def test_a_small_child_of_a_large_parent_reports_its_own_memory(tmp_path):
    held = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process
    child = "import time, numpy; a = numpy.ones(200 * 2**20 // 8); time.sleep(1.0)"  # about 230 MB
    result = measure([sys.executable, "-c", child], tmp_path / "child")
    assert result["rc"] == 0 and held.sum() > 0
    assert result["peak_rss_rusage"] >= 600 * 2**20  # the inherited mark the figure must not take
    assert 200 * 2**20 <= result["peak_rss"] < 450 * 2**20
