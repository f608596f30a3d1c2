"""Smoke test: the journal benchmark script runs at a tiny size and prints its table
(the benchmark itself is not run by CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_journal.py"


def test_ingest_benchmark_runs_tiny(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--only", "ingest", "--entries", "2000",
                          "--workdir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(b) ingest, 2,000 entries (600 sshd)" in out.stdout
    assert "journalctl -o cat, same match" in out.stdout
