"""Smoke test: the scan benchmark runs end to end at a tiny size on both generators' logs
(figures are not judged here; bench/bench_scan.py is run by hand at full size)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_scan.py"
TOOLS = ("sshguardd scan", "sshguardd scan --summary", "sshguardd scan --jobs 2",
         "sshg-parser (SSHGuard, C)", "fail2ban-regex (sshd.conf)*")


def test_bench_scan_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--lines", "3000", "--f2b-lines", "1000", "--jobs", "2",
         "--repeat", "1", "--out", str(tmp_path), "--no-flood"],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    *sections, both = proc.stdout.split("\n== ")[1:]
    assert [s.split(":")[0] for s in sections] == ["gen_authlog (classic)",
                                                    "gen_authlog2 (ISO 8601)"], proc.stdout
    # Both logs side by side, every target's row, the policy on each log's events.
    assert both.startswith("side by side"), both
    assert "| gen_authlog (classic)" in both and "| gen_authlog2 (ISO 8601)" in both, both
    for row in ("scan (JSON lines) vs sshg-parser", "scan --summary vs sshg-parser",
                "scan --summary vs fail2ban-regex", "scan --jobs 2 vs sshg-parser",
                "peak RSS scan / --summary", "ban policy on the log own events"):
        assert row in both, both
    for section in sections:
        rows = {re.split(r"\s{2,}", line)[0]: line.split() for line in section.splitlines()}
        for tool in TOOLS:
            assert tool in rows, section
        for tool in ("sshguardd scan", "sshg-parser (SSHGuard, C)"):
            assert int(rows[tool][-1]) > 500, section  # plenty of failures in 3000 lines
        assert int(rows["sshguardd scan --summary"][-1]) > 0  # some bans
        assert "vs sshg-parser" in section and "vs fail2ban-regex" in section
