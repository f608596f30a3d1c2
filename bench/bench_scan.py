#!/usr/bin/env python3
"""Failure detection throughput: `sshguardd scan` against its peers on the same auth.log.

    python3 bench/bench_scan.py [--lines 1000000] [--attackers 40000] [--f2b-lines 200000]
                                [--jobs N] [--log FILE]

Generates (once, deterministically; bench/out/ is git-ignored) a realistic auth.log with
bench/gen_authlog.py, then runs on that file, one after the other:
  - sshguardd scan FILE            (one process; and with --jobs N, N worker processes)
  - /usr/libexec/sshguard/sshg-parser < FILE      (SSHGuard's C parser)
  - fail2ban-regex FILE /etc/fail2ban/filter.d/sshd.conf   (normal mode; on the first
    --f2b-lines lines only, because it is slow: its lines/s is computed over those)
and prints, side by side: lines read, seconds, lines/s, peak RSS of the largest process,
and failures found (sshguardd: JSON lines; sshg-parser: attack lines; fail2ban-regex: its
"matched" line count). Each tool's output goes to a file under bench/out/, not a terminal.
Targets from issue 2: sshguardd >= 20x fail2ban-regex's lines/s and >= sshg-parser's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SSHG_PARSER = "/usr/libexec/sshguard/sshg-parser"
F2B_FILTER = "/etc/fail2ban/filter.d/sshd.conf"

GNU_TIME = "/usr/bin/time"


REPEAT = 3


def measure(argv: list[str], stdin: str, out: Path) -> tuple[float, int]:
    """Best of REPEAT runs: (seconds, peak RSS KiB) of argv, stdout to `out`."""
    runs = [_measure_once(argv, stdin, out) for _ in range(REPEAT)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def _measure_once(argv: list[str], stdin: str, out: Path) -> tuple[float, int]:
    """(seconds, peak RSS KiB) of argv, stdout to `out`. GNU time forks from a tiny C
    process, so the RSS is the tool's own (the largest of its process tree when it forks
    workers), not inflated by this Python process."""
    stats = out.with_suffix(".time")
    with open(stdin if stdin != "-" else os.devnull, "rb") as fin, open(out, "wb") as fout:
        t = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-o", str(stats), "-f", "%M", *argv],
                              stdin=fin, stdout=fout, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{argv!r} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed, int(stats.read_text().split()[-1])


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def sshguardd_argv() -> list[str]:
    exe = shutil.which("sshguardd", path=str(ROOT / ".venv" / "bin")) or shutil.which("sshguardd")
    return [exe] if exe else [sys.executable, "-m", "sshguardd"]


def main() -> int:  # noqa: C901 (a linear script)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--attackers", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--f2b-lines", type=int, default=200_000,
                    help="lines fed to fail2ban-regex (a prefix of the log; 0 = all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="also run sshguardd scan --jobs N (default: CPUs; 1 = skip)")
    ap.add_argument("--log", type=Path, default=None, help="use this log instead of generating")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="work directory")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per tool; the fastest is reported (the host is shared)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    OUT = args.out
    OUT.mkdir(exist_ok=True)

    if args.log is None:
        log = OUT / f"auth-{args.lines}-{args.attackers}-{args.seed}.log"
        if not log.exists():
            sys.path.insert(0, str(HERE))
            import gen_authlog
            tmp = log.with_suffix(".tmp")
            gen_authlog.generate(str(tmp), args.lines, args.attackers, args.seed)
            tmp.rename(log)
    else:
        log = args.log
    total = count_lines(log)
    year = ["--year", "2025"]  # the generator's year; scan would otherwise use the mtime's

    rows = []
    scan = sshguardd_argv()
    out = OUT / "sshguardd.jsonl"
    secs, rss = measure([*scan, "scan", *year, str(log)], "-", out)
    rows.append(("sshguardd scan (1 process)", total, secs, rss, count_lines(out)))
    if args.jobs > 1:
        out = OUT / "sshguardd-jobs.jsonl"
        secs, rss = measure([*scan, "scan", *year, "--jobs", str(args.jobs), str(log)], "-", out)
        rows.append((f"sshguardd scan --jobs {args.jobs}", total, secs, rss, count_lines(out)))

    out = OUT / "sshg-parser.out"
    secs, rss = measure([SSHG_PARSER], str(log), out)
    rows.append(("sshg-parser (SSHGuard, C)", total, secs, rss, count_lines(out)))

    f2b_log, f2b_total = log, total
    if args.f2b_lines and args.f2b_lines < total:
        f2b_log = OUT / f"prefix-{args.f2b_lines}.log"
        with open(log, "rb") as src, open(f2b_log, "wb") as dst:
            for _, line in zip(range(args.f2b_lines), src):
                dst.write(line)
        f2b_total = args.f2b_lines
    out = OUT / "fail2ban-regex.out"
    secs, rss = measure(["fail2ban-regex", str(f2b_log), F2B_FILTER], "-", out)
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched", out.read_text())
    matched = int(m.group(3)) if m else -1
    label = "fail2ban-regex (sshd.conf)" + ("*" if f2b_total < total else "")
    rows.append((label, f2b_total, secs, rss, matched))

    print(f"log: {log} ({total} lines, {log.stat().st_size / 2**20:.1f} MiB); "
          f"best of {REPEAT} runs each, {os.cpu_count()} CPUs")
    print(f"{'tool':<30} {'lines':>9} {'seconds':>8} {'lines/s':>10} {'peak RSS':>9} "
          f"{'failures':>9}")
    for name, lines, secs, rss, found in rows:
        print(f"{name:<30} {lines:>9} {secs:>8.2f} {lines / secs:>10.0f} "
              f"{rss / 1024:>7.1f}MB {found:>9}")
    if f2b_total < total:
        print(f"* fail2ban-regex read only the first {f2b_total} lines (it is slow); its "
              "lines/s and failures are over those.")
    rate = {name: lines / secs for name, lines, secs, _, _ in rows}
    ours = max(v for k, v in rate.items() if k.startswith("sshguardd"))
    f2b = rate[label]
    sshg = rate["sshg-parser (SSHGuard, C)"]
    print(f"best sshguardd vs fail2ban-regex: {ours / f2b:.1f}x (target >= 20x); "
          f"vs sshg-parser: {ours / sshg:.2f}x (target >= 1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
