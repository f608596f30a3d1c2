"""The real daemon carries sshd's PerSourcePenalties over the restart its own drift repair
causes (issue 15 part 4).

A Sandbox with a real sshd (Debian 12's 9.2, which has no PerSourcePenalties of its own:
the penalty lines are the real 10.0p2 wordings of tests/data/penalty_golden.jsonl, logged
as sshd through the private journald), the real `sshguardd run` with its inotify watcher,
and a restart command that makes that sshd re-read its config (SIGHUP, which re-executes
the listener and so forgets penalties on 9.8+ too). A `sed -i` drift is repaired, sshd is
restarted, and the nft set must then hold each penalty still in force with a timeout close
to what is left of it, which the kernel ends by itself; allow-listed and admin-protected
sources are not carried.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, Sender, caught_up, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

RESTART = """#!/bin/sh
set -e
echo restart >> /run/restarts.log
kill -HUP "$(cat /run/sshd.pid)"
"""
FAILED = "penalty: failed authentication"
NOAUTH = "penalty: connections without attempting authentication"


def expiries(sb: Sandbox, table: str = "sshguardd") -> dict[str, float]:
    """Every element of our sets -> seconds until the kernel expires it."""
    out = sb.run(["nft", "-j", "list", "table", "inet", table])
    if out.returncode != 0:
        return {}
    found: dict[str, float] = {}
    for item in json.loads(out.stdout)["nftables"]:
        for el in item.get("set", {}).get("elem", []):
            if isinstance(el, dict) and "elem" in el:
                val, left = el["elem"]["val"], el["elem"].get("expires", 0)
                key = val if isinstance(val, str) else \
                    f"{val['prefix']['addr']}/{val['prefix']['len']}"
                found[key] = float(left)
    return found


def listening_lines(sb: Sandbox) -> int:
    """How many "Server listening on" lines sshd logged: a new listener (which forgets
    every penalty, so the daemon's book does too) logs one per address."""
    out = sb.journal("_COMM=sshd", "-o", "cat")
    return sum(1 for line in out.splitlines() if line.startswith("Server listening on "))


def restarts(sb: Sandbox) -> int:
    p = sb.path("/run/restarts.log")
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture
def guarded(tmp_path: Path):
    with Sandbox(tmp_path, overlays=("/var", "/root", "/home")) as sb:
        sb.run(["sh", "-c", "find /root /home -name 'authorized_keys*' -delete"], check=True)
        sb.run(["useradd", "-m", "-s", "/bin/bash", "admin"], check=True)
        sb.run(["mkdir", "-p", "/etc/sshguardd", "/home/admin/.ssh"], check=True)
        restart = sb.path("/etc/sshguardd/restart-sshd")
        restart.write_text(RESTART)
        restart.chmod(0o755)
        write_config(sb, '[drift]\nrestart_command = ["/etc/sshguardd/restart-sshd"]\n'
                     "\n[metrics]\nenabled = false\n")
        sb.start_sshd()
        wait_for(lambda: listening_lines(sb) > 0, 10, what="sshd's first listener")
        first = listening_lines(sb)
        pub = sb.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text()
        sb.path("/home/admin/.ssh/authorized_keys").write_text(pub)  # a way in
        d = DaemonProc(sb, tmp_path / "daemon.log").start()
        # The start check hardens Debian's stock config: one restart, nothing to carry.
        wait_for(lambda: restarts(sb) == 1, 20, what="the start check's restart")
        # Its new listener's lines must be in before any penalty line of the test: they
        # forget every penalty logged before them, as sshd did.
        wait_for(lambda: listening_lines(sb) >= 2 * first, 10, what="sshd's new listener")
        try:
            yield sb, d
        finally:
            d.stop()


def test_a_repair_restart_carries_penalties_in_force_as_bans_that_expire(guarded):
    sb, d = guarded
    s = Sender(sb)
    s.say(
        # A successful login: 192.0.2.50 is admin-protected from here on.
        "Accepted publickey for admin from 192.0.2.50 port 50000 ssh2: ED25519 SHA256:x",
        f"srclimit_penalise: ipv4: new 192.0.2.7/32 active penalty of 12 seconds for {FAILED}",
        f"drop connection #0 from [192.0.2.7]:45937 on [192.0.2.1]:22 {FAILED}",
        # Only a drop line (LogLevel INFO on 10.0): its end is estimated (min, 15 s).
        f"drop connection #0 from [198.51.100.8]:41000 on [192.0.2.1]:22 {NOAUTH}",
        f"srclimit_penalise: ipv6: new 2001:db8::66/128 active penalty of 12 seconds for {FAILED}",
        # Allow-listed (loopback) and admin-protected: never carried.
        f"srclimit_penalise: ipv4: new 127.0.0.9/32 active penalty of 60 seconds for {FAILED}",
        f"srclimit_penalise: ipv4: new 192.0.2.50/32 active penalty of 60 seconds for {FAILED}",
        # Deferred (below min): sshd still lets it in, nothing to carry.
        f"srclimit_penalise: ipv4: new 192.0.2.9/32 deferred penalty of 4 seconds for {NOAUTH}",
    )
    s.close()
    logged = time.time()
    wait_for(lambda: caught_up(d, sb), 20, what="the daemon to read the penalty lines")
    assert expiries(sb) == {}  # penalties alone ban nothing: sshd enforces them itself

    sb.run(["sed", "-i", "1i PermitRootLogin yes", "/etc/ssh/sshd_config"], check=True)
    wait_for(lambda: restarts(sb) == 2, 20, what="the repair's restart")
    wait_for(lambda: "192.0.2.7" in expiries(sb), 10, what="the carried-over ban")
    sets = expiries(sb)
    elapsed = time.time() - logged
    assert set(sets) == {"192.0.2.7", "198.51.100.8", "2001:db8::66"}, sets
    # What is left of each penalty, give or take the time the test took to look.
    assert 12 - elapsed - 3 <= sets["192.0.2.7"] <= 12, (sets, elapsed)
    assert 12 - elapsed - 3 <= sets["2001:db8::66"] <= 12, (sets, elapsed)
    assert 15 - elapsed - 3 <= sets["198.51.100.8"] <= 15, (sets, elapsed)

    bans = {b["network"]: b for b in d.request({"cmd": "bans"})["bans"]}
    assert bans["192.0.2.7/32"]["reason"] == \
        "sshd penalty carried over a restart (failed authentication)"
    assert bans["192.0.2.7/32"]["strikes"] == 0
    assert "estimated" in bans["198.51.100.8/32"]["reason"]

    # The kernel ends them by itself; no new ban, no strike came of them.
    wait_for(lambda: expiries(sb) == {}, 25, what="the carried bans to expire")
    assert d.request({"cmd": "bans"})["bans"] == []
    log = d.log()
    assert "2 penalties in force" not in log  # the start restart had none
    assert "sshd restarted with 5 penalties in force: 3 carried over as bans" in log, log


def test_a_second_restart_carries_nothing_twice_and_a_new_listener_forgets(guarded):
    sb, d = guarded
    s = Sender(sb)
    s.say(f"srclimit_penalise: ipv4: new 192.0.2.11/32 active penalty of 30 seconds for {FAILED}",
          f"srclimit_penalise: ipv4: new 192.0.2.12/32 active penalty of 30 seconds for {FAILED}",
          # sshd restarted by someone else (an admin's SIGHUP): it forgave those two.
          "Server listening on 0.0.0.0 port 22.",
          f"srclimit_penalise: ipv4: new 192.0.2.13/32 active penalty of 30 seconds for {FAILED}")
    s.close()
    wait_for(lambda: caught_up(d, sb), 20, what="the daemon to read the penalty lines")
    sb.run(["sed", "-i", "1i PermitRootLogin yes", "/etc/ssh/sshd_config"], check=True)
    wait_for(lambda: restarts(sb) == 2, 20, what="the repair's restart")
    wait_for(lambda: "192.0.2.13" in expiries(sb), 10, what="the carried-over ban")
    assert set(expiries(sb)) == {"192.0.2.13"}
    sb.run(["sed", "-i", "1i PasswordAuthentication yes", "/etc/ssh/sshd_config"], check=True)
    wait_for(lambda: restarts(sb) == 3, 20, what="the second repair's restart")
    wait_for(lambda: "sshd restarted with" in d.log(), 5, what="the carry log line")
    # The book was emptied by the first carry: the ban in force is not carried again.
    assert d.log().count("carried over as bans") == 1, d.log()
    assert set(expiries(sb)) == {"192.0.2.13"}
