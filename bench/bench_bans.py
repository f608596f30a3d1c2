#!/usr/bin/env python3
"""Ban-side benchmarks of sshguardd against its peers, printed side by side.

(c) bans applied per second for N distinct addresses: sshguardd's NftFirewall.add (one
    `nft -j -f -` transaction per batch, kernel timeouts) vs one nft process per ban, the
    way fail2ban's nftables action and sshguard's sshg-fw-nft-sets do it (`/bin/sh -c "nft
    add element ..."` per address). The per-process rate is measured on a sample (--sample
    bans) and extrapolated to N, and the output says so.
(d) restart with N active bans: a fresh process opens the state store, reads the active
    bans, sets up the table and restores every ban with its remaining time. Measured both
    with the table still in the kernel (sshguardd restarted) and without it (nftables
    restarted or reboot). The peer figure is N times the measured per-process ban cost,
    which is how fail2ban re-bans from its database at start.
(e) peak RSS of a process holding a BanPolicy that has seen M distinct offenders (90%
    IPv4, 10% IPv6 in distinct /64s), with max_tracked raised to M and with the default cap.
(f) the daemon's cost per banning batch with N bans already active: the ban engine
    (daemon.ban_engine) takes a batch of 25 failed-password lines from 5 new addresses
    through the policy, the store and a real nft commit. "now" keeps active-ban counts as
    counters; "before" adds what the loop did after every banning batch until the daemon
    split (re-read every active ban from the store and recount them by family for the
    bans_active gauge), re-enacted on the same engine.

Everything with nft runs in a private network namespace: the script re-executes itself
under `unshare --net` (run as root). Full sizes by default; use small ones while developing:
`bench/bench_bans.py --sizes 1000 --sample 100 --restart 2000 --offenders 20000`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sshguardd.contracts import Ban  # noqa: E402
from sshguardd.effects.metrics import counts_by_family  # noqa: E402
from sshguardd.effects.nft_runner import NftFirewall  # noqa: E402
from sshguardd.effects.store import Store  # noqa: E402

NFT = "/usr/sbin/nft"
MARK = "SSHGUARDD_BENCH_NETNS"


def ensure_private_netns() -> None:
    """Re-exec inside a fresh network namespace so no nft call can reach the host."""
    if os.environ.get(MARK) == "1":
        return
    if os.geteuid() != 0:
        sys.exit("bench_bans.py needs root (network namespaces, nft)")
    os.environ[MARK] = "1"
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable,  # noqa: S606 - argv list
                          str(Path(__file__).resolve()), *sys.argv[1:]])


def addresses(n: int, base: int = 0x0B000000) -> list[str]:
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


def nft(*args: str, stdin: str | None = None) -> None:
    subprocess.run([NFT, *args], input=stdin, text=True, check=True, capture_output=True)


def fresh_firewall(ports: tuple[int, ...] = (22,)) -> NftFirewall:
    fw = NftFirewall(ports=ports, nft=NFT)
    fw.delete_table()
    fw.setup()
    return fw


# -- (c) ---------------------------------------------------------------------------------------

def sshguardd_ban_rate(n: int) -> tuple[float, float]:
    """Seconds to apply n bans with NftFirewall.add, and with the store commit first (what
    the daemon does per batch)."""
    fw = fresh_firewall()
    now = time.time()
    bans = [Ban(f"{a}/32", 600, now + 600, 1, "bench") for a in addresses(n)]
    t = time.perf_counter()
    fw.add(bans, now)
    nft_only = time.perf_counter() - t
    assert fw.contains(bans[-1].network) and fw.contains(bans[0].network)
    fw = fresh_firewall()
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "state.db")
        t = time.perf_counter()
        store.add_bans(bans)
        fw.add(bans, now)
        with_store = time.perf_counter() - t
        store.close()
    fw.delete_table()
    return nft_only, with_store


def per_process_ban_cost(sample: int) -> float:
    """Seconds per ban with one shell + nft process per address (fail2ban's nftables
    action: `<nftables> add element <table_family> <table> <addr_set> { <ip> }`)."""
    nft("-f", "-", stdin="table inet f2b-table { set addr-set-sshd { type ipv4_addr; }; }")
    t = time.perf_counter()
    for a in addresses(sample, base=0x0C000000):
        subprocess.run(["/bin/sh", "-c", f"{NFT} add element inet f2b-table addr-set-sshd {{ {a} }}"],
                       check=True)
    cost = (time.perf_counter() - t) / sample
    nft("delete", "table", "inet", "f2b-table")
    return cost


# -- (d) ---------------------------------------------------------------------------------------

RESTART = """
import sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from sshguardd.effects.store import Store
from sshguardd.effects.nft_runner import NftFirewall
t1 = time.perf_counter()
now = time.time()
store = Store(sys.argv[2])
bans = store.active_bans(now)
t2 = time.perf_counter()
fw = NftFirewall(nft=sys.argv[3])
fw.setup()
t3 = time.perf_counter()
fw.restore(bans, now)
t4 = time.perf_counter()
print(json.dumps({"bans": len(bans), "import": t1 - t0, "store": t2 - t1, "setup": t3 - t2,
                  "restore": t4 - t3, "total": t4 - t0}))
