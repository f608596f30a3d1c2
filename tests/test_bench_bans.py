"""Smoke test: the ban benchmark runs end to end at a tiny size and prints its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_bench_bans_runs_tiny():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_bans.py"),
                          "--sizes", "300", "--sample", "10", "--restart", "500",
                          "--offenders", "3000", "--repeat", "1",
                          "--batch-sizes", "2000", "--bans", "3000"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "private network namespace" in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.strip().startswith("300 |"))
    assert row.count("/s") == 3 and "(extrap.)" in row
    assert "sshguardd, table gone" in text and "one nft process per ban" in text
    assert "max_tracked=3,000" in text and "tracked 3,000" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("2,000 |"))
    assert row.count(" s") == 2, row
    assert "remembered 3,000, forgotten 0" in text
