"""The daemon as a process (`sshguardd run`) in a sandbox: private journald, nft in a
private network namespace, its real default paths. Log lines come from a stand-in sshd
(a root process whose _COMM is sshd), so these run in seconds; test_e2e_ban.py does the
same against a real OpenSSH server."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_helpers import (
    DaemonProc,
    NotifyCollector,
    Sender,
    banned,
    caught_up,
    failed,
    kernel_elements,
    write_config,
)
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

BASE = """
[ban]
max_retry = {max_retry}
find_time = "10m"
ban_time = "{ban_time}"
allow = ["10.99.0.0/16"]

[drift]
enabled = false

[metrics]
enabled = false
"""


def cfg(max_retry: int = 3, ban_time: str = "1h") -> str:
    return BASE.format(max_retry=max_retry, ban_time=ban_time)


@pytest.fixture
def box(sandbox: Sandbox) -> Iterator[Sandbox]:
    yield sandbox


@pytest.fixture
def daemon(box: Sandbox, tmp_path: Path) -> Iterator[DaemonProc]:
    write_config(box, cfg())
    d = DaemonProc(box, tmp_path / "daemon.log")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture
def sshd(box: Sandbox) -> Iterator[Sender]:
    s = Sender(box, "sshd")
    yield s
    s.close()


def test_ready_only_after_table_and_sources_are_up(box: Sandbox, tmp_path: Path) -> None:
    write_config(box, cfg())
    with NotifyCollector(tmp_path / "notify.sock") as notify:
        d = DaemonProc(box, tmp_path / "daemon.log", notify_socket=tmp_path / "notify.sock")
        d.start(wait=False)
        try:
            notify.wait("READY", "1", timeout=30)
            # READY=1 came after the table exists and the control socket answers
            assert box.run(["nft", "list", "table", "inet", "sshguardd"]).returncode == 0
            assert d.status()["ok"]
            ready = next(f for f in notify.fields() if f.get("READY") == "1")
            assert ready["STATUS"].startswith("0 bans active")
            assert "firewall table inet sshguardd ready" in d.log()
            assert d.stop() == 0
            notify.wait("STOPPING", "1")  # on the way out
        finally:
            if d.proc and d.proc.poll() is None:
                d.stop()


def test_bans_after_max_retry_in_one_batch_and_cli_lists_it(
        box: Sandbox, daemon: DaemonProc, sshd: Sender) -> None:
    daemon.start()
    sshd.say(*failed("10.1.0.1", 2))
    wait_for(lambda: caught_up(daemon, box), 10, what="two failures processed")
    assert not banned(box, "10.1.0.1")  # two of three
    sshd.say(*failed("10.1.0.1", 1), *failed("10.1.0.2", 3), *failed("10.99.0.7", 5))
    wait_for(lambda: banned(box, "10.1.0.2") and banned(box, "10.1.0.1"), 10,
             what="both bans in the kernel")
    wait_for(lambda: caught_up(daemon, box), 10, what="all processed")
    assert not banned(box, "10.99.0.7")  # allow-listed
    out = daemon.cli("bans", "--json")
    assert out.returncode == 0, out.stderr
    bans = {b["network"]: b for b in json.loads(out.stdout)}
    assert set(bans) == {"10.1.0.1/32", "10.1.0.2/32"}
    assert 3500 < bans["10.1.0.2/32"]["remaining"] <= 3600
    table = daemon.cli("bans")
    assert "10.1.0.2/32" in table.stdout and "REMAINING" in table.stdout
    st = json.loads(daemon.cli("status", "--json").stdout)
    assert st["bans_active"] == 2 and st["healthy"] is True
    text = daemon.cli("status").stdout
    assert "bans active  2 (IPv4 2, IPv6 0)" in text


def test_forged_sshd_lines_ban_nobody(box: Sandbox, daemon: DaemonProc,
                                      sshd: Sender) -> None:
    daemon.start()
    forger = Sender(box, "logger")  # `logger -t sshd`
    user = Sender(box, "sshd", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    try:
        forger.say(*failed("10.2.0.1", 5))
        user.say(*failed("10.2.0.2", 5))
        wait_for(lambda: box.journal("-o", "cat", "SYSLOG_IDENTIFIER=sshd").count(
            "10.2.0.") == 10, 10, what="forged lines in the journal")
        sshd.say(*failed("10.2.0.3", 3))  # a real one after them, to know they were seen
        wait_for(lambda: banned(box, "10.2.0.3"), 10, what="the real offender's ban")
        assert kernel_elements(box) == {"10.2.0.3"}
    finally:
        forger.close()
        user.close()


def test_manual_ban_unban_and_bad_requests(box: Sandbox, daemon: DaemonProc) -> None:
    daemon.start()
    r = daemon.cli("ban", "10.3.0.9", "--for", "2h")
    assert r.returncode == 0, r.stderr
    assert "banned 10.3.0.9/32 for 2h" in r.stdout
    assert banned(box, "10.3.0.9")
    r = daemon.cli("ban", "2001:db8:1::5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ban"]["network"] == "2001:db8:1::/64"
    assert banned(box, "2001:db8:1::/64")
    # unban by an address inside the /64
    r = daemon.cli("unban", "2001:db8:1::77")
    assert r.returncode == 0 and "unbanned 2001:db8:1::/64" in r.stdout
    assert not banned(box, "2001:db8:1::/64")
    r = daemon.cli("unban", "10.3.0.9", "--json")
    assert json.loads(r.stdout)["removed"] == ["10.3.0.9/32"]
    assert not banned(box, "10.3.0.9")
    # errors are answers, not crashes
    bad = daemon.cli("ban", "not-an-address")
    assert bad.returncode == 1 and "not an IP address" in bad.stderr
    assert daemon.cli("unban", "10.3.0.10").returncode == 1
    assert daemon.cli("ban", "10.3.0.1", "--for", "soon").returncode == 2
    assert daemon.request({"cmd": "ban", "address": "10.3.0.1", "duration": -5})["ok"] is False
    assert daemon.request({"cmd": "nope"})["ok"] is False
    for payload in (b"{" * 100_000, b"\x00garbage\n", b'{"cmd": "ban", "address": 5}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(daemon.socket))
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before it was all sent
            answer = json.loads(s.recv(65536))
        assert answer["ok"] is False, payload[:20]
    assert daemon.status()["healthy"] is True


def test_unreachable_daemon_exit_69(box: Sandbox, daemon: DaemonProc) -> None:
    write_config(box, cfg())
    for verb in (["status"], ["bans"], ["ban", "10.0.0.1"], ["unban", "10.0.0.1"]):
        r = daemon.cli(*verb)
        assert r.returncode == 69, (verb, r.stdout, r.stderr)


def test_sighup_reload_keeps_state_and_refuses_bad_config(
        box: Sandbox, tmp_path: Path, sshd: Sender) -> None:
    write_config(box, cfg())
    with NotifyCollector(tmp_path / "notify.sock") as notify:
        daemon = DaemonProc(box, tmp_path / "daemon.log",
                            notify_socket=tmp_path / "notify.sock")
        daemon.start()
        try:
            _reload_scenario(box, daemon, sshd, notify)
        finally:
            daemon.stop()


def _reload_scenario(box: Sandbox, daemon: DaemonProc, sshd: Sender,
                     notify: NotifyCollector) -> None:
    sshd.say(*failed("10.4.0.1", 3))
    wait_for(lambda: banned(box, "10.4.0.1"), 10, what="first ban")
    write_config(box, "[ban]\nmax_retry = 0\n")  # invalid
    since = time.monotonic()
    daemon.send_signal(signal.SIGHUP)
    notify.wait_sequence("RELOADING", "READY", since=since)  # systemd sees the reload end
    wait_for(lambda: "reload refused" in daemon.log(), 10, what="the refusal in the log")
    assert daemon.status()["ok"]
    # the old max_retry (3) still holds
    sshd.say(*failed("10.4.0.2", 1))
    wait_for(lambda: caught_up(daemon, box), 10, what="processed")
    assert not banned(box, "10.4.0.2")
    # a valid new config: max_retry 2; the failure already counted still counts
    write_config(box, cfg(max_retry=2))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in daemon.log(), 10, what="reload")
    sshd.say(*failed("10.4.0.2", 1))
    wait_for(lambda: banned(box, "10.4.0.2"), 10, what="ban under the new max_retry")
    assert banned(box, "10.4.0.1")  # state kept


def test_failed_nft_is_logged_counted_retried(box: Sandbox, daemon: DaemonProc,
                                              sshd: Sender) -> None:
    daemon.start()
    # Pull the table out from under the daemon: the next transaction fails in nft.
    box.run(["nft", "delete", "table", "inet", "sshguardd"], check=True)
    sshd.say(*failed("10.5.0.1", 3))
    wait_for(lambda: daemon.status()["firewall_errors"] >= 1, 10, what="a counted failure")
    log = daemon.log()
    # the exact argv, nft's stderr and the JSON payload, all in the one line
    line = next(ln for ln in log.splitlines() if "firewall add failed" in ln)
    assert "argv=['/usr/sbin/nft', '-j', '-f', '-']" in line
    assert "stderr='" in line and '"10.5.0.1"' in line and "payload={" in line
    # retried: the table comes back with the ban that was decided meanwhile
    wait_for(lambda: banned(box, "10.5.0.1"), 15, what="the ban after the retry")
    st = daemon.status()
    assert st["healthy"] and st["firewall_pending"] == 0


def test_sigterm_clean_shutdown_keeps_bans_in_kernel(box: Sandbox, daemon: DaemonProc,
                                                     sshd: Sender) -> None:
    daemon.start()
    sshd.say(*failed("10.6.0.1", 3))
    wait_for(lambda: banned(box, "10.6.0.1"), 10, what="ban")
    assert daemon.stop(signal.SIGTERM) == 0
    assert not daemon.socket.exists()
    assert banned(box, "10.6.0.1")  # stopping the daemon does not open the door
    assert "sshguardd stopped" in daemon.log()


def test_kill9_restart_resumes_without_loss_or_double_count(
        box: Sandbox, daemon: DaemonProc, sshd: Sender) -> None:
    daemon.start()
    sshd.say(*failed("10.7.0.1", 3), *failed("10.7.0.2", 2), *failed("10.7.0.3", 2))
    wait_for(lambda: banned(box, "10.7.0.1") and caught_up(daemon, box), 10,
             what="ban and processing")
    daemon.kill9()
    # while it is down: one more failure for .2 (2+1 = 3: must ban), none for .3 (2 only)
    sshd.say(*failed("10.7.0.2", 1))
    box.run(["nft", "flush", "table", "inet", "sshguardd"], check=True)  # e.g. nft restart
    daemon.start()
    wait_for(lambda: banned(box, "10.7.0.2"), 10, what="the ban across the restart")
    wait_for(lambda: caught_up(daemon, box), 10, what="caught up")
    assert banned(box, "10.7.0.1")  # restored from the store
    assert not banned(box, "10.7.0.3")  # not counted twice
    bans = {b["network"] for b in daemon.request({"cmd": "bans"})["bans"]}
    assert bans == {"10.7.0.1/32", "10.7.0.2/32"}


def test_expiry_removes_the_ban_by_itself(box: Sandbox, daemon: DaemonProc,
                                          sshd: Sender) -> None:
    write_config(box, cfg(ban_time="6s"))
    daemon.start()
    sshd.say(*failed("10.8.0.1", 3))
    wait_for(lambda: banned(box, "10.8.0.1"), 10, what="ban")
    wait_for(lambda: not banned(box, "10.8.0.1"), 15, what="the kernel to expire it")
    wait_for(lambda: daemon.request({"cmd": "bans"})["bans"] == [], 5, what="store expiry")


def test_hosts_the_drift_guard(box: Sandbox, tmp_path: Path) -> None:
    """The daemon checks sshd_config at start and repairs a later `sed -i` through its
    watcher; the repair shows up in `status`."""
    box.run(["ssh-keygen", "-A"], check=True)  # sshd -t needs host keys
    write_config(box, """