"""


def restart(n: int, table_present: bool, db: Path) -> dict:
    fw = fresh_firewall()
    if table_present:
        now = time.time()
        with Store(db) as store:
            fw.add(store.active_bans(now), now)
    else:
        fw.delete_table()
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RESTART, str(REPO), str(db), NFT],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    result = json.loads(out.stdout)
    result["wall"] = wall
    assert result["bans"] == n, result
    probe = NftFirewall(nft=NFT)
    assert probe.contains(f"{addresses(1)[0]}/32")
    return result


def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]


# -- (e) ---------------------------------------------------------------------------------------

RSS = """
import sys, time, json, ipaddress
sys.path.insert(0, sys.argv[1])
from sshguardd.config import BanConfig
from sshguardd.contracts import Event, Kind, LogRecord
from sshguardd.bans.policy import BanPolicy
m, cap = int(sys.argv[2]), int(sys.argv[3])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
base = status("VmRSS:")
policy = BanPolicy(BanConfig(max_tracked=cap))
v6 = m // 10
t0 = 1_700_000_000.0
start = time.perf_counter()
cpu = time.process_time()
for i in range(m - v6):
    a = 0x0B000000 + i
    host = f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"
    policy.observe(LogRecord("Failed password", t0 + i * 1e-4, 1000 + i % 30000), Event(Kind.BAD_PASSWORD, host))
for i in range(v6):
    host = f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::7"
    policy.observe(LogRecord("Failed password", t0 + i * 1e-4, 1000 + i % 30000), Event(Kind.BAD_PASSWORD, host))
elapsed = time.perf_counter() - start
cpu = time.process_time() - cpu
print(json.dumps({"base": base, "peak": status("VmHWM:"), "tracked": policy.tracked,
                  "evictions": policy.evictions, "rate": m / elapsed, "cpu_rate": m / cpu}))
"""


def policy_rss(m: int, cap: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS, str(REPO), str(m), str(cap)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


BANS_RSS = """
import sys, json
sys.path.insert(0, sys.argv[1])
from sshguardd.config import BanConfig
from sshguardd.bans.policy import BanPolicy
m, cap = int(sys.argv[2]), int(sys.argv[3])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
base = status("VmRSS:")
policy = BanPolicy(BanConfig(max_tracked=cap))
t0 = 1_700_000_000.0
for i in range(m):
    a = 0x0B000000 + i
    policy.manual_ban(f"{a >> 24}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}", 3600, t0 + i * 1e-4)
print(json.dumps({"base": base, "peak": status("VmHWM:"), "banned": policy.banned_tracked,
                  "forgotten": policy.ban_evictions}))
