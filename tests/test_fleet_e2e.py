"""Fleet mode end to end: three hosts, each a sandbox (own network namespace, /etc and /var
overlays, journald, sshd and nft table) running the real `sshguardd run`, joined by veth
pairs to a bridge in the test's namespace, where a real redis-server listens with one ACL
user per host. An attacker is a fourth namespace on the same bridge.

TESTBED.md "Several hosts on one machine"; addresses from the benchmarking range
198.18.0.0/15, inside namespaces this test made.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from daemon_helpers import DaemonProc, kernel_elements, write_config
from fleet_helpers import RedisServer, password
from sshguardd.contracts import FleetEntry
from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.effects.fleet_transport import entry_fields, parse_entry

pytestmark = pytest.mark.e2e

BRIDGE = "198.18.0.1"
ENGINE = f"{BRIDGE}:6390"
ADDR = {"h1": "198.18.0.11", "h2": "198.18.0.12", "h3": "198.18.0.13"}
ATTACKER = "198.18.0.66"
ADMIN = "198.18.0.77"           # allow-listed on every host
VPC = "198.19.0.0/16"           # never_ban on every host

CONFIG = """
[ban]
max_retry = 2
allow = ["127.0.0.0/8", "::1/128", "{admin}/32"]
[firewall]
ports = [22]
[drift]
enabled = false
[metrics]
enabled = false
[fleet]
enabled = true
url = "redis://{engine}/0"
host = "{host}"
password_file = "/etc/sshguardd/fleet.password"
never_ban = ["{vpc}"]
max_bans_per_publisher = 100
discovery_interval = 0.3
snapshot_interval = 0.3
status_interval = 1
reconnect_max = 0.5
outage_alert_after = 1
"""


def sh(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, f"{argv}: {r.stderr}"


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.boxes: dict[str, Sandbox] = {}
        self.daemons: dict[str, DaemonProc] = {}
        self.attacker: Sandbox | None = None
        self.server = RedisServer(tmp, list(ADDR), bind=ENGINE)

    def start(self) -> Fleet:
        sh("ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE}/15", "dev", "br0")
        sh("ip", "link", "set", "br0", "up")
        self.server.start()
        for i, (name, addr) in enumerate([*ADDR.items(), ("attacker", ATTACKER)]):
            box = Sandbox(self.tmp, etc_overlay=name != "attacker",
                          journald=name != "attacker")
            box.start()
            sh("ip", "link", "add", f"v{i}", "type", "veth", "peer", "name", f"e{i}")
            sh("ip", "link", "set", f"e{i}", "netns", str(box.pid))
            sh("ip", "link", "set", f"v{i}", "master", "br0")
            sh("ip", "link", "set", f"v{i}", "up")
            box.run(["ip", "addr", "add", f"{addr}/15", "dev", f"e{i}"], check=True)
            if name == "attacker":
                box.run(["ip", "addr", "add", f"{ADMIN}/15", "dev", f"e{i}"], check=True)
            box.run(["ip", "link", "set", f"e{i}", "up"], check=True)
            if name == "attacker":
                self.attacker = box
                continue
            self.boxes[name] = box
            box.start_sshd(options={"PasswordAuthentication": "yes"}, listen=(addr,))
            write_config(box, CONFIG.format(admin=ADMIN, engine=ENGINE, host=name, vpc=VPC))
            pw = box.path("/etc/sshguardd/fleet.password")
            pw.write_text(password(name) + "\n")
            pw.chmod(0o600)
            self.daemons[name] = DaemonProc(box, self.tmp / f"{name}.log").start()
        return self

    def close(self) -> None:
        for d in self.daemons.values():
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        for box in [*self.boxes.values(), self.attacker]:
            if box is not None:
                box.close()
        self.server.close()
        subprocess.run(["ip", "link", "del", "br0"], capture_output=True, check=False)

    def fleet_status(self, host: str) -> dict:
        return self.daemons[host].status()["fleet"]  # type: ignore[no-any-return]

    def kernel(self, host: str) -> set[str]:
        return kernel_elements(self.boxes[host])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        f.start()
        for h in ADDR:
            wait_for(lambda h=h: f.fleet_status(h)["connected"], 15, what=f"{h} connected")
        yield f
    finally:
        f.close()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """The module's fleet outlives each test by design (started once, ~10 s); conftest's
    per-test leak check would see its processes. It is closed, and checked, at the end."""
    yield


def fail_password(fleet: Fleet, target: str) -> None:
    assert fleet.attacker is not None
    sock = fleet.attacker.connect(ATTACKER, target, 22, timeout=20)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=20)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password("nosuchuser", "wrong password")
    finally:
        transport.close()
        sock.close()


def answers(fleet: Fleet, target: str, src: str = ATTACKER) -> bool:
    """Does target's kernel let src's TCP handshake to port 22 through (sshd's own speed
    under load does not matter), or are src's packets dropped (connect times out)?"""
    assert fleet.attacker is not None
    try:
        s = fleet.attacker.connect(src, target, 22, timeout=3)
    except TimeoutError:
        return False
    s.close()
    return True


