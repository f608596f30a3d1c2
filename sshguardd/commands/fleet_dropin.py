"""`sshguardd fleet drop-in`: the systemd drop-in that lets the daemon reach the fleet
engine. The unit confines the daemon to localhost (`IPAddressDeny=any`,
`IPAddressAllow=localhost`), so with fleet mode on a remote engine (ElastiCache, a
Valkey on another host) every connection would fail with EPERM until a drop-in allows
the engine, and the DNS servers that resolve its name, in. Printed, never written: the
admin reads it, prefers the cache subnets' CIDRs where nodes move, and installs it."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from sshguardd import cli, config
from sshguardd.effects import config_file

DROP_IN = "/etc/systemd/system/sshguardd.service.d/fleet.conf"
RESOLV_CONF = Path("/etc/resolv.conf")
Resolver = Callable[[str, int], Sequence[str]]


def register(verbs: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = verbs.add_parser("drop-in", help="print the systemd drop-in that lets the daemon "
                         "reach the fleet engine (the unit allows only localhost)")
    cli.add_config_arg(d)
    d.add_argument("--allow", metavar="CIDR", action="append", default=[],
                   help="allow these networks instead of the engine's current addresses "
                   "(the cache subnets: ElastiCache moves nodes on failover); repeatable")
    d.set_defaults(func=run, verb="fleet drop-in")


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def nameservers(text: str) -> list[str]:
    """The non-loopback `nameserver` addresses of a resolv.conf text (a local stub
    resolver such as systemd-resolved's 127.0.0.53 is allowed by the unit already)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%", 1)[0])
            except ValueError:
                continue
            if not addr.is_loopback and str(addr) not in out:
                out.append(str(addr))
    return out


def drop_in(fleet: config.FleetConfig, allow: Sequence[str] = (),
            resolve: Resolver = _resolve, resolv_conf: str = "") -> str | None:
    """The drop-in's text, or None when the unit already lets the daemon reach the
    engine (a Unix socket, or a loopback address). Raises OSError when the engine's name
    does not resolve and ValueError for a bad --allow network."""
    url = urlsplit(fleet.url)
    if url.scheme == "unix":
        return None
    host = url.hostname or "localhost"
    port = url.port or 6379
    nets = [str(ipaddress.ip_network(n, strict=False)) for n in allow]
    dns: list[str] = []
    if not nets:
        addrs = resolve(host, port)
        if all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addrs):
            return None
        nets = list(addrs)
        try:
            ipaddress.ip_address(host)
        except ValueError:  # a name: resolving it needs the DNS servers too
            dns = nameservers(resolv_conf)
    lines = [f"# {DROP_IN}",
             ("# sshguardd's unit allows only localhost (IPAddressDeny=any, "
              "IPAddressAllow=localhost);"),
             f"# fleet mode needs the engine at {host}:{port}"
             + (", and the DNS servers that resolve it." if dns else "."),
             "# The addresses below are the engine's as of now: where nodes move (ElastiCache",
             "# failover, scaling) allow the cache subnets' CIDRs instead (--allow CIDR).",
             "[Service]",
             "IPAddressAllow=" + " ".join([*nets, *dns])]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    cfg = config_file.load(args.config)
    try:
        resolv = RESOLV_CONF.read_text(errors="replace")
    except OSError:
        resolv = ""
    try:
        text = drop_in(cfg.fleet, args.allow, resolv_conf=resolv)
    except ValueError as exc:
        print(f"sshguardd: --allow: {exc}", file=sys.stderr)
        return cli.EX_USAGE
    except OSError as exc:
        print(f"sshguardd: cannot resolve the engine of fleet.url {cfg.fleet.url}: {exc}; "
              "give its networks with --allow CIDR", file=sys.stderr)
        return cli.EX_UNAVAILABLE
    if text is None:
        print(f"# fleet.url {cfg.fleet.url} is reached through localhost or a Unix "
              "socket, which the unit allows: no drop-in needed")
        return cli.EX_OK
    print(text, end="")
    print("# then: systemctl daemon-reload && systemctl restart sshguardd", file=sys.stderr)
    return cli.EX_OK