"""


def bans_rss(m: int, cap: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", BANS_RSS, str(REPO), str(m), str(cap)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# -- (f) ---------------------------------------------------------------------------------------

def batch_cost(n: int, batches: int = 5) -> tuple[float, float]:
    """Median seconds per banning batch at n active bans: (counters, re-read as before)."""
    from prometheus_client import CollectorRegistry

    from sshguardd import config
    from sshguardd.contracts import LogBatch, LogRecord
    from sshguardd.daemon.ban_engine import BanEngine
    from sshguardd.effects.alerts import Alerts
    from sshguardd.effects.metrics import Metrics

    results = []
    for reread in (False, True):
        fw = fresh_firewall()
        with tempfile.TemporaryDirectory() as d:
            store = Store(Path(d) / "state.db")
            now = time.time()
            store.add_bans([Ban(f"{a}/32", 3600, now + 3600, 1, "bench")
                            for a in addresses(n)])
            metrics = Metrics(CollectorRegistry())
            engine = BanEngine(config.Config(), store, fw, metrics,
                               Alerts(send=lambda *a, **k: None, echo=False))
            engine.restore(now)
            engine.rebuild([], now)
            times = []
            for k in range(batches):
                recs = tuple(
                    LogRecord(f"Failed password for root from 12.{reread:d}.{k}.{j} port "
                              f"{4000 + i} ssh2", now + j, 100 + 10 * k + j, "h", f"c{k}{j}{i}")
                    for j in range(5) for i in range(5))
                t = time.perf_counter()
                result = engine.on_batch(LogBatch(recs, f"pos{k}"), time.time())
                if reread:
                    active = store.active_bans(time.time())
                    for fam, c in counts_by_family(b.network for b in active).items():
                        metrics.bans_active.labels(family=fam).set(c)
                times.append(time.perf_counter() - t)
                assert len(result.bans) == 5, result
            assert engine.active_total == n + 5 * batches
            store.close()
        fw.delete_table()
        results.append(statistics.median(times))
    return results[0], results[1]


# -- main --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="ban counts for (c)")
    ap.add_argument("--sample", type=int, default=2000, help="bans timed one process each")
    ap.add_argument("--restart", type=int, default=100000, help="active bans for (d)")
    ap.add_argument("--offenders", type=int, default=1000000, help="offenders for (e)")
    ap.add_argument("--batch-sizes", default="100000,300000",
                    help="active bans for (f)")
    ap.add_argument("--bans", type=int, default=1000000, help="bans decided for (g)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of (c) and (d); the median is shown (the CPUs may be shared)")
    args = ap.parse_args()
    ensure_private_netns()
    sizes = [int(s) for s in args.sizes.split(",")]
    nft_version = subprocess.run([NFT, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"# {nft_version}, Linux {os.uname().release}, {os.cpu_count()} CPUs, "
          "private network namespace")

    per_ban = per_process_ban_cost(args.sample)
    print("\n(c) bans applied per second (distinct IPv4 addresses, kernel timeouts for sshguardd)")
    print(f"{'bans':>9} | {'sshguardd, nft batches':>23} | {'+ store commit':>18} | "
          f"{'one nft process per ban':>33}")
    best = []
    for n in sizes:
        runs = [sshguardd_ban_rate(n) for _ in range(args.repeat)]
        nft_only = statistics.median(r[0] for r in runs)
        with_store = statistics.median(r[1] for r in runs)
        best.append(f"{n:,}: {n / min(r[0] for r in runs):,.0f}/s, "
                    f"{n / min(r[1] for r in runs):,.0f}/s with store")
        peer = per_ban * n
        print(f"{n:>9} | {n / nft_only:>10,.0f}/s {nft_only:>8.3f} s | {n / with_store:>8,.0f}/s "
              f"{with_store:>5.2f} s | {1 / per_ban:>10,.0f}/s {peer:>8.1f} s (extrap.)")
    print(f"  sshguardd: median of {args.repeat} runs (best: {'; '.join(best)}).")
    print(f"  peer measured on {args.sample} bans ({1000 * per_ban:.2f} ms per `sh -c nft add "
          f"element`), extrapolated linearly to each size; fail2ban also runs its actioncheck "
          f"(`nft list chain | grep`) before each ban, so it is slower still. "
          f"Target: >= 100,000 bans/s.")

    n = args.restart
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "state.db"
        now = time.time()
        with Store(db) as store:
            store.add_bans([Ban(f"{a}/32", 3600, now + 600 + i % 3000, 1, "bench")
                            for i, a in enumerate(addresses(n))])
        warm = _median_run([restart(n, True, db) for _ in range(args.repeat)])
        cold = _median_run([restart(n, False, db) for _ in range(args.repeat)])
    print(f"\n(d) restart with {n:,} active bans (fresh process: import, store, setup, restore; "
          f"median of {args.repeat})")
    for name, r in (("sshguardd, table still loaded", warm), ("sshguardd, table gone", cold)):
        print(f"  {name:<31} {r['wall']:6.2f} s wall  (import {r['import']:.2f}, store "
              f"{r['store']:.2f}, setup {r['setup']:.2f}, restore {r['restore']:.2f})")
    print(f"  {'one nft process per ban':<31} {per_ban * n:6.1f} s (extrap. from (c))")
    print("  Target: < 2 s.")

    m = args.offenders
    full = policy_rss(m, max(m, 100))
    capped = policy_rss(m, 100_000)
    print(f"\n(e) peak RSS of a BanPolicy after {m:,} distinct offenders")
    for name, r in ((f"max_tracked={max(m, 100):,}", full), ("max_tracked=100,000 (default)", capped)):
        print(f"  {name:<31} peak {r['peak']:7.1f} MB (interpreter+imports {r['base']:.1f} MB), "
              f"tracked {r['tracked']:,}, evictions {r['evictions']:,}, {r['rate']:,.0f} events/s "
              f"({r['cpu_rate']:,.0f} per CPU second)")
    print("  Target: < 200 MB at 1M offenders.")

    print("\n(f) cost of one banning batch (25 lines, 5 new bans, store + nft commit) with N "
          "bans already active; median of 5 batches")
    print(f"{'active bans':>12} | {'now: counters':>14} | {'before: re-read the store':>26}")
    for n in (int(x) for x in args.batch_sizes.split(",")):
        now_cost, before_cost = batch_cost(n)
        print(f"{n:>12,} | {now_cost:>12.3f} s | {before_cost:>24.3f} s")

    b = args.bans
    print(f"\n(g) peak RSS of a BanPolicy after {b:,} bans (the banned networks and their "
          "ban history it remembers)")
    for name, r in ((f"max_tracked={b:,} (as unbounded as before)", bans_rss(b, b)),
                    ("max_tracked=100,000 (default)", bans_rss(b, 100_000))):
        print(f"  {name:<42} peak {r['peak']:7.1f} MB (interpreter+imports "
              f"{r['base']:.1f} MB), remembered {r['banned']:,}, forgotten {r['forgotten']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
