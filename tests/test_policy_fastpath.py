"""The ban policy's fast paths (observe_raw without an Event or LogRecord, the memoised
address -> key, the one-connection paths of _count) decide exactly what the reference
path (tests/policy_reference.py, the code before them) decides: the same bans, the same
stored counters in the same order, the same evictions and protections, on random streams
built to hit every branch and on both benchmark generators' logs through scan --summary."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

from policy_reference import ReferencePolicy, reference_summary
from sshguardd import config
from sshguardd.bans.policy import BanPolicy
from sshguardd.config import BanConfig
from sshguardd.contracts import Event, Kind, LogRecord
from sshguardd.detect import Correlator
from sshguardd.scan.fastpath import scan_text
from sshguardd.scan.report import Summary
from sshguardd.scan.textio import Years, chunks

BENCH = Path(__file__).resolve().parent.parent / "bench"

HOSTS = [f"198.51.100.{i}" for i in range(60)] + [
    f"2001:db8:{i % 7:x}::{i:x}" for i in range(60)] + [
    "127.0.0.1", "10.0.0.5", "10.0.0.6", "::1", "fe80::1", "fe80::2:3", "::ffff:198.51.100.3",
    "2001:db8:ffff::1", "2001:db8:ffff::2", "host.example.com", "not an address", "",
    "203.0.113.9", "203.0.113.10"]
CONFIGS = [
    {},
    {"max_tracked": 100, "find_time": 30.0, "max_retry": 3},
    {"ipv4_prefix": 24, "ipv6_prefix": 48, "allow": ("127.0.0.0/8", "::1/128", "10.0.0.5/32",
                                                     "2001:db8:ffff::1/128")},
    {"protect_logged_in": 0.0, "max_retry": 2.5,
     "weights": {"preauth_disconnect": 0.3, "bad_key": 0.7, "timeout": 0.0}},
    {"max_tracked": 100, "ipv6_prefix": 128, "protect_max_failures": 3, "find_time": 5.0},
]


def _state(p: BanPolicy) -> tuple[object, ...]:
    return (list(p._offenders.items()), dict(p._banned), sorted(p.take_changes()),
            p.evictions, p.ban_evictions, p.suppressed, p.withheld(), p.take_withheld(),
            list(p._wide), {k: list(v) for k, v in p._history.items()}, p.tracked)


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_random_streams_give_the_same_decisions(index: int) -> None:
    cfg = BanConfig(**CONFIGS[index])
    kinds = list(Kind)
    events = 0
    for seed in range(6):
        rng = random.Random(seed * 31 + index)
        fast, ref = BanPolicy(cfg), ReferencePolicy(cfg)
        hosts = rng.sample(HOSTS, rng.randint(3, len(HOSTS)))
        pids = [None, *range(100, 100 + rng.randint(1, 12))]
        t = 1_700_000_000.0
        for n in range(3000):
            r = rng.random()
            t += 0.0 if r < 0.2 else -rng.random() * 3 if r < 0.25 else rng.random() * 4
            when = None if rng.random() < 0.03 else t
            kind = rng.choice(kinds)
            host, user = rng.choice(hosts), rng.choice([None, "root", "admin", "x"])
            pid, relay = rng.choice(pids), rng.random() < 0.05
            expected = ref.observe(LogRecord("", when, pid), Event(kind, host, user, 22, relay))
            if n % 2:
                got = fast.observe_raw(kind, host, user, relay, pid, when)
            else:
                got = fast.observe(LogRecord("m", when, pid, "h"), Event(kind, host, user, 1, relay))
            assert got == expected, (seed, n)
            events += 1
            if rng.random() < 0.01:
                target = rng.choice(hosts[:3] + ["192.0.2.0/24", "2001:db8:5::/64"])
                length = rng.choice([None, 60.0])
                for p in (fast, ref):
                    try:
                        p.manual_ban(target, length, t)
                    except ValueError:
                        pass
            if rng.random() < 0.01:
                for p in (fast, ref):
                    p.expire(t)
            if n % 97 == 0:
                assert _state(fast) == _state(ref), (seed, n)
        assert _state(fast) == _state(ref)
    print(f"config {index}: {events} random events, same decisions")


def _bench_log(tmp_path: Path, generator: str, lines: int) -> Path:
    sys.path.insert(0, str(BENCH))
    try:
        import gen_authlog
        import gen_authlog2
    finally:
        sys.path.pop(0)
    path = tmp_path / f"{generator}.log"
    if generator == "gen_authlog":
        gen_authlog.generate(str(path), lines=lines, attackers=2000, seed=1)
    else:
        gen_authlog2.generate(str(path), lines, seed=2, stamp="iso", attackers=2000, users=500)
    return path


@pytest.mark.parametrize("generator", ["gen_authlog", "gen_authlog2"])
@pytest.mark.parametrize("as_json", [False, True])
def test_summary_equals_the_reference_on_both_generators(tmp_path: Path, generator: str,
                                                         as_json: bool) -> None:
    path = _bench_log(tmp_path, generator, 40_000)
    cfg = config.Config()
    outputs = []
    for summary in (Summary(cfg), reference_summary(cfg)):
        with open(path, "rb") as f:
            scan_text(chunks(f), Years(2025, None), Correlator(), summary.emit_for(str(path)))
        out = io.StringIO()
        summary.write(out, as_json)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    banned = outputs[0].count('"network"') if as_json else outputs[0]
    assert banned, "the log bans nobody: the comparison proves little"
    print(f"{generator}: summaries equal ({len(outputs[0])} bytes)")
