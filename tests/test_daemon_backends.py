"""The daemon's loop and ban engine in this process, over both firewall backends: nft in
a private network namespace (test_firewall.NetNs) and the dry-run backend. Real Store
(in tmp_path, on a tiny tmpfs where a full disk is the point), real BanPolicy and
Correlator, real Metrics and Alerts; log records are handed to the loop as the follower
would hand them.

Regressions covered: a store write that fails (disk full) no longer keeps a decided ban
out of the kernel; the periodic check repairs `nft flush table/chain/set` and a deleted
table; a backward clock step no longer makes the policy ignore a network the kernel has
let in again; the control API refuses non-finite and out-of-range durations; healthy()
turns false while the firewall fails past its retries or the drift watcher is dead; a
failed change event is handled again, not dropped."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import in_process_daemon
from sshguardd import config
from sshguardd.contracts import FileChanged, LogBatch, LogRecord, WatchSet
from sshguardd.demo.sandbox import wait_for
from sshguardd.effects.nft_dryrun import DryRunFirewall
from test_firewall import NetNs

_pid = [1000]


def attempts(addr: str, n: int, t: float) -> LogBatch:
    """n failed passwords from addr, each its own connection (sshd pid), at log time t."""
    recs = []
    for i in range(n):
        _pid[0] += 1
        recs.append(LogRecord(f"Failed password for root from {addr} port {40000 + i} ssh2",
                              t + i * 0.001, _pid[0], "h", f"pos{_pid[0]}"))
    return LogBatch(tuple(recs), f"pos{_pid[0]}")


class Backend:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ns = NetNs() if kind == "nft" else None
        self.fw: Any = self.ns.firewall() if self.ns is not None else DryRunFirewall()

    def holds(self, network: str) -> bool:
        if self.ns is None:
            return network in self.fw.held
        return bool(self.fw.contains(network))

    def close(self) -> None:
        if self.ns is not None:
            self.ns.close()


@pytest.fixture(params=["nft", "dryrun"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b = Backend(request.param)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def nft_backend() -> Iterator[Backend]:
    b = Backend("nft")
    try:
        yield b
    finally:
        b.close()


def test_a_banning_batch_is_one_commit_and_counted_without_rereading(
        tmp_path: Path, backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    d = in_process_daemon(tmp_path, firewall=backend.fw)
    try:
        calls = backend.fw.calls
        d.on_batch(attempts("192.0.2.7", 5, time.time()))
        assert backend.fw.calls - calls == 1        # one transaction for the batch
        assert backend.holds("192.0.2.7/32")
        st = d.api({"cmd": "status"})
        assert st["bans_active"] == 1 and st["bans_by_family"] == {"ipv4": 1, "ipv6": 0}
        assert st["firewall_pending"] == 0 and st["healthy"]
        if backend.kind == "dryrun":
            assert any("dry run: would ban 192.0.2.7/32" in r.getMessage()
                       for r in caplog.records)
        # more lines from the banned address decide nothing new
        d.on_batch(attempts("192.0.2.7", 5, time.time()))
        assert d.api({"cmd": "status"})["bans_active"] == 1
    finally:
        d.shutdown()


@pytest.mark.parametrize("damage", [
    ["flush", "table", "inet", "sshguardd"],
    ["flush", "chain", "inet", "sshguardd", "input"],
    ["flush", "set", "inet", "sshguardd", "addr4"],
    ["delete", "table", "inet", "sshguardd"],
])
def test_the_periodic_check_repairs_a_flushed_or_deleted_table(
        tmp_path: Path, nft_backend: Backend, damage: list[str]) -> None:
    d = in_process_daemon(tmp_path, firewall=nft_backend.fw)
    try:
        d.on_batch(attempts("192.0.2.8", 5, time.time()))
        assert nft_backend.fw.check(["192.0.2.8/32"]) is None
        assert nft_backend.ns is not None
        nft_backend.ns.nft(*damage)
        assert nft_backend.fw.check(d.store.sample_active(time.time())) is not None
        d.upkeep.check()     # what the loop runs every firewall_check_interval
        assert nft_backend.fw.check(["192.0.2.8/32"]) is None
        assert nft_backend.holds("192.0.2.8/32")
        rules = nft_backend.ns.nft("list", "chain", "inet", "sshguardd", "input")
        assert rules.count("drop") == 4, rules
    finally:
        d.shutdown()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs for the state store (the suite runs in a private mount namespace)."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 4096, 512, 1):   # to the last byte
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_does_not_keep_a_decided_ban_out_of_the_kernel(
        full_disk: Path, backend: Backend) -> None:
    d = in_process_daemon(full_disk, firewall=backend.fw)
    try:
        filler = _fill(full_disk)
        result = d._engine().on_batch(attempts("198.51.100.9", 5, time.time()), time.time())
        assert result.store_failed and not result.firewall_failed
        assert backend.holds("198.51.100.9/32"), "the ban must reach the kernel anyway"
        st = d.api({"cmd": "status"})
        assert st["bans_unsaved"] == 1 and st["bans_active"] == 1
        # the attacker keeps trying: nothing is ignored as "banned" that is not banned
        # (it is), and nothing is decided twice
        again = d._engine().on_batch(attempts("198.51.100.9", 5, time.time()), time.time())
        assert again.bans == ()
        # space again: the retry timer saves it
        filler.unlink()
        d.upkeep.retry_at = 0.0
        d._timers()
        assert d.api({"cmd": "status"})["bans_unsaved"] == 0
        assert [b.network for b in d.store.active_bans(time.time())] == ["198.51.100.9/32"]
    finally:
        d.shutdown()


class _StepClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_a_backward_clock_step_does_not_hide_a_lifted_ban(tmp_path: Path,
                                                         nft_backend: Backend) -> None:
    clock = _StepClock()
    cfg = config.Config.model_validate({"ban": {"ban_time": "2s", "max_retry": 3}})
    d = in_process_daemon(tmp_path, cfg, firewall=nft_backend.fw, clock=clock)
    try:
        d._timers()                              # the loop notes the clock's offset
        d.on_batch(attempts("203.0.113.5", 3, clock()))
        assert nft_backend.holds("203.0.113.5/32")
        clock.offset = -3600.0                   # `date -s` one hour back
        d._timers()
        # the kernel lifts the ban after its 2 s, whatever the wall clock says
        wait_for(lambda: not nft_backend.holds("203.0.113.5/32"), 10,
                 what="the kernel to lift the ban")
        d.on_batch(attempts("203.0.113.5", 3, clock()))   # log times in the new clock
        assert nft_backend.holds("203.0.113.5/32"), \
            "the policy ignored a network the kernel had let in again"
    finally:
        d.shutdown()


@pytest.mark.parametrize("duration", [math.inf, -math.inf, math.nan, 1e12, 0, -5, True])
def test_control_ban_durations_are_finite_and_bounded(tmp_path: Path,
                                                      duration: float) -> None:
    d = in_process_daemon(tmp_path)
    try:
        reply = d.api({"cmd": "ban", "address": "192.0.2.50", "duration": duration})
        assert reply["ok"] is False and "duration" in reply["error"], reply
        assert d.api({"cmd": "status"})["bans_active"] == 0
        ok = d.api({"cmd": "ban", "address": "192.0.2.50", "duration": 600})
        assert ok["ok"] and ok["applied"]
    finally:
        d.shutdown()


def test_unhealthy_while_the_firewall_fails_past_its_retries(tmp_path: Path) -> None:
    ns = NetNs()
    fw = ns.firewall()
    d = in_process_daemon(tmp_path, firewall=fw)
    try:
        ns.close()                               # the namespace is gone: nft cannot run
        d.on_batch(attempts("192.0.2.99", 5, time.time()))
        assert fw.pending == 1 and d.healthy()   # one failure is what retries are for
        for _ in range(8):
            d.upkeep.retry_at = 0.0
            d._timers()
        assert not d.healthy()
        assert any("firewall failing" in p for p in d.health_problems())
    finally:
        d.shutdown()


class _FlakyGuard:
    """A drift guard whose first handling of a change fails (as a full /etc would)."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.failures = 1

    def check_all(self, reason: str = "check") -> list[Any]:
        return []

    def handle(self, changed: FileChanged) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self.handled.append(changed.path)
        return []

    def next_wakeup(self) -> float | None:
        return None

    def watch_set(self) -> WatchSet:
        return WatchSet(())


