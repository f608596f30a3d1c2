"""The daemon wired to its neighbours: the classifier's connection memory, the policy's
view of bans made before a restart, the state store's failures, the firewall on SIGHUP,
the drift guard's watched directories, the watchdog.

Like test_daemon.py: the real `sshguardd run` in a sandbox, log lines from stand-in sshd
processes (each Sender is one process, so one sshd pid = one connection), nft in the
sandbox's network namespace. The few in-process tests at the end drive Daemon's loop with
a real Store and BanPolicy."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import (
    DaemonProc,
    NotifyCollector,
    Sender,
    banned,
    caught_up,
    failed,
    in_process_daemon,
    write_config,
)
from sshguardd.contracts import LogBatch, LogRecord, WatchSet
from sshguardd.demo.sandbox import Sandbox, wait_for

BASE = """
[ban]
max_retry = {max_retry}
find_time = "10m"
ban_time = "{ban_time}"
allow = ["10.99.0.0/16"]

[ban.weights]
protocol_error = 1.0

[drift]
enabled = false

[metrics]
enabled = false
"""


def cfg(max_retry: int = 3, ban_time: str = "1h") -> str:
    return BASE.format(max_retry=max_retry, ban_time=ban_time)


@pytest.fixture
def daemon(sandbox: Sandbox, tmp_path: Path) -> Iterator[DaemonProc]:
    d = DaemonProc(sandbox, tmp_path / "daemon.log")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture
def sshd(sandbox: Sandbox) -> Iterator[Sender]:
    s = Sender(sandbox, "sshd")
    yield s
    s.close()


def connections(sb: Sandbox, *conns: list[str]) -> None:
    """Each list of lines logged by its own sshd process (its own pid), one after the
    other, each process ended before the next starts."""
    for lines in conns:
        s = Sender(sb, "sshd")
        try:
            s.say(*lines)
        finally:
            s.close()


def bans(d: DaemonProc) -> dict[str, dict[str, Any]]:
    return {b["network"]: b for b in d.request({"cmd": "bans"})["bans"]}


# -- 1. classification with connection context -------------------------------------------

@pytest.mark.e2e
def test_two_line_cases_are_classified_and_counted_once(sandbox: Sandbox,
                                                        daemon: DaemonProc) -> None:
    write_config(sandbox, cfg(max_retry=2))
    daemon.start()
    kex = "error: kex_exchange_identification: Connection closed by remote host"
    connections(
        sandbox,
        # A banner grab: the kex error names no address; the close after it does, but
        # without [preauth] it is no failure of its own (OpenSSH gh-3086).
        [kex, "Connection closed by 10.12.0.1 port 40001"],
        [kex, "Connection closed by 10.12.0.1 port 40002"],
        # Old sshd: "Disconnecting: Too many authentication failures" without an address,
        # the address known from the connection's first line.
        ['Connection from 10.12.0.2 port 40003 on 10.0.0.1 port 22 rdomain ""',
         "Disconnecting: Too many authentication failures [preauth]"],
        ['Connection from 10.12.0.2 port 40004 on 10.0.0.1 port 22 rdomain ""',
         "Disconnecting: Too many authentication failures [preauth]"],
        # One connection: a failed password, the disconnect it caused, the close. The
        # refusal and the close are the same attempt (score 1 of 2): no ban.
        ["Failed password for root from 10.12.0.3 port 40005 ssh2",
         "Disconnecting: Too many authentication failures [preauth]",
         "Connection closed by authenticating user root 10.12.0.3 port 40005 [preauth]"],
    )
    wait_for(lambda: banned(sandbox, "10.12.0.1") and banned(sandbox, "10.12.0.2"), 10,
             what="the bans decided from two-line cases")
    wait_for(lambda: caught_up(daemon, sandbox), 10, what="every line processed")
    assert not banned(sandbox, "10.12.0.3")  # counted once, not twice
    assert set(bans(daemon)) == {"10.12.0.1/32", "10.12.0.2/32"}
    # Connections that logged their closing line are forgotten; the two old-style ones
    # never did, so they are held (until 10 minutes of log time pass, or evicted).
    assert daemon.status()["connections_tracked"] == 2


@pytest.mark.e2e
def test_a_connection_spanning_a_restart_is_put_together(sandbox: Sandbox,
                                                         daemon: DaemonProc) -> None:
    """The replay after a restart goes through the same correlator: the kex error read
    before the restart and the close read after it are one connection."""
    write_config(sandbox, cfg(max_retry=1))
    daemon.start()
    s = Sender(sandbox, "sshd")  # one pid for both lines
    try:
        s.say("error: kex_exchange_identification: Connection closed by remote host")
        wait_for(lambda: caught_up(daemon, sandbox), 10, what="the kex line processed")
        assert daemon.stop() == 0
        s.say("Connection closed by 10.12.1.1 port 40000")
        daemon.start()
        wait_for(lambda: banned(sandbox, "10.12.1.1"), 10, what="the ban across the restart")
    finally:
        s.close()


# -- 2. bans active at start -------------------------------------------------------------

@pytest.mark.e2e
def test_in_flight_lines_do_not_reban_a_manual_ban_after_restart(
        sandbox: Sandbox, daemon: DaemonProc, sshd: Sender) -> None:
    write_config(sandbox, cfg())
    daemon.start()
    r = daemon.cli("ban", "10.13.0.1", "--for", "2h")
    assert r.returncode == 0, r.stderr
    before = bans(daemon)["10.13.0.1/32"]
    sshd.say("Server listening on 0.0.0.0 port 22.")  # so that a journal position is saved
    wait_for(lambda: caught_up(daemon, sandbox), 10, what="a saved position")
    assert daemon.stop() == 0
    # Lines logged while it was down (or read after the ban): no replay can know a
    # manual ban, only the store can.
    sshd.say(*failed("10.13.0.1", 5))
    daemon.start()
    wait_for(lambda: caught_up(daemon, sandbox), 10, what="the lines after the restart")
    after = bans(daemon)["10.13.0.1/32"]
    assert after["strikes"] == 1 and after["until"] == before["until"], after
    assert daemon.log().count("banned 10.13.0.1/32") == 1


@pytest.mark.e2e
def test_escalation_survives_a_restart_during_a_ban(sandbox: Sandbox, daemon: DaemonProc,
                                                    sshd: Sender) -> None:
    """A ban still active at start is known to the policy, and its history entry is kept
    (the replay does not decide it again), so the next ban is strike 2. The ban lasts 20 s:
    a stop and start on a loaded machine took longer than 8 s."""
    write_config(sandbox, cfg(ban_time="20s"))
    daemon.start()
    sshd.say(*failed("10.13.1.1", 3))
    wait_for(lambda: banned(sandbox, "10.13.1.1"), 10, what="the first ban")
    assert daemon.stop() == 0
    daemon.start()
    assert "restored 1 active bans" in daemon.log(), "the 20 s ban ran out during the restart"
    wait_for(lambda: not bans(daemon), 30, what="the first ban to run out")
    sshd.say(*failed("10.13.1.1", 3))
    wait_for(lambda: "10.13.1.1/32" in bans(daemon), 10, what="the second ban")
    second = bans(daemon)["10.13.1.1/32"]
    assert second["strikes"] == 2 and second["duration"] == 40, second


# -- 3. a damaged or unusable state store ------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["garbage", "not-a-directory"])
def test_unusable_state_store_is_one_line_an_alert_and_exit_74(
        sandbox: Sandbox, daemon: DaemonProc, damage: str) -> None:
    write_config(sandbox, cfg())
    state = sandbox.path("/var/lib/sshguardd")
    if damage == "garbage":
        state.mkdir(parents=True, exist_ok=True)
        (state / "state.db").write_bytes(b"this is no SQLite database\n" * 200)
        named = "/var/lib/sshguardd/state.db"
    else:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text("a file where the state directory belongs\n")
        named = "/var/lib/sshguardd"
    daemon.start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(30) == 74
    log = daemon.log()
    assert "Traceback" not in log, log
    errors = [ln for ln in log.splitlines() if ln.startswith("ERROR sshguardd.commands.run")]
    assert len(errors) == 1, log
    assert named in errors[0] and ("not a database" in errors[0]
                                   or "Not a directory" in errors[0]
                                   or "File exists" in errors[0]), errors[0]
    alerts = [json.loads(line) for line in sandbox.journal(
        "-o", "json", "SSHGUARDD_ALERT=startup_problem").splitlines()]
    assert alerts and alerts[-1]["WHAT"] == "state store" and named in alerts[-1]["DETAIL"]


# -- 4. SIGHUP re-checks the firewall ----------------------------------------------------

@pytest.mark.e2e
def test_sighup_restores_a_flushed_table_at_once(sandbox: Sandbox, daemon: DaemonProc,
                                                 sshd: Sender) -> None:
    write_config(sandbox, cfg())
    daemon.start()
    sshd.say(*failed("10.14.0.1", 3))
    wait_for(lambda: banned(sandbox, "10.14.0.1"), 10, what="the ban")
    # What `systemctl reload nftables` does (its config starts with "flush ruleset"); the
    # reload is propagated to sshguardd as SIGHUP. The periodic check is 30 s away.
    sandbox.run(["nft", "flush", "ruleset"], check=True)
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: banned(sandbox, "10.14.0.1"), 5, what="the ban back after SIGHUP")

    def drop_rules() -> str:
        out = sandbox.run(["nft", "list", "table", "inet", "sshguardd"], check=True).stdout
        return "\n".join(ln for ln in out.splitlines() if "drop" in ln)

    assert "drop" in drop_rules()
    # `nft flush table` keeps the table (and its sets) but drops the drop rule: exists()
    # alone would not see that.
    sandbox.run(["nft", "flush", "table", "inet", "sshguardd"], check=True)
    assert "drop" not in drop_rules()
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "drop" in drop_rules(), 5, what="the drop rule back after SIGHUP")
    assert banned(sandbox, "10.14.0.1")
    assert daemon.status()["firewall_errors"] == 0


# -- 6. a newly Included directory is watched at once ------------------------------------

@pytest.mark.e2e
def test_new_include_directory_is_watched_at_once(sandbox: Sandbox, daemon: DaemonProc) -> None:
    sandbox.run(["ssh-keygen", "-A"], check=True)  # sshd -t needs host keys
    write_config(sandbox, """
