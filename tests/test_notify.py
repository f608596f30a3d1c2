"""sd_notify over a real AF_UNIX datagram socket, as systemd's manager would receive it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshguardd.daemon.notify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    return dict(line.split("=", 1) for line in data.splitlines())


def test_lifecycle_messages(manager: socket.socket, tmp_path: Path) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        assert n.enabled
        assert n.ready("3 bans active") is True
        assert fields(manager) == {"READY": "1", "STATUS": "3 bans active"}
        n.status("2 bans active,\nlast drift 10:00")
        # A newline in STATUS= would start a bogus field: it is folded into one line.
        assert fields(manager) == {"STATUS": "2 bans active, last drift 10:00"}
        n.watchdog()
        assert fields(manager) == {"WATCHDOG": "1"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        n.reloading()
        got = fields(manager)
        assert got["RELOADING"] == "1"
        assert int(got["MONOTONIC_USEC"]) >= before // 1000
        n.stopping("stopping")
        assert fields(manager) == {"STOPPING": "1", "STATUS": "stopping"}
        n.extend_timeout(2.5)
        assert fields(manager) == {"EXTEND_TIMEOUT_USEC": "2500000"}
    finally:
        n.close()


def test_abstract_socket() -> None:
    name = f"sshguardd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
    try:
        n.ready()
        assert fields(sock) == {"READY": "1"}
    finally:
        n.close()
        sock.close()


def test_noop_without_socket() -> None:
    n = Notifier(environ={})
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


def test_send_failure_is_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    try:
        assert n.watchdog() is False
        assert n.watchdog() is False
        # Loud once, then quiet: a missing socket would otherwise flood the log.
        assert [r.levelname for r in caplog.records].count("WARNING") == 1
    finally:
        n.close()


def test_a_stalled_receiver_cannot_wedge_the_caller(manager: socket.socket,
                                                   tmp_path: Path) -> None:
    # Nobody reads `manager`: once its queue is full, sends must give up, not block.
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "notify")}, send_timeout=0.2)
    try:
        sent = 0
        while n.watchdog():  # the queue fills up (net.unix.max_dgram_qlen datagrams)
            sent += 1
            assert sent < 100_000, "the receiver's queue never filled"
        assert sent > 0
        t0 = time.monotonic()
        assert n.watchdog() is False  # still full: gives up after the timeout
        assert 0.1 < time.monotonic() - t0 < 5
        fields(manager)  # the manager catches up: the next send goes through again
        assert n.watchdog() is True
    finally:
        n.close()


@pytest.mark.parametrize("env,expected", [
    ({"WATCHDOG_USEC": "20000000"}, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(environ=env).watchdog_interval() == expected


def test_reads_process_environment(manager: socket.socket, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "5000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    try:
        assert n.watchdog_interval() == 5.0
        n.watchdog()
        assert fields(manager) == {"WATCHDOG": "1"}
    finally:
        n.close()
