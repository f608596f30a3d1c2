"""Who is connected to sshd right now: the peers of established TCP connections to the
protected ports, read from the kernel's /proc/net/tcp and tcp6 (no subprocess, no
netlink). The allow-only guard must not cut these off."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

ESTABLISHED = "01"


def _address(hexaddr: str) -> str:
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(words)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def ssh_peers(ports: Iterable[int], proc: str | Path = "/proc") -> list[str]:
    """Remote addresses of established connections whose local port is in `ports`."""
    wanted = set(ports)
    peers: list[str] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (Path(proc) / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != ESTABLISHED:
                continue
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) not in wanted:
                continue
            peer = _address(remote.rsplit(":", 1)[0])
            if peer not in peers:
                peers.append(peer)
    return peers
