"""Allow-only mode against the real kernel: a sandbox's private network namespace, nft's
own transaction, TCP connections from addresses inside and outside the allowed networks,
and an established connection that must survive the switch."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from sshguardd import config
from sshguardd.bans import access, nftjson
from sshguardd.commands.check import host_rows
from sshguardd.demo.sandbox import Sandbox

PORT = 2022
INSIDE4, OUTSIDE4, DST4 = "198.18.7.2", "198.18.9.3", "198.18.7.1"
INSIDE6, OUTSIDE6, DST6 = "2001:db8:7::2", "2001:db8:9::3", "2001:db8:7::1"


def test_uncovered_names_who_would_be_cut_off() -> None:
    sources = ["203.0.113.0/24", "2001:db8:1::/48"]
    peers = ["203.0.113.9", "198.51.100.7", "::ffff:203.0.113.10", "2001:db8:1:2::5",
             "2001:db8:2::1", "127.0.0.1", "::1", "bastion.example.com", "198.51.100.7"]
    assert access.uncovered(sources, peers) == ["198.51.100.7", "2001:db8:2::1"]
    assert access.uncovered([], ["127.0.0.5"]) == []  # loopback is always allowed


def test_networks_always_hold_loopback_and_are_collapsed() -> None:
    v4, v6 = access.networks(["10.0.0.0/9", "10.128.0.0/9", "10.0.0.7"])
    assert [str(n) for n in v4] == ["10.0.0.0/8", "127.0.0.0/8"]
    assert [str(n) for n in v6] == ["::1/128"]


@pytest.fixture
def box(tmp_path: Path):
    with Sandbox(tmp_path, etc_overlay=False, journald=False) as sb:
        for addr in (INSIDE4, OUTSIDE4, DST4, INSIDE6, OUTSIDE6, DST6):
            sb.add_address(addr)
        yield sb


def _apply(sb: Sandbox, layout: nftjson.Layout, sources: list[str]) -> None:
    payload = nftjson.setup(dataclasses.replace(layout, access=tuple(sources)))
    sb.run(["nft", "-j", "-f", "-"], input=json.dumps(payload), check=True)


def _listener(sb: Sandbox, family: int, addr: str) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, PORT))
        s.listen(16)
        return s
    return sb.in_netns(make)


class _Echo:
    """Echo every connection on `server` until stop(); all threads joined on stop."""

    def __init__(self, server: socket.socket) -> None:
        self.server = server
        server.settimeout(0.1)
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._loop)]
        self.threads[0].start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            while not self.done.is_set():
                try:
                    data = conn.recv(100)
                except TimeoutError:
                    continue
                if not data:
                    return
                conn.sendall(data)

    def _loop(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._handle, args=(conn,))
            self.threads.append(t)
            t.start()

    def stop(self) -> None:
        self.done.set()
        for t in list(self.threads):
            t.join()
        self.server.close()


def _reaches(sb: Sandbox, src: str, dst: str) -> bool:
    try:
        sock = sb.connect(src, dst, PORT, timeout=1.0)
    except TimeoutError:
        return False
    with sock:
        sock.sendall(b"hi")
        return sock.recv(10) == b"hi"


@pytest.mark.e2e
def test_only_allowed_sources_get_new_connections_and_sessions_survive(box: Sandbox) -> None:
    servers = [_Echo(_listener(box, socket.AF_INET, DST4)),
               _Echo(_listener(box, socket.AF_INET6, DST6))]
    try:
        _switch(box)
    finally:
        for s in servers:
            s.stop()


def _switch(box: Sandbox) -> None:
    layout = nftjson.Layout(ports=(PORT,))
    _apply(box, layout, [])
    # before: everybody; one session from outside stays open across the switch
    assert _reaches(box, OUTSIDE4, DST4) and _reaches(box, OUTSIDE6, DST6)
    session = box.connect(OUTSIDE4, DST4, PORT, timeout=2.0)
    _apply(box, layout, ["198.18.7.0/24", "2001:db8:7::/48"])
    assert _reaches(box, INSIDE4, DST4) and _reaches(box, INSIDE6, DST6)
    assert not _reaches(box, OUTSIDE4, DST4) and not _reaches(box, OUTSIDE6, DST6)
    assert _reaches(box, "127.0.0.1", DST4)  # loopback always
    session.sendall(b"still")  # established: untouched
    assert session.recv(10) == b"still"
    session.close()
    listing = json.loads(box.run(["nft", "-j", "list", "chain", "inet", "sshguardd",
                                  nftjson.CHAIN], check=True).stdout)
    counts = access.dropped(listing)
    assert counts["ipv4"] >= 1 and counts["ipv6"] >= 1, counts
    # the periodic check accepts the table as setup() made it, and notices the mode's
    # rules gone (nft flush chain) or left over after it was switched off
    on = dataclasses.replace(layout, access=("198.18.7.0/24", "2001:db8:7::/48"))
    table = json.loads(box.run(["nft", "-j", "-t", "list", "table", "inet", "sshguardd"],
                               check=True).stdout)
    assert nftjson.check_listing(on, table) is None
    assert nftjson.check_listing(layout, table) == "allow-only rules left from before"
    # a ban still applies inside the allowed networks (ban rules come first)
    box.run(["nft", "add", "element", "inet", "sshguardd", "addr4",
             f"{{ {INSIDE4} timeout 1m }}"], check=True)
    assert not _reaches(box, INSIDE4, DST4)
    # off again: one transaction removes the rules
    _apply(box, layout, [])
    assert _reaches(box, OUTSIDE4, DST4)
    chain = box.run(["nft", "list", "chain", "inet", "sshguardd", nftjson.CHAIN],
                    check=True).stdout
    assert "access" not in chain and "@allow" not in chain, chain


def test_a_bad_transaction_leaves_the_old_rules(box: Sandbox) -> None:
    layout = nftjson.Layout(ports=(PORT,))
    _apply(box, layout, ["198.18.7.0/24"])
    before = box.run(["nft", "list", "table", "inet", "sshguardd"], check=True).stdout
    payload = nftjson.setup(dataclasses.replace(layout, access=("198.18.8.0/24",)))
    payload["nftables"].append({"add": {"rule": {"family": "inet", "table": "sshguardd",
                                                 "chain": "nope", "expr": []}}})
    bad = subprocess.run(box._nsenter(["nft", "-j", "-f", "-"]), input=json.dumps(payload),
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert box.run(["nft", "list", "table", "inet", "sshguardd"], check=True).stdout == before


@pytest.mark.e2e
def test_ssh_peers_are_read_from_the_kernel(box: Sandbox) -> None:
    from sshguardd.effects.sessions import ssh_peers

    servers = [_Echo(_listener(box, socket.AF_INET, DST4)),
               _Echo(_listener(box, socket.AF_INET6, DST6))]
    try:
        a = box.connect(OUTSIDE4, DST4, PORT, timeout=2.0)
        b = box.connect(INSIDE6, DST6, PORT, timeout=2.0)
        proc = f"/proc/{box.pid}"  # PID/net/tcp: the sandbox holder's network namespace
        peers = ssh_peers([PORT], proc)
        assert OUTSIDE4 in peers and INSIDE6 in peers, peers
        assert DST4 not in peers  # the server side of each connection is not a peer
        assert ssh_peers([PORT + 1], proc) == []
        assert access.uncovered(["198.18.7.0/24", "2001:db8:7::/48"], peers) == [OUTSIDE4]
        # `sshguardd check` says the same before the mode is switched on
        cfg = config.Config.model_validate({
            "access": {"sources": ["198.18.7.0/24", "2001:db8:7::/48"]},
            "updates": {"enabled": False}, "firewall": {"ports": [PORT]}})
        [row] = host_rows(cfg, proc=proc)
        assert not row.ok and row.value == OUTSIDE4, row
        a.close()
        b.close()
    finally:
        for s in servers:
            s.stop()
