"""Smoke test: the drift benchmark runs end to end at a tiny size and prints its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_bench_drift_runs_tiny():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_drift.py"),
                          "--runs", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(ln.strip().startswith("sshguardd: sshd_config") and "p99" in ln for ln in lines)
    assert any("`sshd -t` alone" in ln for ln in lines)
    assert lines[-1].startswith("target: p99 < 250 ms")
