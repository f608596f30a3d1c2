"""Allow-only mode for the SSH port: nft JSON for it, and the guard that keeps the admin in.

With `[access] sources` set, new connections to the protected ports are accepted only from
those networks (and loopback, always); bans still apply inside them, because the ban rules
come first in the chain. Only connection attempts (TCP SYN without ACK) are dropped, so
switching the mode on never cuts a session that is already open.

A security group does the same one hop earlier, but the host never sees it: a changed
group or a second interface (a new ENI, a VPN) opens SSH to the world unnoticed. The rules
here hold whatever the network in front does.

The guard: before the mode is switched on or its networks changed, every current SSH
session's source and every recent admin login must be inside the networks; otherwise the
change is refused (`uncovered` names who would be cut off). Pure: the addresses arrive as
data from the effects side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = ("127.0.0.0/8", "::1/128")
SETS = ("allow4", "allow6")


def networks(sources: Iterable[str]) -> tuple[list[Network], list[Network]]:
    """The configured sources plus loopback, by family, collapsed (nft refuses overlapping
    elements in an interval set)."""
    nets = [ipaddress.ip_network(s, strict=False) for s in (*LOOPBACK, *sources)]
    v4 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 4))
    v6 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 6))
    return v4, v6  # type: ignore[return-value]


def _elem(net: Network) -> dict[str, object]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def commands(family: str, table_name: str, chain: str, ports: Sequence[int],
             sources: Sequence[str]) -> list[dict[str, object]]:
    """Commands that `nftjson.setup` appends to its transaction (after the ban rules): the
    allow sets, refilled, and one drop rule per family for new connections from
    elsewhere. With no sources nothing: setup() flushed the chain, so the mode is off
    (allow sets left from an earlier setup stay, unreferenced: setup never deletes)."""
    table = {"family": family, "table": table_name}
    cmds: list[dict[str, object]] = []
    if not sources:
        return cmds
    v4, v6 = networks(sources)
    for name, nets in (("allow4", v4), ("allow6", v6)):
        spec = {**table, "name": name, "type": _type(name), "flags": ["interval"]}
        cmds += [{"add": {"set": spec}}, {"flush": {"set": {**table, "name": name}}}]
        if nets:
            cmds.append({"add": {"element": {**table, "name": name,
                                             "elem": [_elem(n) for n in nets]}}})
    for name in SETS:
        proto = "ip" if name.endswith("4") else "ip6"
        cmds.append({"add": {"rule": {**table, "chain": chain, "comment": f"access {name}",
                                      "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": port_match(ports)}},
            # A new connection is a SYN without ACK. Stateless on purpose: a `ct state new`
            # match would also drop the first packets of sessions opened before conntrack
            # was hooked into this namespace (seen here: enabling the mode cut them).
            {"match": {"op": "==", "left": {"&": [
                {"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]},
                "right": "syn"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "saddr"}},
                       "right": "@" + name}},
            {"counter": None},
            {"drop": None},
        ]}}})
    return cmds


def _type(name: str) -> str:
    return "ipv4_addr" if name.endswith("4") else "ipv6_addr"


def port_match(ports: Sequence[int]) -> int | dict[str, list[int]]:
    """The right-hand side of a `tcp dport` match: one port, or an anonymous set."""
    return ports[0] if len(ports) == 1 else {"set": sorted(set(ports))}


def uncovered(sources: Sequence[str], peers: Iterable[str]) -> list[str]:
    """The peers (current sessions' addresses, recent admin logins' addresses or /64s)
    that the allow networks would not let in again; empty when the change is safe."""
    v4, v6 = networks(sources)
    out: list[str] = []
    for peer in peers:
        try:
            net = ipaddress.ip_network(peer.split("%", 1)[0], strict=False)
        except ValueError:
            continue  # a host name from UseDNS: cannot be judged, and is not an address
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen == 128 \
                and net.network_address.ipv4_mapped:
            net = ipaddress.ip_network(net.network_address.ipv4_mapped)
        allowed = v4 if net.version == 4 else v6
        if not any(net.subnet_of(n) for n in allowed):  # type: ignore[arg-type]
            name = str(net.network_address) if net.num_addresses == 1 else str(net)
            if name not in out:
                out.append(name)
    return out


def dropped(chain_listing: dict[str, Any]) -> dict[str, int]:
    """Packets dropped by the access rules, by family, from `nft -j list chain ...`."""
    out = {"ipv4": 0, "ipv6": 0}
    for item in chain_listing.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or not str(rule.get("comment", "")).startswith("access "):
            continue
        fam = "ipv4" if rule["comment"].endswith("4") else "ipv6"
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                out[fam] += int(expr["counter"].get("packets", 0))
    return out