[drift]
mode = "enforce"
restart_command = ["/bin/true"]

[metrics]
enabled = false
""")
    d = DaemonProc(box, tmp_path / "daemon.log").start()
    try:
        effective = lambda: box.run(["sshd", "-T"], check=True).stdout  # noqa: E731
        wait_for(lambda: "permitrootlogin no" in effective(), 15, what="start-up repair")
        box.run(["sed", "-i", "s/^PermitRootLogin .*/PermitRootLogin yes/",
                 "/etc/ssh/sshd_config"], check=True)
        wait_for(lambda: "permitrootlogin no" in effective(), 15,
                 what="the sed -i to be reverted")
        assert "permitrootlogin" in d.status()["last_drift"]
    finally:
        d.stop()


def scrape(sb: Sandbox, port: int = 9822, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    s = sb.connect(None, "127.0.0.1", port, timeout=5)
    try:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            assert time.monotonic() < deadline, "the metrics answer took too long"
    finally:
        s.close()
    return data.decode()


def test_metrics_status_and_watchdog_wired(box: Sandbox, tmp_path: Path, sshd: Sender) -> None:
    write_config(box, cfg().replace("[metrics]\nenabled = false", "[metrics]\nenabled = true"))
    with NotifyCollector(tmp_path / "notify.sock") as notify:
        d = DaemonProc(box, tmp_path / "daemon.log", notify_socket=tmp_path / "notify.sock",
                       env={"WATCHDOG_USEC": "3000000"})  # pings at least every second
        d.start()
        try:
            sshd.say(*failed("10.9.0.1", 3), "Accepted publickey for admin from 10.9.0.2 "
                     "port 50000 ssh2: ED25519 SHA256:abc")
            wait_for(lambda: banned(box, "10.9.0.1"), 10, what="ban")
            wait_for(lambda: 'sshguardd_bans_total{family="ipv4"} 1.0' in scrape(box), 10,
                     what="the ban in the metrics")
            text = scrape(box)
            assert 'sshguardd_failures_total{kind="bad_password"} 3.0' in text
            assert "sshguardd_logins_accepted_total 1.0" in text
            assert 'sshguardd_bans_active{family="ipv4"} 1.0' in text
            assert "10.9.0.1" not in text  # never an address as a label
            wait_for(lambda: any(f.get("STATUS", "").startswith("1 bans active")
                                 for f in notify.fields()), 15, what="STATUS=1 bans active")
            since = time.monotonic()
            notify.wait("WATCHDOG", "1", since=since, n=3, timeout=15)  # and it goes on
        finally:
            d.stop()


def test_file_backend_bans_from_auth_log(box: Sandbox, tmp_path: Path) -> None:
    write_config(box, cfg() + '\n[source]\nbackend = "file"\nfiles = ["/var/log/auth.log"]\n')
    log = box.path("/var/log/auth.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("Nov 28 10:00:00 host sshd[1]: Failed password for root from 10.10.0.1 "
                   "port 1 ssh2\n" * 5)  # before the first start: not read (the tail)
    d = DaemonProc(box, tmp_path / "daemon.log").start()
    try:
        stamp = time.strftime("%b %d %H:%M:%S")
        with log.open("a") as f:
            for i in range(3):
                f.write(f"{stamp} host sshd[{100 + i}]: Failed password for invalid user x "
                        f"from 10.10.0.2 port {i} ssh2\n")
        wait_for(lambda: banned(box, "10.10.0.2"), 10, what="ban from the file")
        assert not banned(box, "10.10.0.1")
        assert d.status()["source"] == "file"
    finally:
        d.stop()


def test_sshd_T_ports_prefer_listenaddress_ports(tmp_path: Path) -> None:
    from sshguardd.effects.sshd_ports import sshd_T_ports

    fake = tmp_path / "sshd"
    # What OpenSSH 9.2 prints for `Port 22` + `ListenAddress 127.0.0.1:2222`: sshd
    # binds 2222 only, though `port 22` is printed too.
    fake.write_text("#!/bin/sh\n[ \"$1\" = -T ] || exit 2\n"
                    "printf 'port 22\\nlistenaddress 127.0.0.1:2222\\nlistenaddress [::1]:2222\\n'\n")
    fake.chmod(0o755)
    assert sshd_T_ports(fake) == (2222,)
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'no hostkeys available' >&2\nexit 255\n")
    broken.chmod(0o755)
    assert sshd_T_ports(broken) == ()
    assert sshd_T_ports(tmp_path / "missing") == ()


def test_bans_read_together_go_in_one_nft_transaction(box: Sandbox, daemon: DaemonProc,
                                                      sshd: Sender) -> None:
    daemon.start()
    before = daemon.status()
    # Written at once to a quiet daemon: journald wakes readers once for all of them
    # (its notification is coalesced for 250-500 ms), so they are usually read as one
    # batch; on a loaded machine the reader may wake in the middle and read two.
    sshd.say(*[line for i in range(1, 6) for line in failed(f"10.11.0.{i}", 3)])
    wait_for(lambda: all(banned(box, f"10.11.0.{i}") for i in range(1, 6)), 10,
             what="five bans")
    st = daemon.status()
    batches = st["batches"] - before["batches"]
    calls = st["firewall_calls"] - before["firewall_calls"]
    # one nft transaction per batch that decided bans, never one per ban
    assert calls <= batches < 5, (calls, batches)
