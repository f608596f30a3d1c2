"""Allow-only mode and the update watch through the real `sshguardd run` in a sandbox with
a real sshd: new connections from outside [access] sources are dropped, from inside they
reach sshd; a config that would cut off a current SSH session is refused (lockout guard)
and the mode stays off; `status` reports the update watch's finding."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

INSIDE, OUTSIDE, HOST = "198.18.7.2", "198.18.9.3", "198.18.7.1"

CONFIG = """
[drift]
enabled = false

[metrics]
enabled = false

[firewall]
ports = [22]

[access]
sources = [{sources}]
"""


@pytest.fixture
def box(sandbox: Sandbox) -> Sandbox:
    for addr in (INSIDE, OUTSIDE, HOST):
        sandbox.add_address(addr)
    sandbox.start_sshd(listen=("127.0.0.1", HOST))
    return sandbox


def _banner(sb: Sandbox, src: str) -> bool:
    """A new TCP connection from `src` gets sshd's banner."""
    try:
        sock = sb.connect(src, HOST, 22, timeout=1.5)
    except TimeoutError:
        return False
    with sock:
        try:
            return sock.recv(64).startswith(b"SSH-")
        except TimeoutError:
            return False


def _chain(sb: Sandbox) -> str:
    return sb.run(["nft", "list", "chain", "inet", "sshguardd", "input"], check=True).stdout


def test_only_allowed_sources_reach_sshd(box: Sandbox, tmp_path: Path) -> None:
    write_config(box, CONFIG.format(sources='"198.18.7.0/24"'))
    d = DaemonProc(box, tmp_path / "daemon.log").start()
    try:
        wait_for(lambda: "access allow4" in _chain(box), 20, what="the allow-only rules")
        assert _banner(box, INSIDE) and _banner(box, "127.0.0.1")
        assert not _banner(box, OUTSIDE)
        st = d.status()
        assert st["access"]["sources"] == ["198.18.7.0/24"], st["access"]
        # `nft flush chain` on ours: the periodic check (30 s) puts the mode back too
        box.run(["nft", "flush", "chain", "inet", "sshguardd", "input"], check=True)
        assert _banner(box, OUTSIDE)
        wait_for(lambda: "access allow4" in _chain(box), 75, what="the repaired rules")
        assert not _banner(box, OUTSIDE)
        # the update watch reports what dpkg has installed
        installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "openssh-server"],
                                   capture_output=True, text=True, check=True).stdout
        up = wait_for(lambda: d.status().get("updates"), 90, what="the first update check")
        assert up["installed"] == installed and up["error"] is None, up
        # reload with the mode off: one transaction, rules gone, outside reaches sshd
        write_config(box, CONFIG.format(sources=""))
        d.send_signal(1)
        wait_for(lambda: "access" not in _chain(box), 20, what="the rules to go on reload")
        assert _banner(box, OUTSIDE)
    finally:
        d.stop()


def test_a_config_that_would_cut_a_session_is_refused(box: Sandbox, tmp_path: Path) -> None:
    session = box.connect(OUTSIDE, HOST, 22, timeout=5)  # the admin's open SSH connection
    try:
        assert session.recv(64).startswith(b"SSH-")
        write_config(box, CONFIG.format(sources='"198.18.7.0/24"'))
        d = DaemonProc(box, tmp_path / "daemon.log").start()
        try:
            st = d.status()
            assert st["access"]["sources"] == [] and OUTSIDE in st["access"][
                "refused_would_cut"], st["access"]
            assert "access" not in _chain(box)
            assert _banner(box, OUTSIDE)
            assert "lockout guard refused a repair" in d.log() or \
                "would shut out" in d.log(), d.log()
        finally:
            d.stop()
    finally:
        session.close()


def test_sessions_are_read_from_this_namespace(box: Sandbox) -> None:
    # The guard's source of truth is the kernel's table of the daemon's namespace: an
    # established connection appears there with its peer address.
    path = Path(f"/proc/{box.pid}/net/tcp")
    session = box.connect(OUTSIDE, HOST, 22, timeout=5)
    with session:
        text = path.read_text()
    want = socket.inet_aton(OUTSIDE)[::-1].hex().upper()
    assert want in text
