#!/usr/bin/env python3
"""Failure detection throughput: `sshguardd scan` against its peers, on two logs from two
independently written generators.

    python3 bench/bench_scan.py [--lines 1000000] [--f2b-lines 200000] [--jobs N]
                                [--repeat 3] [--log FILE ...] [--out DIR]

Logs (made once, deterministically, under --out; bench/out/ is git-ignored):
  gen_authlog   classic "Mmm dd hh:mm:ss" stamps, one connection after the other, the
                project's own generator (the fast paths were tuned on it);
  gen_authlog2  ISO 8601 stamps (rsyslog's default on Debian 12+), interleaved
                connections, another family mix, long-tail user names, a fifth IPv6,
                a third other programs' lines (see its docstring).
--log FILE replaces them (repeatable), e.g. with a captured auth.log.

On each log, interleaved (one run of every tool, then the next round), --repeat rounds:
  sshguardd scan FILE              JSON lines, one process
  sshguardd scan --summary FILE    per-address counts and the bans the policy would make
  sshguardd scan --jobs N FILE     N worker processes (skipped with --jobs 1)
  sshg-parser < FILE               SSHGuard's C parser
  fail2ban-regex FILE sshd.conf    on the first --f2b-lines lines only (it is slow)
Each row gives the median wall seconds and CPU seconds (user+system: the machine may be
shared, so CPU is the fairer comparison), lines/s by both, the largest peak RSS and what
was found. Then, per log, the ratios the targets of issue 16 are stated in.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SSHG_PARSER = "/usr/libexec/sshguard/sshg-parser"
F2B_FILTER = "/etc/fail2ban/filter.d/sshd.conf"
GNU_TIME = "/usr/bin/time"


@dataclass
class Row:
    tool: str
    argv: list[str]
    stdin: str | None
    lines: int
    out: Path
    runs: list[tuple[float, float, int]] = field(default_factory=list)  # wall, cpu, KiB
    found: int = 0

    @property
    def wall(self) -> float:
        return statistics.median(r[0] for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r[1] for r in self.runs)

    @property
    def rss_mib(self) -> float:
        return max(r[2] for r in self.runs) / 1024


def run_once(row: Row) -> None:
    """One run of row.argv, stdout to row.out. GNU time forks from a small C process, so
    CPU and RSS are the tool's own (RSS: the largest process of its tree)."""
    stats = row.out.with_suffix(".time")
    with open(row.stdin or os.devnull, "rb") as fin, open(row.out, "wb") as fout:
        t = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-o", str(stats), "-f", "%U %S %M", *row.argv],
                              stdin=fin, stdout=fout, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{row.argv!r} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-500:]}")
    user, system, rss = stats.read_text().split()[-3:]
    row.runs.append((wall, float(user) + float(system), int(rss)))


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def sshguardd_argv() -> list[str]:
    exe = shutil.which("sshguardd", path=str(ROOT / ".venv" / "bin")) or shutil.which("sshguardd")
    return [exe] if exe else [sys.executable, "-m", "sshguardd"]


def make_logs(out: Path, lines: int) -> list[tuple[str, Path]]:
    sys.path.insert(0, str(HERE))
    import gen_authlog
    import gen_authlog2

    logs = []
    for name, path, make in (
            ("gen_authlog (classic)", out / f"auth-{lines}-40000-1.log",
             lambda p: gen_authlog.generate(p, lines, 40_000, 1)),
            ("gen_authlog2 (ISO 8601)", out / f"auth2-{lines}-2-iso.log",
             lambda p: gen_authlog2.generate(p, lines, 2, "iso"))):
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            make(str(tmp))
            tmp.rename(path)
        logs.append((name, path))
    return logs