[daemon]
log_level = "info"

[drift]
mode = "enforce"
restart_command = ["/bin/true"]

[metrics]
enabled = false
""")
    extra = sandbox.path("/etc/ssh/extra.d")
    extra.mkdir()
    daemon.start()

    def effective(key: str) -> str:
        out = sandbox.run(["sshd", "-T"], check=True).stdout
        return next(ln.split()[1] for ln in out.splitlines() if ln.split()[0] == key)

    wait_for(lambda: effective("permitrootlogin") == "no", 15, what="start-up state")
    main = sandbox.path("/etc/ssh/sshd_config")
    main.write_text("Include /etc/ssh/extra.d/*.conf\n" + main.read_text())
    wait_for(lambda: "/etc/ssh/extra.d" in "".join(
        ln for ln in daemon.log().splitlines() if "watching" in ln), 10,
        what="the new Include directory to be watched")
    (extra / "50-cloud.conf").write_text("PermitRootLogin yes\n")
    wait_for(lambda: "permitrootlogin is yes" in daemon.log(), 10,
             what="the drift in the new directory to be seen")
    # Well under the 5-minute full re-check: the watcher saw the file.
    wait_for(lambda: effective("permitrootlogin") == "no", 15,
             what="the drop-in in the new directory to be repaired")


@pytest.mark.e2e
def test_reload_can_turn_the_drift_guard_on(sandbox: Sandbox, daemon: DaemonProc) -> None:
    sandbox.run(["ssh-keygen", "-A"], check=True)
    write_config(sandbox, cfg())  # [drift] enabled = false
    daemon.start()
    main = sandbox.path("/etc/ssh/sshd_config")
    main.write_text("PermitRootLogin yes\n" + main.read_text())
    assert daemon.status()["drift_mode"] == "off"
    write_config(sandbox, cfg().replace("[drift]\nenabled = false",
                                        '[drift]\nmode = "enforce"\n'
                                        'restart_command = ["/bin/true"]'))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "PermitRootLogin no" in main.read_text(), 15,
             what="the guard, turned on by the reload, to repair")
    assert daemon.status()["drift_mode"] == "enforce"


# -- 8. the watchdog ---------------------------------------------------------------------

@pytest.mark.e2e
def test_watchdog_stops_while_the_follower_is_dead_and_resumes(
        sandbox: Sandbox, tmp_path: Path) -> None:
    write_config(sandbox, cfg() + '\n[source]\nbackend = "file"\nfiles = ["/var/log/auth.log"]\n')
    log = sandbox.path("/var/log/auth.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with NotifyCollector(tmp_path / "notify.sock") as notify:
        d = DaemonProc(sandbox, tmp_path / "daemon.log", notify_socket=tmp_path / "notify.sock",
                       env={"WATCHDOG_USEC": "3000000"})  # a ping at least every second
        d.start()
        try:
            notify.wait("WATCHDOG", "1", n=2)
            # The follower thread dies: the file it follows becomes a directory.
            log.unlink()
            log.mkdir()
            wait_for(lambda: d.status()["healthy"] is False, 10, what="the daemon unhealthy")
            dead_since = time.monotonic()
            # Reopening fails too (1 s, then 2 s later): the loop keeps turning, and pings
            # nothing meanwhile.
            wait_for(lambda: d.log().count("reopening the log source failed") >= 3, 15,
                     what="three failed attempts to reopen the log source")
            late = [t for t, m in notify.snapshot()
                    if m.strip() == b"WATCHDOG=1" and t > dead_since + 1.0]
            assert not late, f"WATCHDOG=1 sent while unhealthy: {late}"
            # The log is back: the follower is reopened and the pings resume.
            log.rmdir()
            log.write_text("")
            back = time.monotonic()
            notify.wait("WATCHDOG", "1", since=back, n=2, timeout=20)
            assert d.status()["healthy"] is True
            assert "log follower reopened" in d.log()
        finally:
            d.stop()


class _Recorder:
    """A stand-in drift guard that records why check_all was called."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.wakeup: float | None = None

    def check_all(self, reason: str) -> list[Any]:
        self.reasons.append(reason)
        return []

    def next_wakeup(self) -> float | None:
        return self.wakeup

    def watch_set(self) -> WatchSet:
        return WatchSet(())

    def handle(self, changed: Any) -> list[Any]:
        return []


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- 7. the reason given for scheduled drift checks --------------------------------------

