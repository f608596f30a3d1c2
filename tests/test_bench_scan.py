"""Smoke test: the scan benchmark runs end to end at a tiny size (figures are not judged
here; bench/bench_scan.py is run by hand at full size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_scan.py"


def test_bench_scan_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--lines", "3000", "--attackers", "200",
         "--f2b-lines", "1000", "--jobs", "2", "--repeat", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("  ")[0].strip(): line.split() for line in proc.stdout.splitlines()}
    for tool in ("sshguardd scan (1 process)", "sshg-parser (SSHGuard, C)"):
        assert tool in rows, proc.stdout
        assert int(rows[tool][-1]) > 500  # each found plenty of failures in 3000 lines
    assert "fail2ban-regex (sshd.conf)*" in rows
    assert "vs sshg-parser" in proc.stdout
