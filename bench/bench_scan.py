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

Last, "== side by side": both logs' ratios in one table, with the ban policy's rate on
each log's own events (every failure and login of the log through BanPolicy.observe, in
process, CPU time) and on bench_bans' (e) flood of 1M distinct offenders; with --journal N
(root) also bench_journal's ingest rate against `journalctl -o cat` and its
detection-to-ban latency (p50/p99) against fail2ban, on a journal of N entries.
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


def log_events(log: Path) -> list[tuple[object, ...]]:
    """Every event scan finds in `log` (failures and logins), as observe_raw's arguments."""
    sys.path.insert(0, str(ROOT))
    from sshguardd.detect import Correlator
    from sshguardd.scan.fastpath import scan_text
    from sshguardd.scan.textio import Years, chunks

    events: list[tuple[object, ...]] = []
    add = events.append

    def emit(raw: tuple, t: float | None, pid: int | None, *_: object) -> None:  # type: ignore[type-arg]
        add((raw[0], raw[1], raw[2], len(raw) > 4 and raw[4], pid, t))

    with open(log, "rb") as f:
        scan_text(chunks(f), Years(2025, None), Correlator(), emit)
    return events


def policy_rate(log: Path, repeat: int) -> tuple[int, float, float]:
    """(events, events per CPU second through BanPolicy.observe with a LogRecord and an
    Event per event as the daemon gives them, the same through observe_raw as scan
    --summary calls it); best of `repeat`."""
    from sshguardd.bans.policy import BanPolicy
    from sshguardd.config import BanConfig
    from sshguardd.contracts import Event, LogRecord

    events = log_events(log)
    objects = [(LogRecord("", t, pid), Event(kind, host, user, None, relay))  # type: ignore[arg-type]
               for kind, host, user, relay, pid, t in events]
    best_obj = best_raw = float("inf")
    for _ in range(max(1, repeat)):
        policy = BanPolicy(BanConfig())
        observe = policy.observe
        c = time.process_time()
        for record, event in objects:
            observe(record, event)
        best_obj = min(best_obj, time.process_time() - c)
        policy = BanPolicy(BanConfig())
        raw = policy.observe_raw
        c = time.process_time()
        for args in events:
            raw(*args)  # type: ignore[arg-type]
        best_raw = min(best_raw, time.process_time() - c)
    return len(events), len(events) / max(best_obj, 1e-9), len(events) / max(best_raw, 1e-9)


def flood_rate() -> dict[str, float]:
    """bench_bans (e): the policy under a flood of 1M distinct offenders (default cap)."""
    sys.path.insert(0, str(HERE))
    import bench_bans

    return bench_bans.policy_rss(1_000_000, 100_000)  # type: ignore[no-any-return]


def journal_rows(entries: int) -> list[str]:
    """bench_journal's ingest and latency rows (needs root), as it prints them."""
    proc = subprocess.run([sys.executable, str(HERE / "bench_journal.py"), "--entries",
                           str(entries), "--samples", "50", "--cold", "0", "--only",
                           "latency,ingest"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return [f"bench_journal.py failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"]
    lines = proc.stdout.splitlines()
    return [line for line in lines if line.startswith(("benchmark", "(a)", "(b)", "---"))]


def side_by_side(tables: list[tuple[str, Path, list[Row]]], policy: list[tuple[int, float, float]],
                 flood: dict[str, float] | None, journal: list[str]) -> None:
    """Both logs' figures in one table: CPU seconds against the peer's, the ratio by CPU
    (by wall in brackets) and the target."""
    names = [name for name, _, _ in tables]
    print(f"\n== side by side (median CPU s, ours vs the peer's; ratio = our lines per CPU "
          f"second over the peer's, by wall in brackets); load {os.getloadavg()[0]:.1f}")
    width = 34
    print(f"{'work':<36}" + "".join(f"| {n:<{width}}" for n in names) + "| target")
    works: list[tuple[str, str, str, float]] = [
        ("scan (JSON lines) vs sshg-parser", "sshguardd scan", "sshg-parser", 1.0),
        ("scan --summary vs sshg-parser", "sshguardd scan --summary", "sshg-parser", 1.0),
        ("scan --summary vs fail2ban-regex", "sshguardd scan --summary", "fail2ban-regex", 20.0)]
    works += [(f"{t.split(' ', 1)[1]} vs sshg-parser", t, "sshg-parser", 1.0)
              for t in (r.tool for r in tables[0][2]) if "--jobs" in t]
    for label, ours_name, peer_name, target in works:
        cells = []
        for _, _, rows in tables:
            by = {r.tool.split(" (")[0].rstrip("*"): r for r in rows}
            ours, peer = by[ours_name], by[peer_name]
            cpu = (ours.lines / max(ours.cpu, 1e-3)) / (peer.lines / max(peer.cpu, 1e-3))
            wall = (ours.lines / max(ours.wall, 1e-3)) / (peer.lines / max(peer.wall, 1e-3))
            cells.append(f"{ours.cpu:6.2f} vs {peer.cpu:5.2f} s {cpu:5.2f}x ({wall:.2f}x)")
        print(f"{label:<36}" + "".join(f"| {c:<{width}}" for c in cells) + f"| >= {target:g}x")
    cells = []
    for _, _, rows in tables:
        by = {r.tool.split(" (")[0].rstrip("*"): r for r in rows}
        cells.append(f"{by['sshguardd scan'].rss_mib:.1f} / {by['sshguardd scan --summary'].rss_mib:.1f}"
                     f" MB (C {by['sshg-parser'].rss_mib:.1f} MB)")
    print(f"{'peak RSS scan / --summary':<36}" + "".join(f"| {c:<{width}}" for c in cells)
          + "| within today's")
    cells = [f"{n:,} ev: {obj / 1e3:,.0f}k/s ({raw / 1e3:,.0f}k/s raw)" for n, obj, raw in policy]
    print(f"{'ban policy on the log own events':<36}" + "".join(f"| {c:<{width}}" for c in cells)
          + "| >= 1M/s")
    if flood is not None:
        print(f"{'ban policy, 1M distinct offenders':<36}| {flood['cpu_rate'] / 1e3:,.0f}k events/"
              f"cpu-s, {flood['rate'] / 1e3:,.0f}k/s wall (bench_bans (e), peak "
              f"{flood['peak']:.0f} MB) | >= 1M/s")
    for line in journal:
        print(f"  {line}")


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
    ap.add_argument("--journal", type=int, default=0, metavar="N",
                    help="also run bench_journal (root) on N entries: ingest and latency")
    ap.add_argument("--no-flood", action="store_true",
                    help="skip bench_bans (e), the policy under 1M distinct offenders")
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
    policy = [policy_rate(log, args.repeat) for _, log, _ in tables]
    flood = None if args.no_flood else flood_rate()
    side_by_side(tables, policy, flood, journal_rows(args.journal) if args.journal else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
