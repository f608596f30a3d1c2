#!/usr/bin/env python3
"""Journal-side benchmarks of sshguardd against its peers, printed side by side.

(a) detection-to-ban latency: a failed-login line is written to a private journald (by a
    root process named sshd, as sshd's own lines arrive) and the clock stops when the
    address appears in the kernel's set, as reported by `nft monitor`. p50/p99 for
    `sshguardd run` and for fail2ban-server (systemd backend, nftables-multiport action),
    each in its own sandbox (private mount/net/pid namespaces, private journald). "Hot"
    samples follow each other as lines do during an attack; "cold" ones come after 12 s
    of silence, when every journal reader sleeps on inotify and journald's coalesced
    change notification (250-500 ms) dominates.
(b) ingest rate: matched sshd entries per second read from a journal of N entries (made
    with systemd-journal-remote; 30% sshd, 10% forged `logger -t sshd`, 60% other) by
    JournalFollower, vs `journalctl -o cat` with the same trusted match on the same files.
(f) idle cost: CPU time and RSS of the daemon doing nothing for S seconds, vs
    fail2ban-server idle with its systemd-backend sshd jail.

Run as root (namespaces, nft): `sudo .venv/bin/python bench/bench_journal.py`.
Defaults are the full sizes (--entries 1000000 --samples 200 --cold 5 --idle 60); use small
ones while developing (e.g. --entries 50000 --samples 20 --cold 0 --idle 5).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sshguardd.demo.sandbox import Sandbox, wait_for  # noqa: E402
from sshguardd.effects.journal import JournalFollower, follow_matches  # noqa: E402

UNITS = ("ssh.service", "sshd.service")
COMMANDS = ("sshd", "sshd-session")
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


# -- helpers ---------------------------------------------------------------------------------

def fail2ban_version() -> str:
    out = subprocess.run(["fail2ban-server", "-V"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


class Sender:
    """A root process named `sshd` inside the sandbox, writing syslog lines from stdin (a
    copy of logger: journald then records _COMM=sshd, _UID=0, like sshd's own lines)."""

    def __init__(self, sb: Sandbox, tools: Path):
        exe = tools / "sshd"
        if not exe.exists():
            shutil.copy("/usr/bin/logger", exe)
            os.chmod(exe, 0o755)
        self.proc = sb.popen([str(exe), "-u", "/dev/log", "-p", "auth.info", "-t", "sshd"],
                             stdin=subprocess.PIPE, text=True)

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


class Monitor:
    """`nft monitor` inside the sandbox; records when each address first shows up in an
    `add element` event (monotonic time of arrival here)."""

    ADDR = re.compile(r"\{ ([0-9a-f.:]+)")

    def __init__(self, sb: Sandbox):
        self.proc = sb.popen(["nft", "monitor", "elements"], stdout=subprocess.PIPE, text=True,
                             bufsize=1)
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            if not line.startswith("add element"):
                continue
            for addr in self.ADDR.findall(line) + re.findall(r", ([0-9a-f.:]+)", line):
                with self.cond:
                    self.seen.setdefault(addr, now)
                    self.cond.notify_all()

    def wait(self, addr: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while addr not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.seen[addr]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(10)


def child_of(popen: subprocess.Popen, name_hint: str = "") -> int:
    """The process nsenter started (its only child), as a host pid."""
    def find() -> int | None:
        for task in Path(f"/proc/{popen.pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            if kids:
                return int(kids[0])
        return None
    return wait_for(find, 10, what=f"{name_hint} process")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# -- the daemons under test ------------------------------------------------------------------

OUR_CONFIG = """
[ban]
max_retry = {max_retry}
allow = []
ban_time = "1h"

[drift]
mode = "audit"

[metrics]
enabled = {metrics}
"""


def start_ours(sb: Sandbox, log: Path, max_retry: int = 1, metrics: bool = True) -> tuple[subprocess.Popen, int]:
    cfg = sb.path("/etc/sshguardd/config.toml")
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(OUR_CONFIG.format(max_retry=max_retry, metrics=str(metrics).lower()))
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"PYTHONPATH={REPO}"]
    with open(log, "ab") as fh:
        proc = sb.popen([*env, sys.executable, "-m", "sshguardd", "run", "--config",
                         "/etc/sshguardd/config.toml"], stdout=subprocess.DEVNULL, stderr=fh)
    pid = child_of(proc, "sshguardd")
    sock = sb.path("/run/sshguardd/control.sock")
    wait_for(lambda: sock.exists() or proc.poll() is not None, 60, what="sshguardd ready")
    if proc.poll() is not None:
        raise RuntimeError(f"sshguardd exited: {log.read_text()[-2000:]}")
    return proc, pid


JAIL = """
[DEFAULT]
banaction = nftables-multiport
banaction_allports = nftables-allports
ignoreself = false
ignoreip =
bantime = 3600
findtime = 600
maxretry = {max_retry}

[sshd]
enabled = true
backend = systemd
port = 22
"""


def start_fail2ban(sb: Sandbox, work: Path, log: Path, max_retry: int = 1) -> tuple[subprocess.Popen, int]:
    conf = work / "fail2ban"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree("/etc/fail2ban", conf)
    for d in ("jail.d",):
        for f in (conf / d).glob("*"):
            f.unlink()  # Debian's defaults-debian.conf: we state everything ourselves
    (conf / "jail.local").write_text(JAIL.format(max_retry=max_retry))
    (conf / "fail2ban.local").write_text(
        f"[Definition]\ndbfile = {work}/fail2ban.sqlite3\nlogtarget = STDERR\n")
    run = work / "f2b-run"
    run.mkdir(exist_ok=True)
    with open(log, "ab") as fh:
        proc = sb.popen(["fail2ban-server", "-f", "-x", "-c", str(conf), "-s",
                         str(run / "fail2ban.sock"), "-p", str(run / "fail2ban.pid")],
                        stdout=fh, stderr=fh)
    pid = child_of(proc, "fail2ban-server")

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"fail2ban-server exited: {log.read_text()[-2000:]}")
        r = sb.run(["fail2ban-client", "-s", str(run / "fail2ban.sock"), "status", "sshd"])
        return r.returncode == 0
    wait_for(up, 60, interval=0.2, what="fail2ban ready")
    return proc, pid


def stop(proc: subprocess.Popen, pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(pid, 9)
        proc.wait(10)


# -- (a) latency -----------------------------------------------------------------------------

def latency(which: str, work: Path, samples: int, cold: int = 0,
            quiet: float = 12.0) -> tuple[list[float], list[float]]:
    """Hot samples are written back to back (as during an attack, each ban ending the
    previous sample); cold ones after `quiet` seconds without any sshd line, when a journal
    reader sleeps on inotify, which journald delays by 250-500 ms."""
    tools = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    os.chmod(tools, 0o755)
    box_dir = work / f"box-{which}"
    box_dir.mkdir(exist_ok=True)
    out: list[float] = []
    out_cold: list[float] = []
    with Sandbox(box_dir) as sb:
        sender = Sender(sb, tools)
        monitor = Monitor(sb)
        log = work / f"{which}.log"
        if which == "sshguardd":
            proc, pid = start_ours(sb, log, metrics=False)
        else:
            proc, pid = start_fail2ban(sb, work, log)
        try:
            # warm-up: the first ban creates tables and imports lazily
            sender.say("Failed password for invalid user warm from 10.255.0.1 port 1 ssh2")
            if monitor.wait("10.255.0.1", 60) is None:
                raise RuntimeError(f"{which}: warm-up ban never arrived; log: {log}")
            for i in range(samples + cold):
                if i >= samples:
                    threading.Event().wait(quiet)
                addr = f"10.{1 + i // 65536}.{i // 256 % 256}.{i % 256}"
                t0 = time.monotonic()
                sender.say(f"Failed password for invalid user u{i} from {addr} port "
                           f"{1024 + i} ssh2")
                t1 = monitor.wait(addr, 30)
                if t1 is None:
                    raise RuntimeError(f"{which}: {addr} never banned; log: {log}")
                (out if i < samples else out_cold).append((t1 - t0) * 1000)
        finally:
            stop(proc, pid)
            monitor.close()
            sender.close()
    shutil.rmtree(tools)
    return out, out_cold


# -- (b) ingest ------------------------------------------------------------------------------

def build_journal(directory: Path, entries: int) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    export = directory.parent / "bench.export"
    t = 1_700_000_000_000_000
    matched = 0
    boot = "0123456789abcdef0123456789abcdef"
    with open(export, "w") as f:
        for i in range(entries):
            r = i % 10
            if r < 3:
                matched += 1
                msg = (f"Failed password for invalid user u{i} from 10.{i >> 16 & 255}."
                       f"{i >> 8 & 255}.{i & 255} port {1024 + i % 60000} ssh2")
                comm, ident = "sshd", "sshd"
            elif r == 3:
                msg, comm, ident = f"Invalid user x{i} from 10.0.0.1 port 22", "logger", "sshd"
            else:
                msg = f"pam_unix(cron:session): session opened for user root(uid=0) by (uid=0) {i}"
                comm, ident = "cron", "CRON"
            f.write(f"__REALTIME_TIMESTAMP={t + i * 1000}\n__MONOTONIC_TIMESTAMP={i + 1}\n"
                    f"_BOOT_ID={boot}\n_MACHINE_ID={boot}\n_HOSTNAME=bench\nPRIORITY=6\n"
                    f"SYSLOG_FACILITY=4\n_TRANSPORT=syslog\nSYSLOG_IDENTIFIER={ident}\n"
                    f"_COMM={comm}\n_UID=0\n_GID=0\n_PID={1000 + i % 5000}\nMESSAGE={msg}\n\n")
    subprocess.run([JOURNAL_REMOTE, f"--output={directory}/bench.journal", str(export)],
                   check=True, capture_output=True)
    export.unlink()
    return matched


def ingest_ours(directory: Path) -> tuple[int, float]:
    f = JournalFollower(UNITS, COMMANDS, directory=directory, batch_size=5000)
    f.open()
    f._reader.seek_head()  # read the whole journal, not from the tail
    n = 0
    t0 = time.perf_counter()
    while (b := f.read()) is not None:
        n += len(b.records)
    el = time.perf_counter() - t0
    f.close()
    return n, el


def ingest_journalctl(directory: Path, output: str = "cat") -> tuple[int, float]:
    argv = ["journalctl", "--no-pager", f"--directory={directory}", "-o", output,
            *follow_matches(UNITS, COMMANDS)]
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.PIPE, check=True)
    el = time.perf_counter() - t0
    return p.stdout.count(b"\n"), el


# -- (f) idle --------------------------------------------------------------------------------

def idle(which: str, work: Path, seconds: float) -> tuple[float, float]:
    box_dir = work / f"idle-{which}"
    box_dir.mkdir(exist_ok=True)
    with Sandbox(box_dir) as sb:
        log = work / f"idle-{which}.log"
        if which == "sshguardd":
            proc, pid = start_ours(sb, log, max_retry=5)
        else:
            proc, pid = start_fail2ban(sb, work, log, max_retry=5)
        try:
            settle = threading.Event()
            settle.wait(2.0)  # let start-up work finish before the idle window opens
            c0 = cpu_seconds(pid)
            t0 = time.monotonic()
            threading.Event().wait(seconds)
            cpu = cpu_seconds(pid) - c0
            el = time.monotonic() - t0
            rss = rss_mb(pid)
        finally:
            stop(proc, pid)
    return cpu / el * 100, rss


# -- main ------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--cold", type=int, default=5,
                    help="latency samples after 12 s without sshd lines (each costs 12 s)")
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--only", default="latency,ingest,idle")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (namespaces, nft)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.workdir))
    f2b = f"fail2ban {fail2ban_version()}"
    rows: list[tuple[str, str, str, str]] = []
    try:
        if "latency" in only:
            ours, ours_cold = latency("sshguardd", work, args.samples, args.cold)
            theirs, theirs_cold = latency("fail2ban", work, args.samples, args.cold)
            peer = f"{f2b} (systemd backend, nftables-multiport)"
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                rows.append((f"(a) journal entry -> kernel set, {name}",
                             f"{pct(ours, q):.1f} ms", f"{pct(theirs, q):.1f} ms", peer))
            rows.append(("(a)   samples / mean", f"{len(ours)} / {statistics.mean(ours):.1f} ms",
                         f"{len(theirs)} / {statistics.mean(theirs):.1f} ms", peer))
            if ours_cold:
                rows.append((f"(a) cold (after {12:g} s quiet), median of {len(ours_cold)}",
                             f"{statistics.median(ours_cold):.1f} ms",
                             f"{statistics.median(theirs_cold):.1f} ms", peer))
        if "ingest" in only:
            d = work / "journal"
            t0 = time.perf_counter()
            matched = build_journal(d, args.entries)
            built = time.perf_counter() - t0
            best_ours = best_jctl = best_unix = float("inf")
            n_ours = n_jctl = n_unix = 0
            for _ in range(3):  # best of three: the machine is shared
                n_ours, el = ingest_ours(d)
                best_ours = min(best_ours, el)
                n_jctl, el = ingest_journalctl(d)
                best_jctl = min(best_jctl, el)
                n_unix, el = ingest_journalctl(d, "short-unix")
                best_unix = min(best_unix, el)
            if n_ours != matched or n_jctl != matched:
                raise RuntimeError(f"matched {matched}, read: ours {n_ours}, journalctl {n_jctl}")
            rows.append((f"(b) ingest, {args.entries:,} entries ({matched:,} sshd)",
                         f"{n_ours / best_ours:,.0f} /s", f"{n_jctl / best_jctl:,.0f} /s",
                         "journalctl -o cat, same match"))
            rows.append(("(b)   wall time, best of 3", f"{best_ours:.3f} s", f"{best_jctl:.3f} s",
                         f"(journal built in {built:.1f} s)"))
            # What the follower extracts per entry is message + time + pid, i.e. what
            # `-o short-unix` prints; `-o cat` prints the message alone.
            rows.append(("(b) ingest, same, vs time+pid+message", f"{n_ours / best_ours:,.0f} /s",
                         f"{n_unix / best_unix:,.0f} /s", "journalctl -o short-unix, same match"))
        if "idle" in only:
            ours_cpu, ours_rss = idle("sshguardd", work, args.idle)
            f2b_cpu, f2b_rss = idle("fail2ban", work, args.idle)
            peer = f"{f2b}, sshd jail, systemd backend"
            rows.append((f"(f) idle CPU over {args.idle:g} s", f"{ours_cpu:.3f} %",
                         f"{f2b_cpu:.3f} %", peer))
            rows.append(("(f) idle RSS", f"{ours_rss:.1f} MB", f"{f2b_rss:.1f} MB", peer))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsshguardd journal benchmarks  ({platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')})")
    header = ("benchmark", "sshguardd", "peer", "peer is")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