def publish_as(fleet: Fleet, host: str, entries: list[FleetEntry]) -> None:
    """A compromised host: its own ACL user and password, any fields it likes."""
    c = fleet.server.client(host)
    try:
        for e in entries:
            c.xadd("{fleet}:ev:" + host, entry_fields(e))
    finally:
        c.close()


def test_failed_logins_on_h1_are_dropped_on_h2_and_h3(fleet: Fleet) -> None:
    assert answers(fleet, ADDR["h2"]) and answers(fleet, ADDR["h3"])
    for _ in range(2):
        fail_password(fleet, ADDR["h1"])
    started = time.monotonic()
    for h in ("h2", "h3"):
        wait_for(lambda h=h: ATTACKER in fleet.kernel(h), 20, what=f"the ban on {h}")
    print(f"h1's ban in h2's and h3's kernels {time.monotonic() - started:.3f}s after the "
          "second failure was answered")
    assert ATTACKER in fleet.kernel("h1")
    assert not answers(fleet, ADDR["h2"]) and not answers(fleet, ADDR["h3"])
    assert answers(fleet, ADDR["h2"], src=ADMIN)     # everyone else still gets in
    # `sshguardd bans` marks where a ban came from; `fleet status` sees every host
    out = fleet.daemons["h2"].cli("bans").stdout
    assert f"{ATTACKER}/32" in out and "fleet: h1 (" in out
    st = fleet.daemons["h3"].cli("fleet", "status", "--json")
    hosts = {h["host"]: h for h in json.loads(st.stdout)["hosts"]}
    assert set(hosts) == set(ADDR) and not any(h["stale"] for h in hosts.values())
    assert hosts["h1"]["bans_active"] >= 1 and hosts["h2"]["fleet_bans"] >= 1


def test_a_compromised_peer_is_vetoed_everywhere_then_quarantined(fleet: Fleet) -> None:
    far = time.time() + 3600
    # h3 has decided nothing itself, so its sequence goes on from 1
    bad = [FleetEntry("ban", n, far, "bad_password", 9, "h3", i + 1) for i, n in enumerate(
        (f"{ADMIN}/32", "198.19.4.5/32", "127.0.0.1/32", "198.18.0.0/15"))]
    bad.append(FleetEntry("unban", f"{ATTACKER}/32", 0, "manual", 0, "h1", 5))  # forged
    before = {h: dict(fleet.fleet_status(h)["vetoed"]) for h in ("h1", "h2")}
    publish_as(fleet, "h3", bad)
    for h in ("h1", "h2"):
        def vetoed(h: str = h) -> dict[str, int]:
            now = fleet.fleet_status(h)["vetoed"]
            return {r: now.get(r, 0) - before[h].get(r, 0) for r in now}
        wait_for(lambda: vetoed().get("publisher") == 1, 20, what=f"the forgery vetoed on {h}")
        assert {r: n for r, n in vetoed().items() if n} == {
            "allow": 1, "never_ban": 1, "loopback": 1, "prefix": 1, "publisher": 1}
        assert ADMIN not in fleet.kernel(h) and ATTACKER in fleet.kernel(h)
    assert answers(fleet, ADDR["h1"], src=ADMIN)
    # Now it floods: 100 bans a minute are allowed, the 101st quarantines it on every
    # host, and what it contributed is withdrawn there.
    flood = [FleetEntry("ban", f"203.0.{i // 200}.{i % 200 + 1}/32", far, "bad_password", 5,
                        "h3", 6 + i) for i in range(400)]
    publish_as(fleet, "h3", flood)
    for h in ("h1", "h2"):
        wait_for(lambda h=h: "h3" in fleet.fleet_status(h)["quarantined"], 15,
                 what=f"h3 quarantined on {h}")
        wait_for(lambda h=h: not any(e.startswith("203.0.") for e in fleet.kernel(h)), 20,
                 what=f"h3's bans withdrawn on {h}")
        alert = fleet.boxes[h].journal("-o", "json", "SSHGUARDD_ALERT=fleet_quarantine")
        assert json.loads(alert.splitlines()[-1])["PUBLISHER"] == "h3"