def test_a_failed_change_event_is_retried_not_dropped(tmp_path: Path) -> None:
    guard = _FlakyGuard()
    d = in_process_daemon(tmp_path, drift=guard)
    try:
        d._dispatch(FileChanged("/etc/ssh/sshd_config", time.time()))
        assert guard.handled == []
        d._timers()
        assert guard.handled == ["/etc/ssh/sshd_config"]
    finally:
        d.shutdown()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_unhealthy_while_the_drift_watcher_is_dead(tmp_path: Path) -> None:
    from sshguardd.daemon.wiring import watcher

    d = in_process_daemon(tmp_path, drift=_FlakyGuard())
    watched = tmp_path / "etc"
    watched.mkdir()
    # debounce = inf makes the delivery thread's Condition.wait() raise on the first
    # change (OverflowError): the thread dies, as it did in the field.
    w = watcher(WatchSet((str(watched),), frozenset({str(watched / "f")})),
                d._on_file, float("inf"))
    w.start()
    assert d.drift is not None
    d.drift.watcher = w
    try:
        assert d.healthy()
        (watched / "f").write_text("x")
        wait_for(lambda: not w.alive, 10, what="the watcher thread to die")
        assert "drift watcher dead" in d.health_problems()
    finally:
        d.drift.watcher = None
        w.stop()
        d.shutdown()


