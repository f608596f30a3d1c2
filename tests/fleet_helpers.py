"""A real redis-server for the fleet tests, run by the test itself (CI installs Debian's
redis-server package; its own service never starts), and a private net namespace with nft.

The server runs in the test's own network namespace (scripts/test.sh runs pytest inside
one), on a Unix socket or a given address, with no persistence (--save '' --appendonly
no) and users from an ACL file written from `fleet_transport.acl_rule`, the same lines
docs/fleet.md tells admins to use.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from sshguardd.demo.sandbox import wait_for
from sshguardd.effects.fleet_transport import FleetTransport, acl_rule
from sshguardd.effects.nft_runner import NftFirewall

ADMIN_PASSWORD = "admin-secret"


def password(host: str) -> str:
    return f"pw-{host}-secret"


class RedisServer:
    """redis-server on `bind` (a Unix socket path, or "ADDR:PORT"), with an ACL user per
    host. start()/kill()/close(); kill() is SIGKILL (an engine outage)."""

    def __init__(self, workdir: Path, hosts: Sequence[str], bind: str | None = None,
                 hashtag: str = "fleet", extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.hosts = list(hosts)
        self.hashtag = hashtag
        self.socket = str(workdir / "redis.sock") if bind is None else None
        self.bind = bind
        self.aclfile = workdir / "users.acl"
        lines = ["user default off", f"user admin on >{ADMIN_PASSWORD} ~* &* +@all"]
        lines += [f"user {acl_rule(h, hashtag, password(h))}" for h in self.hosts]
        self.aclfile.write_text("\n".join(lines) + "\n")
        self.extra = list(extra)   # more redis-server arguments (TLS ports and files)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "redis.log"

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}"
        return f"redis://{self.bind}/0"

    def start(self) -> RedisServer:
        argv = ["redis-server", "--save", "", "--appendonly", "no", "--aclfile",
                str(self.aclfile), "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.log)]
        if self.socket is not None:
            argv += ["--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "600"]
        else:
            assert self.bind is not None
            addr, port = self.bind.rsplit(":", 1)
            argv += ["--bind", addr, "--port", port]
        argv += self.extra
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        admin = self.admin()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log.read_text()}")
            try:
                return bool(admin.ping())
            except redis.exceptions.ConnectionError:
                return False
        try:
            wait_for(up, 10, what="redis-server to answer")
        finally:
            admin.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.socket is not None and os.path.exists(self.socket):
            os.unlink(self.socket)

    close = kill

    def client(self, user: str = "admin", **kw: Any) -> redis.Redis:
        pw = ADMIN_PASSWORD if user == "admin" else password(user)
        if self.socket is not None:
            return redis.Redis(unix_socket_path=self.socket, username=user, password=pw,
                               **kw)
        addr, port = (self.bind or "").rsplit(":", 1)
        return redis.Redis(host=addr, port=int(port), username=user, password=pw, **kw)

    admin = client

    def transport(self, host: str, **kw: Any) -> FleetTransport:
        return FleetTransport(self.url, host, hashtag=self.hashtag, username=host,
                              password=password(host), **kw)


class NetNs:
    """A private network namespace held open by a sleeping process, with nft in it."""

    def __init__(self) -> None:
        # --kill-child: the sleeper dies with unshare, so nothing outlives the test.
        self.proc = subprocess.Popen(["unshare", "--net", "--fork", "--kill-child", "--",
                                      "sleep", "infinity"], stdin=subprocess.DEVNULL)
        mine = os.readlink("/proc/self/ns/net")
        wait_for(lambda: self._ns() not in (None, mine), what="the new net namespace")

    def _ns(self) -> str | None:
        try:
            return os.readlink(f"/proc/{self.proc.pid}/ns/net")
        except OSError:
            return None

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--", *argv]

    def firewall(self, **kw: Any) -> NftFirewall:
        return NftFirewall(nft=self.argv("/usr/sbin/nft"), **kw)

    def elements(self, table: str = "sshguardd") -> set[str]:
        out = subprocess.run(self.argv("/usr/sbin/nft", "-j", "list", "table", "inet", table),
                             capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            return set()
        found: set[str] = set()
        for item in json.loads(out.stdout)["nftables"]:
            for el in (item.get("set") or {}).get("elem", []):
                body = el.get("elem", {}).get("val", el) if isinstance(el, dict) else el
                if isinstance(body, dict) and "prefix" in body:
                    found.add(f"{body['prefix']['addr']}/{body['prefix']['len']}")
                else:
                    found.add(str(body))
        return found

    def close(self) -> None:
        # unshare --fork ignores SIGTERM while it waits; --kill-child takes the sleeper
        # with it when unshare itself is killed.
        self.proc.kill()
        self.proc.wait(10)
