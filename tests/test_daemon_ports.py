"""The ports the drop rules cover come from where a real sshd (OpenSSH, in the sandbox)
listens, not from `sshd -T`'s `port` lines alone.

Before: with `ListenAddress 127.0.0.1:2222` sshd listened on 2222 and sshguardd dropped 22
(ports were read once at start from `port` lines); a move of sshd to another port was
never followed, not even on SIGHUP."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
[ban]
max_retry = 3
allow = ["10.99.0.0/16"]

[drift]
enabled = false

[metrics]
enabled = false
"""


def protected_ports(sb: Sandbox) -> set[int]:
    out = sb.run(["nft", "-j", "list", "chain", "inet", "sshguardd", "input"], check=True)
    ports: set[int] = set()
    for item in json.loads(out.stdout)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule["expr"]:
            match = expr.get("match", {})
            if match.get("left", {}).get("payload", {}).get("field") == "dport":
                right = match["right"]
                ports |= set(right["set"]) if isinstance(right, dict) else {right}
    return ports


@pytest.fixture
def daemon(sandbox: Sandbox, tmp_path: Path) -> Iterator[DaemonProc]:
    d = DaemonProc(sandbox, tmp_path / "daemon.log")
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def test_ports_follow_sshd_listen_address_and_its_moves(sandbox: Sandbox,
                                                        daemon: DaemonProc) -> None:
    conf = sandbox.path("/etc/ssh/sshd_config")
    conf.write_text(conf.read_text() + "\nListenAddress 127.0.0.1:2222\n")
    sshd = sandbox.start_sshd(port=2222, listen=("127.0.0.1:2222",))
    write_config(sandbox, CONFIG)
    daemon.start()
    assert protected_ports(sandbox) == {2222}, daemon.log()

    # A banned source cannot reach sshd on 2222; another can.
    assert daemon.request({"cmd": "ban", "address": "127.0.0.2"})["ok"]
    ok = sandbox.connect("127.0.0.3", "127.0.0.1", 2222, timeout=5)
    ok.close()
    with pytest.raises((TimeoutError, socket.timeout)):
        sandbox.connect("127.0.0.2", "127.0.0.1", 2222, timeout=1.5).close()

    # sshd moves to 2223 (restarted with another ListenAddress): SIGHUP follows it, and
    # keeps 2222 while sshd's config still names it.
    sandbox.signal(sshd, signal.SIGTERM)
    sshd.wait(10)
    sshd = sandbox.start_sshd(port=2223, listen=("127.0.0.1:2223",))
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: protected_ports(sandbox) == {2222, 2223}, 15,
             what="the drop rules to cover the port sshd moved to")
    assert "sshd listens on port(s) 2222, 2223" in daemon.log()
    with pytest.raises((TimeoutError, socket.timeout)):
        sandbox.connect("127.0.0.2", "127.0.0.1", 2223, timeout=1.5).close()
    sandbox.signal(sshd, signal.SIGTERM)
    sshd.wait(10)
