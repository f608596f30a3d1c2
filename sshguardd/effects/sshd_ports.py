"""Which TCP ports sshd listens on: what the firewall's drop rules must cover.

`sshd -T` alone is not the answer: `ListenAddress 127.0.0.1:2222` makes sshd listen on
2222 while `-T` still prints `port 22`, and a changed `Port` only takes effect when sshd
restarts. So the listening sockets of the running sshd processes are the truth (their
socket inodes under /proc/PID/fd, looked up in /proc/net/tcp and tcp6 in LISTEN state);
`sshd -T`'s port and listenaddress lines are the cross-check and the fallback when no
sshd runs (yet).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

LISTEN = "0A"   # TCP_LISTEN in /proc/net/tcp's st column (include/net/tcp_states.h)


def sshd_T_ports(sshd: Path | str = "/usr/sbin/sshd", timeout: float = 10.0) -> tuple[int, ...]:
    """The ports `sshd -T` says it listens on: every `port` line and the port of every
    `listenaddress HOST:PORT` line (which overrides Port for that address). Empty when
    sshd cannot say (not installed, config rejected)."""
    argv = [str(sshd), "-T"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed: %s", argv, exc)
        return ()
    if out.returncode != 0:
        log.warning("%s exited %d: %s", argv, out.returncode, out.stderr.strip())
        return ()
    ports: list[int] = []
    listen: list[int] = []
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "port" and value.isdigit():
            ports.append(int(value))
        elif key == "listenaddress":
            # "[::1]:2222", "127.0.0.1:2222", "0.0.0.0:22" (sshd -T always adds the port)
            host_port = value.split()[0]
            port = host_port.rsplit(":", 1)[-1]
            if port.isdigit():
                listen.append(int(port))
    # With ListenAddress lines sshd binds exactly those; Port only fills in addresses
    # given without a port, and -T prints them with it already.
    return tuple(dict.fromkeys(listen or ports))


def _socket_inodes(pid: str, proc: Path) -> set[str]:
    out: set[str] = set()
    try:
        names = os.listdir(proc / pid / "fd")
    except OSError:
        return out
    for fd in names:
        try:
            target = os.readlink(proc / pid / "fd" / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def sshd_pids(proc: Path = Path("/proc"), names: Iterable[str] = ("sshd",)) -> list[str]:
    """Pids whose comm is sshd (the listener and its per-connection children: only the
    listener holds LISTEN sockets, so the children add nothing but a few readlinks)."""
    wanted = set(names)
    pids = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            comm = (proc / entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in wanted:
            pids.append(entry)
    return pids


def listening_ports(pids: Iterable[str], proc: Path = Path("/proc")) -> tuple[int, ...]:
    """TCP ports in LISTEN state on sockets the given processes hold, sorted. Each pid's
    own /proc/PID/net is read: /proc/net shows the reader's network namespace."""
    inodes: dict[str, set[str]] = {}
    for pid in pids:
        found = _socket_inodes(pid, proc)
        if found:
            inodes[pid] = found
    by_netns: dict[str, tuple[str, set[str]]] = {}
    for pid, mine in inodes.items():
        try:
            ns = os.readlink(proc / pid / "ns" / "net")
        except OSError:
            ns = pid
        by_netns.setdefault(ns, (pid, set()))[1].update(mine)
    ports: set[int] = set()
    for pid, mine in by_netns.values():   # each namespace's tables read once
        ports |= _listening(proc / pid / "net", mine)
    return tuple(sorted(ports))


def _listening(net: Path, inodes: set[str]) -> set[int]:
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(f) > 9 and f[3] == LISTEN and f[9] in inodes:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


class SshdPorts:
    """`ports() -> tuple[int, ...]`: what the running sshd listens on, cross-checked with
    `sshd -T`; 22 when neither can tell. Both are protected when they disagree (sshd not
    restarted since a Port change, say): dropping a banned source's packets to a port
    nobody listens on costs nothing, missing the one sshd moves to would."""

    def __init__(self, sshd: Path | str = "/usr/sbin/sshd", proc: Path | str = "/proc",
                 names: Iterable[str] = ("sshd",)) -> None:
        self.sshd = sshd
        self.proc = Path(proc)
        self.names = tuple(names)

    def __call__(self) -> tuple[int, ...]:
        live = listening_ports(sshd_pids(self.proc, self.names), self.proc)
        configured = sshd_T_ports(self.sshd)
        if live and configured and set(live) != set(configured):
            log.warning("sshd listens on port(s) %s but its config says %s (not restarted "
                        "since a change?); protecting both",
                        ", ".join(map(str, live)), ", ".join(map(str, configured)))
        return tuple(sorted({*live, *configured})) or (22,)