def test_scheduled_drift_checks_say_why(tmp_path: Path) -> None:
    from sshguardd.daemon.drift_guard import RECHECK_INTERVAL
    from sshguardd.daemon.notify import Notifier

    clock = _Clock(1000.0)
    drift = _Recorder()
    d = in_process_daemon(tmp_path, drift=drift, clock=clock,
                          notifier=Notifier(environ={}))
    try:
        d.drift.check("start")
        drift.wakeup = 1000.0 + 60  # a revert war's pause ends first
        clock.now = 1000.0 + 60
        d._timers()
        drift.wakeup = 1000.0 + 60 + RECHECK_INTERVAL  # then the periodic full re-check
        clock.now = drift.wakeup
        d._timers()
        assert drift.reasons == ["start", "revert-war pause over", "periodic re-check"]
    finally:
        d.shutdown()


# -- 8. a flood does not starve the watchdog ---------------------------------------------

def test_watchdog_keeps_pinging_under_a_flood(tmp_path: Path) -> None:
    """The follower keeps the queue full; the loop must still run its timers (and ping)
    every tick instead of draining forever."""
    from sshguardd.daemon.notify import Notifier

    sock = tmp_path / "notify.sock"
    with NotifyCollector(sock) as notify:
        d = in_process_daemon(tmp_path, notifier=Notifier(
            str(sock), environ={"WATCHDOG_USEC": "300000"}))  # tick 0.1 s
        stop = threading.Event()
        record = LogRecord(message="Server listening on 0.0.0.0 port 22.", time=1000.0,
                           pid=1, host="h")
        batch = LogBatch(records=(record,), position=None)

        def flood() -> None:
            while not stop.is_set():
                try:
                    d.queue.put(batch, timeout=0.1)
                except queue.Full:
                    continue

        pinged: list[bool] = []

        def watch() -> None:  # the loop runs on this (the store's) thread
            try:
                notify.wait("WATCHDOG", "1", n=3, timeout=10)
                pinged.append(True)
            except TimeoutError:
                pinged.append(False)
            finally:
                d.request_stop()

        producer = threading.Thread(target=flood, name="flood")
        watcher = threading.Thread(target=watch, name="watch")
        producer.start()
        try:
            wait_for(lambda: d.queue.full(), 10, what="a full queue")
            watcher.start()
            d.loop()
        finally:
            d.request_stop()
            stop.set()
            producer.join(10)
            if watcher.is_alive() or watcher.ident is not None:
                watcher.join(15)
            d.shutdown()
        assert pinged == [True], "no WATCHDOG=1 while the queue stayed full"
        assert d._engine().batches > 0
