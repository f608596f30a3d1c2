"""Reaching a remote engine from inside the unit (`IPAddressDeny=any`,
`IPAddressAllow=localhost`): `sshguardd fleet drop-in` prints the drop-in that allows the
engine (and the DNS servers that resolve its name), and an engine that cannot be reached
at all says where to look."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_helpers import write_config
from fleet_helpers import NetNs
from sshguardd import config
from sshguardd.commands.fleet_dropin import drop_in, nameservers
from sshguardd.demo.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent


def fleet(url: str) -> config.FleetConfig:
    return config.parse(f'[fleet]\nenabled = true\nurl = "{url}"\n').fleet


def fixed(*addrs: str) -> Callable[[str, int], list[str]]:
    return lambda host, port: list(addrs)


def allow_line(text: str | None) -> str:
    assert text is not None
    lines = [line for line in text.splitlines() if line.startswith("IPAddressAllow=")]
    assert len(lines) == 1 and "[Service]" in text, text
    return lines[0]


def test_the_drop_in_allows_the_engine_and_its_resolvers() -> None:
    resolv = "nameserver 10.0.0.2\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
    assert nameservers(resolv) == ["10.0.0.2", "fe80::1"]
    text = drop_in(fleet("rediss://my-cache.example:6380/0"), resolve=fixed("10.0.8.17"),
                   resolv_conf=resolv)
    assert allow_line(text) == "IPAddressAllow=10.0.8.17 10.0.0.2 fe80::1"
    assert "my-cache.example:6380" in (text or "")
    # an address literal needs no DNS; --allow replaces the engine's current addresses
    assert allow_line(drop_in(fleet("redis://10.0.8.17:6379/0"), resolve=fixed("10.0.8.17"),
                              resolv_conf=resolv)) == "IPAddressAllow=10.0.8.17"
    assert allow_line(drop_in(fleet("rediss://my-cache.example:6379/0"),
                              allow=["10.0.8.0/24", "10.0.9.7"], resolve=fixed("10.0.8.17"),
                              resolv_conf=resolv)) == "IPAddressAllow=10.0.8.0/24 10.0.9.7/32"
    # what the unit allows already needs nothing
    assert drop_in(fleet("unix:///run/valkey/valkey.sock")) is None
    assert drop_in(fleet("redis://localhost:6379/0"), resolve=fixed("127.0.0.1", "::1")) is None
    with pytest.raises(ValueError):
        drop_in(fleet("redis://10.0.8.17:6379/0"), allow=["10.0.8.0/33"])


def test_fleet_drop_in_from_the_command_line(sandbox: Sandbox) -> None:
    box = sandbox
    with box.path("/etc/hosts").open("a") as f:
        f.write("198.18.0.9 my-cache.example\n")
    box.path("/etc/resolv.conf").write_text("nameserver 198.18.0.2\nnameserver 127.0.0.53\n")
    write_config(box, '[fleet]\nenabled = true\nurl = "rediss://my-cache.example:6379/0"\n')
    r = box.run(["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "sshguardd", "fleet",
                 "drop-in", "--config", "/etc/sshguardd/config.toml"])
    assert r.returncode == 0, r.stderr
    assert allow_line(r.stdout) == "IPAddressAllow=198.18.0.9 198.18.0.2"
    assert r.stdout.startswith("# /etc/systemd/system/sshguardd.service.d/fleet.conf\n")
    assert "daemon-reload" in r.stderr


PROBE = """
from sshguardd.effects.fleet_transport import FleetTransport, FleetUnavailable
for url in ("redis://198.18.99.1:6379/0", "redis://127.0.0.1:6399/0"):
    try:
        FleetTransport(url, "h1", socket_timeout=1.0).ping()
    except FleetUnavailable as exc:
        print(exc)
"""


def test_an_engine_that_cannot_be_reached_says_where_to_look() -> None:
    """A SYN that gets no answer (as behind a closed security group; the unit's own
    filter makes connect() fail with EPERM) points at the drop-in; a refused connection
    (the host answered) does not."""
    ns = NetNs()
    try:
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "route", "add", "198.18.99.0/24", "dev", "lo"]):
            subprocess.run(ns.argv(*argv), check=True, timeout=30)
        r = subprocess.run(ns.argv("env", f"PYTHONPATH={REPO}", sys.executable, "-c", PROBE),
                           capture_output=True, text=True, timeout=60, check=True)
    finally:
        ns.close()
    timed_out, refused = r.stdout.splitlines()
    assert "198.18.99.1" in timed_out and "sshguardd fleet drop-in" in timed_out, timed_out
    assert "IPAddressAllow=" in timed_out
    assert "127.0.0.1:6399" in refused and "drop-in" not in refused, refused