def test_engine_killed_mid_flood_loses_and_doubles_nothing(fleet: Fleet) -> None:
    h1 = fleet.daemons["h1"]
    before = {h: fleet.fleet_status(h)["applied_total"] for h in ("h2", "h3")}
    nets = [f"198.18.{100 + i // 200}.{i % 200 + 1}" for i in range(60)]
    for n in nets[:30]:
        assert h1.request({"cmd": "ban", "address": n, "duration": 3600})["ok"]
    fleet.server.kill()                       # mid-flood; no persistence: it comes back empty
    for n in nets[30:]:
        assert h1.request({"cmd": "ban", "address": n, "duration": 3600})["ok"]
    assert set(nets) <= fleet.kernel("h1")    # local bans never wait for the engine
    wait_for(lambda: not fleet.fleet_status("h2")["connected"], 20, what="h2 sees the outage")
    alert = fleet.boxes["h2"].journal("-o", "json", "SSHGUARDD_ALERT=fleet_outage")
    wait_for(lambda: fleet.boxes["h2"].journal("SSHGUARDD_ALERT=fleet_outage").strip(), 20,
             what="the outage alert on h2")
    assert ATTACKER in fleet.kernel("h2")     # nothing flushed meanwhile
    assert fleet.fleet_status("h1")["outbox"] > 0
    fleet.server.start()
    for h in ("h2", "h3"):
        wait_for(lambda h=h: set(nets) <= fleet.kernel(h), 20, what=f"all 60 bans on {h}")
        wait_for(lambda h=h: fleet.fleet_status(h)["connected"], 20, what=f"{h} reconnected")
    wait_for(lambda: fleet.fleet_status("h1")["outbox"] == 0, 20, what="h1's outbox drained")
    for h in ("h2", "h3"):
        st = fleet.fleet_status(h)
        # each ban applied once (read from the stream or, for the entries the engine
        # lost with its memory, from h1's snapshot), and the cursor at h1's last entry
        assert st["applied_total"] - before[h] == 60, st
        assert st["cursors"]["h1"]["seq"] == fleet.fleet_status("h1")["last_seq"]
    admin = fleet.server.admin()
    entries = [parse_entry(f) for _, f in admin.xrange("{fleet}:ev:h1")]
    seqs = [e.seq for e in entries if e is not None]
    admin.close()
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)   # none published twice
    del alert


def test_a_trimmed_stream_is_resynced_from_the_snapshot(fleet: Fleet) -> None:
    h1, h3 = fleet.daemons["h1"], fleet.daemons["h3"]
    h3.stop()
    assert h1.request({"cmd": "ban", "address": "198.18.200.1", "duration": 3600})["ok"]
    assert h1.request({"cmd": "ban", "address": "198.18.200.2", "duration": 3600})["ok"]
    assert h1.request({"cmd": "unban", "address": "198.18.100.1"})["ok"]
    wait_for(lambda: fleet.fleet_status("h1")["outbox"] == 0, 20, what="h1 published")
    admin = fleet.server.admin()
    admin.xtrim("{fleet}:ev:h1", maxlen=0, approximate=False)
    admin.close()
    resyncs = 0
    h3.start()
    wait_for(lambda: {"198.18.200.1", "198.18.200.2"} <= fleet.kernel("h3"), 15,
             what="h3 resynced")
    wait_for(lambda: "198.18.100.1" not in fleet.kernel("h3"), 20, what="the unban on h3")
    assert fleet.fleet_status("h3")["resyncs"] > resyncs


def test_a_host_cannot_write_another_hosts_stream(fleet: Fleet) -> None:
    box = fleet.boxes["h2"]
    r = box.run(["redis-cli", "-h", BRIDGE, "-p", ENGINE.split(":")[1], "--user", "h2",
                 "--pass", password("h2"), "--no-auth-warning",
                 "XADD", "{fleet}:ev:h1", "*", "op", "unban"], check=True)
    assert r.stdout.startswith("NOPERM"), r.stdout
    r = box.run(["redis-cli", "-h", BRIDGE, "-p", ENGINE.split(":")[1], "--user", "h2",
                 "--pass", password("h2"), "--no-auth-warning", "DEL", "{fleet}:ev:h2"],
                check=True)
    assert r.stdout.startswith("NOPERM"), r.stdout