def test_store_counts_match_a_full_reread(tmp_path: Path) -> None:
    d = in_process_daemon(tmp_path)
    try:
        now = time.time()
        for i in range(1, 4):
            d.on_batch(attempts(f"192.0.2.{i}", 5, now))
        d.on_batch(attempts("2001:db8:7::1", 5, now))
        d.api({"cmd": "unban", "address": "192.0.2.2"})
        active = d.store.active_bans(time.time())
        st = d.api({"cmd": "status"})
        assert st["bans_active"] == len(active) == 3
        assert st["bans_by_family"] == {"ipv4": 2, "ipv6": 1}
        d._engine().recount(time.time())
        assert d.api({"cmd": "status"})["bans_by_family"] == {"ipv4": 2, "ipv6": 1}
    finally:
        d.shutdown()


def test_os_sees_no_nft_table_in_dry_run(tmp_path: Path) -> None:
    """The dry-run backend never runs nft: the suite's namespace keeps no table."""
    d = in_process_daemon(tmp_path)
    try:
        d.on_batch(attempts("192.0.2.77", 5, time.time()))
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
        assert "sshguardd" not in out.stdout
        assert os.path.exists(tmp_path / "state.db")
    finally:
        d.shutdown()


DRY_CONFIG = """
[ban]
max_retry = 3
find_time = "10m"
ban_time = "1h"

[drift]
enabled = false

[metrics]
enabled = false
"""


@pytest.mark.e2e
def test_run_dry_run_logs_bans_and_leaves_the_kernel_alone(sandbox: Any,
                                                          tmp_path: Path) -> None:
    from daemon_helpers import DaemonProc, Sender, failed, kernel_elements, write_config

    write_config(sandbox, DRY_CONFIG)
    d = DaemonProc(sandbox, tmp_path / "daemon.log", args=("--dry-run",)).start()
    sshd = Sender(sandbox, "sshd")
    try:
        sshd.say(*failed("10.7.0.1", 3))
        wait_for(lambda: "dry run: would ban 10.7.0.1/32" in d.log(), 15,
                 what="the dry-run ban line")
        assert sandbox.run(["nft", "list", "tables"]).stdout.strip() == ""
        assert kernel_elements(sandbox) == set()
        st = d.status()
        assert st["bans_active"] == 1 and st["firewall"].endswith("(dry run)")
        assert [b["network"] for b in d.request({"cmd": "bans"})["bans"]] == ["10.7.0.1/32"]
    finally:
        sshd.close()
        assert d.stop() == 0


def test_link_local_offenders_are_not_banned_as_a_whole_link(tmp_path: Path,
                                                            backend: Backend) -> None:
    """Before: 5 failures from fe80::1 banned fe80::/64, every link-local peer on every
    interface. Now link-local sources are neither counted nor banned (docs/bans.md)."""
    d = in_process_daemon(tmp_path, firewall=backend.fw)
    try:
        d.on_batch(attempts("fe80::1", 10, time.time()))
        assert not backend.holds("fe80::/64")
        assert d.api({"cmd": "status"})["bans_active"] == 0
        reply = d.api({"cmd": "ban", "address": "fe80::1"})
        assert reply["ok"] is False and "link-local" in reply["error"]
        d.on_batch(attempts("2001:db8:9::1", 5, time.time()))   # others still are
        assert backend.holds("2001:db8:9::/64")
    finally:
        d.shutdown()


def test_ban_memory_is_bounded_and_a_forgotten_ban_is_not_decided_again(
        tmp_path: Path) -> None:
    """Before: the policy remembered every ban and its history (+306 MB per million
    bans, whatever max_tracked said). Now both are capped at max_tracked; a ban the
    policy forgot is still known to the store, which keeps it from being decided twice."""
    cfg = config.Config.model_validate({"ban": {"max_tracked": 256, "max_retry": 3}})
    d = in_process_daemon(tmp_path, cfg)
    try:
        now = time.time()
        policy = d._engine().policy
        for i in range(1000):
            policy.manual_ban(f"10.1.{i >> 8}.{i & 255}", 3600, now)
        assert policy.banned_tracked <= 256 and len(policy._history) <= 256
        assert policy.ban_evictions > 0
        d.on_batch(attempts("10.2.0.1", 3, now))          # banned, then forgotten
        for i in range(300):
            policy.manual_ban(f"10.3.{i >> 8}.{i & 255}", 3600, now)
        assert policy.banned_tracked <= 256
        again = d._engine().on_batch(attempts("10.2.0.1", 3, now + 1), now + 1)
        assert again.bans == ()                            # the store still knows it
        assert d.api({"cmd": "status"})["bans_active"] == 1
    finally:
        d.shutdown()


def test_failure_counters_are_saved_with_the_position(tmp_path: Path) -> None:
    d = in_process_daemon(tmp_path)
    try:
        batch = attempts("192.0.2.61", 3, time.time())
        d.on_batch(batch)
        saved = d.store.offenders(0)
        assert saved is not None and len(saved) == 1
        assert d.store.position() == batch.position
        # a fresh engine (a restart) takes them from the store, without any replay
        d._engine().rebuild([], time.time())
        assert d._engine().policy.tracked == 1
        d.on_batch(attempts("192.0.2.61", 2, time.time()))
        assert d.api({"cmd": "status"})["bans_active"] == 1
    finally:
        d.shutdown()