def rows_for(log: Path, out: Path, jobs: int, f2b_lines: int, exe: list[str]) -> list[Row]:
    total = count_lines(log)
    scan = [*exe, "scan", "--year", "2025"]  # gen_authlog's year
    stem = log.stem
    rows = [Row("sshguardd scan", [*scan, str(log)], None, total, out / f"{stem}.scan.jsonl"),
            Row("sshguardd scan --summary", [*scan, "--summary", str(log)], None, total,
                out / f"{stem}.summary.txt")]
    if jobs > 1:
        rows.append(Row(f"sshguardd scan --jobs {jobs}", [*scan, "--jobs", str(jobs), str(log)],
                        None, total, out / f"{stem}.jobs.jsonl"))
    rows.append(Row("sshg-parser (SSHGuard, C)", [SSHG_PARSER], str(log), total,
                    out / f"{stem}.sshg.out"))
    f2b_log, f2b_total = log, total
    if f2b_lines and f2b_lines < total:
        f2b_log = out / f"{stem}.prefix-{f2b_lines}.log"
        if not f2b_log.exists():
            with open(log, "rb") as src, open(f2b_log, "wb") as dst:
                for _, line in zip(range(f2b_lines), src, strict=False):
                    dst.write(line)
        f2b_total = f2b_lines
    star = "*" if f2b_total < total else ""
    rows.append(Row(f"fail2ban-regex (sshd.conf){star}",
                    ["fail2ban-regex", str(f2b_log), F2B_FILTER], None, f2b_total,
                    out / f"{stem}.f2b.out"))
    return rows


def found(row: Row) -> int:
    if row.tool.startswith("fail2ban-regex"):
        m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched", row.out.read_text())
        return int(m.group(3)) if m else -1
    if "--summary" in row.argv:
        m = re.search(r"(\d+) addresses would be banned", row.out.read_text())
        return int(m.group(1)) if m else -1
    return count_lines(row.out)


def report(name: str, log: Path, rows: list[Row], repeat: int) -> dict[str, float]:
    total = rows[0].lines
    print(f"\n== {name}: {log} ({total} lines, {log.stat().st_size / 2**20:.1f} MiB); "
          f"median of {repeat} interleaved runs, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'tool':<32} {'lines':>8} {'wall s':>7} {'cpu s':>7} {'lines/s':>9} "
          f"{'lines/cpu-s':>11} {'RSS':>8} {'found':>8}")
    for r in rows:
        print(f"{r.tool:<32} {r.lines:>8} {r.wall:>7.2f} {r.cpu:>7.2f} {r.lines / r.wall:>9.0f} "
              f"{r.lines / max(r.cpu, 1e-3):>11.0f} {r.rss_mib:>6.1f}MB {r.found:>8}")
    by = {r.tool.split(" (")[0].rstrip("*"): r for r in rows}
    sshg, f2b = by["sshg-parser"], by["fail2ban-regex"]

    def rate(r: Row, cpu: bool) -> float:
        return r.lines / max(r.cpu if cpu else r.wall, 1e-3)

    ratios = {}
    print("found: sshguardd = failures printed (--summary: addresses banned); sshg-parser = "
          "attacks (all services); fail2ban-regex = matched lines")
    if f2b.lines < total:
        print(f"* fail2ban-regex read the first {f2b.lines} lines; its rates are over those.")
    for tool, peer, target in (("sshguardd scan", sshg, 1.0),
                               ("sshguardd scan --summary", sshg, 1.0),
                               ("sshguardd scan --summary", f2b, 20.0),
                               *[(t, sshg, 1.0) for t in by if "--jobs" in t]):
        ours = by[tool]
        wall, cpu = rate(ours, False) / rate(peer, False), rate(ours, True) / rate(peer, True)
        peer_name = peer.tool.split(" (")[0]
        ratios[f"{tool} vs {peer_name}"] = wall
        print(f"  {tool:<28} vs {peer_name:<15} {wall:6.2f}x wall  {cpu:6.2f}x cpu  "
              f"(target >= {target:g}x)")
    return ratios


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--f2b-lines", type=int, default=200_000,
                    help="lines fed to fail2ban-regex (a prefix of each log; 0 = all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="also run sshguardd scan --jobs N (default: CPUs; 1 = skip)")
    ap.add_argument("--log", type=Path, action="append", default=[],
                    help="use this log instead of the generated ones (repeatable)")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="work directory")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians shown")
    ap.add_argument("--exe", default=None,
                    help="how to run sshguardd, split at spaces (default: the .venv's)")
    args = ap.parse_args()
    exe = args.exe.split() if args.exe else sshguardd_argv()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = [(str(p), p) for p in args.log] or make_logs(args.out, args.lines)
    tables = [(name, log, rows_for(log, args.out, args.jobs, args.f2b_lines, exe))
              for name, log in logs]
    for _ in range(max(1, args.repeat)):
        for _, _, rows in tables:
            for row in rows:
                run_once(row)
    for _, _, rows in tables:
        for row in rows:
            row.found = found(row)
    for name, log, rows in tables:
        report(name, log, rows, max(1, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
