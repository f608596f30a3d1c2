#!/usr/bin/env python3
"""Fleet-mode benchmark: N hosts (network namespaces), each running the real
`sshguardd run` with its own nft table, sharing bans through one real redis-server.

(a) propagation latency: a ban decided on host 0 (`ban` over its control socket, the
    same engine path as a log-driven ban) until the element is in *every* other host's
    kernel set, seen by `nft monitor` in each namespace (no polling). p50/p99 over
    --bans bans, one at a time.
(b) remote bans applied per second per host: a publisher (its own ACL user, like any
    host) puts --burst bans into its stream while every host is stopped (SIGSTOP), then
    all resume at once; each host's rate is the burst size over the time from resuming to
    its last element in the kernel, and over the CPU its daemon spent on it (nft
    included), with that CPU split by thread for the last host.

Printed beside CrowdSec's documented default: bouncers pull LAPI's
/v1/decisions/stream every 10 s (`update_frequency: 10s`), so a decision reaches a
bouncer 0-10 s after LAPI has it (5 s on average), before any agent-to-LAPI delay.

Runs as root; re-executes itself under `unshare --mount --net`, so the host's network
is untouched. `bench/bench_fleet.py --hosts 10 --bans 200 --burst 20000`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

MARK = "SSHGUARDD_BENCH_FLEET_NETNS"
BRIDGE = "198.18.0.1"
PORT = 6390
ELEMENT = re.compile(r"(\d+\.\d+\.\d+\.\d+)")

CONFIG = """
[daemon]
state_dir = "{dir}/state"
runtime_dir = "{dir}/run"
[source]
backend = "file"
files = ["{dir}/auth.log"]
[firewall]
ports = [22]
table = "sshguardd"
[drift]
enabled = false
[metrics]
enabled = false
[updates]
enabled = false
[control]
socket = "{dir}/control.sock"
[fleet]
enabled = true
url = "redis://{bridge}:{port}/0"
host = "{host}"
password_file = "{dir}/fleet.password"
max_bans_per_publisher = 10000000
ipv4_min_prefix = 8
discovery_interval = 0.2
snapshot_interval = 5
status_interval = 5
"""


def ensure_private_ns() -> None:
    if os.environ.get(MARK) == "1":
        return
    if os.geteuid() != 0:
        sys.exit("bench_fleet.py needs root (network namespaces, nft)")
    os.environ[MARK] = "1"
    argv = ["unshare", "--mount", "--net", "--fork", "--", sys.executable,
            str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvp("unshare", argv)  # noqa: S606  (an argv list, no shell)


def sh(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if r.returncode:
        raise RuntimeError(f"{argv} exited {r.returncode}: {r.stderr.strip()}")


class Monitor:
    """`nft monitor` in one namespace: the first time each address appears, by the clock."""

    def __init__(self, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor",
                                      "elements"], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith("add element"):
                continue
            t = time.monotonic()
            with self.lock:
                for addr in ELEMENT.findall(line):
                    self.seen.setdefault(addr, t)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for a in self.seen if a.startswith(prefix))

    def last(self, prefix: str) -> float:
        with self.lock:
            return max(t for a, t in self.seen.items() if a.startswith(prefix))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def wait(pred: Any, timeout: float, what: str, step: float = 0.002) -> None:
    end = time.monotonic() + timeout
    ev = threading.Event()
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        ev.wait(step)


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its reaped children (nft) from /proc/PID/stat. pid is the
    daemon itself: `ip netns exec` and `env` exec it in place."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread name (/proc/PID/task/TID/stat), to show where a host's CPU
    goes; children (nft) under the name "nft"."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out["nft"] = (int(fields[13]) + int(fields[14])) / tick
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--bans", type=int, default=200, help="bans for the latency figure")
    ap.add_argument("--burst", type=int, default=20000, help="bans for the throughput figure")
    ap.add_argument("--profile", metavar="DIR", help="run each daemon under cProfile, "
                    "writing DIR/HOST.prof (its CPU figures then include the profiler)")
    args = ap.parse_args()
    ensure_private_ns()

    from fleet_helpers import RedisServer, password  # tests/fleet_helpers.py
    from sshguardd.contracts import FleetEntry
    from sshguardd.effects import control_socket as control
    from sshguardd.effects.fleet_transport import entry_fields

    sh("mount", "--make-rprivate", "/")
    sh("mkdir", "-p", "/run/netns")
    sh("mount", "-t", "tmpfs", "tmpfs", "/run/netns")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "addr", "add", f"{BRIDGE}/16", "dev", "br0")
    sh("ip", "link", "set", "br0", "up")
    names = [f"h{i}" for i in range(args.hosts)]
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    server = RedisServer(work, [*names, "pub"], bind=f"{BRIDGE}:{PORT}").start()
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    monitors: dict[str, Monitor] = {}
    print(f"bench_fleet: {args.hosts} hosts in private network namespaces, "
          f"redis-server {subprocess.run(['redis-server', '--version'], capture_output=True, text=True, check=False).stdout.split()[2]}")
    try:
        for i, h in enumerate(names):
            d = work / h
            d.mkdir()
            (d / "auth.log").write_text("")
            pw = d / "fleet.password"
            pw.write_text(password(h) + "\n")
            pw.chmod(0o600)
            (d / "config.toml").write_text(CONFIG.format(dir=d, bridge=BRIDGE, port=PORT,
                                                         host=h))
            sh("ip", "netns", "add", h)
            sh("ip", "link", "add", f"v{i}", "type", "veth", "peer", "name", f"e{i}")
            sh("ip", "link", "set", f"e{i}", "netns", h)
            sh("ip", "link", "set", f"v{i}", "master", "br0", "up")
            sh("ip", "-n", h, "addr", "add", f"198.18.1.{i + 1}/16", "dev", f"e{i}")
            sh("ip", "-n", h, "link", "set", f"e{i}", "up")
            sh("ip", "-n", h, "link", "set", "lo", "up")
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}
            logs.append((d / "daemon.log").open("wb"))
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", h, "env", "-i",
                 *(f"{k}={v}" for k, v in env.items()), sys.executable,
                 *(["-m", "cProfile", "-o", f"{args.profile}/{h}.prof"] if args.profile
                   else []), "-m", "sshguardd", "run", "--config", str(d / "config.toml")],
                stdout=subprocess.DEVNULL, stderr=logs[-1]))
        for h in names:
            sock = work / h / "control.sock"

            def up(sock: Path = sock) -> bool:
                try:
                    st = control.request(sock, {"cmd": "status"})
                except control.ControlUnavailable:
                    return False
                fleet = st.get("fleet") or {}
                return bool(fleet.get("connected"))
            wait(up, 60, f"{h} up and connected")
            monitors[h] = Monitor(h)
        others = names[1:]
        # every host has discovered every other's stream once a first ban went round
        src = work / names[0] / "control.sock"
        control.request(src, {"cmd": "ban", "address": "198.18.250.1", "duration": 3600})
        wait(lambda: all(monitors[h].count("198.18.250.") for h in others), 30, "warm-up")

        latencies = []
        for k in range(args.bans):
            addr = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.128.0")) + k))
            t0 = time.monotonic()
            control.request(src, {"cmd": "ban", "address": addr, "duration": 3600})
            wait(lambda addr=addr: all(addr in monitors[h].seen for h in others), 30, addr)
            latencies.append(max(monitors[h].seen[addr] for h in others) - t0)
        ms = [x * 1000 for x in latencies]

        pub = server.client("pub")
        far = time.time() + 3600
        burst = [FleetEntry("ban", str(ipaddress.IPv4Address(0x0A000000 + j)) + "/32", far,
                            "bad_password", 5, "pub", j + 1) for j in range(args.burst)]
        def applied(h: str) -> int:
            try:  # a host busy with a 20k-ban transaction may not answer within 10 s
                st = control.request(work / h / "control.sock", {"cmd": "status"})
            except control.ControlUnavailable:
                return -1
            return int((st.get("fleet") or {}).get("applied_total", 0))
        base = {h: applied(h) for h in names}
        # The hosts are stopped (SIGSTOP) while the burst is written and resumed together
        # once it is in the stream: one redis-py publisher writes slower than a host
        # applies, and the figure is the host's rate, not the publisher's.
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        try:
            pipe = pub.pipeline(transaction=False)
            t0 = time.monotonic()
            for e in burst:
                pipe.xadd("{fleet}:ev:pub", entry_fields(e))
            pipe.execute()
            written = time.monotonic() - t0
            cpu0 = [cpu_seconds(p.pid) for p in procs]
            threads0 = thread_cpu(procs[-1].pid)
            t0 = time.monotonic()
        finally:
            for p in procs:
                p.send_signal(signal.SIGCONT)
        # In the kernel: the daemon counts a ban applied once its nft transaction returned
        # (nft monitor falls behind on bursts this size, so it times only (a)).
        done: dict[str, float] = {}

        def all_in() -> bool:
            for h in names:
                if h not in done and applied(h) - base[h] >= args.burst:
                    done[h] = time.monotonic()
            return len(done) == len(names)
        # Polled every 200 ms: each poll is a status request the host's loop answers (and
        # its CPU is counted), so polling faster would slow down what it measures.
        wait(all_in, 300, "the burst applied everywhere", step=0.2)
        rates = [args.burst / (done[h] - t0) for h in names]
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        threads = thread_cpu(procs[-1].pid)
        by_thread = ", ".join(f"{name} {threads[name] - threads0.get(name, 0.0):.2f} s"
                              for name in sorted(threads, key=lambda n: -threads[n])
                              if threads[name] - threads0.get(name, 0.0) >= 0.01)
        per_cpu = [args.burst / c for c in cpu if c > 0]
        pub.close()

        print(f"\n(a) propagation, ban decided on h0 -> element in all {len(others)} other "
              f"kernels ({args.bans} bans, one at a time)")
        print(f"    sshguardd fleet:  p50 {statistics.median(ms):7.1f} ms   "
              f"p99 {pct(ms, 99):7.1f} ms   max {max(ms):7.1f} ms")
        print("    CrowdSec (documented default): bouncer pull every 10 s -> 0-10 s after "
              "LAPI, mean 5 s, p99 ~9.9 s")
        print(f"\n(b) remote bans applied per host ({args.burst} bans published in "
              f"{written:.2f} s by one publisher while the hosts were stopped; timed "
              "from their resumption)")
        print(f"    sshguardd fleet:  min {min(rates):9,.0f}/s   median "
              f"{statistics.median(rates):9,.0f}/s   max {max(rates):9,.0f}/s "
              f"(over {len(names)} hosts, all running at once on this machine's "
              f"{os.cpu_count()} CPUs)")
        print(f"    per CPU second of each host's daemon (its nft included): median "
              f"{statistics.median(per_cpu):9,.0f}/s   min {min(per_cpu):9,.0f}/s "
              "(what one host does with a core of its own)")
        print(f"    where {names[-1]}'s CPU went: {by_thread}")
        print("    CrowdSec (documented default): a bouncer applies what one 10 s pull "
              "returns; its rate is bounded by the pull interval, not measured here")
        return 0
    finally:
        for m in monitors.values():
            m.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        server.close()
        for f in logs:
            f.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
