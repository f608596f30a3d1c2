"""The fleet stage on its own (daemon/fleet_sync.py): three hosts in one test process, each
with its own loop thread, state store, and nft table in a private net namespace, sharing a
real redis-server. A compromised peer is a raw client holding that peer's ACL password."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from fleet_helpers import NetNs, RedisServer
from sshguardd import config
from sshguardd.contracts import Ban, FleetEntry
from sshguardd.daemon.fleet_sync import FleetStage
from sshguardd.demo.sandbox import wait_for
from sshguardd.effects.alerts import Alerts
from sshguardd.effects.fleet_metrics import FleetMetrics
from sshguardd.effects.fleet_transport import entry_fields, parse_entry
from sshguardd.effects.store import Store

T = TypeVar("T")
HOSTS = ("h1", "h2", "h3")
CONFIG = """
[ban]
allow = ["127.0.0.0/8", "::1/128", "198.51.100.10/32"]
[fleet]
enabled = true
never_ban = ["10.0.0.0/8"]
max_bans_per_publisher = 50
rate_window = "1m"
discovery_interval = 0.2
snapshot_interval = 0.3
status_interval = 0.5
reconnect_max = 0.5
outage_alert_after = 0.5
"""


class Host:
    """One host: a loop thread that alone touches its store, stage and firewall."""

    def __init__(self, name: str, server: RedisServer, workdir: Path,
                 cfg: config.Config) -> None:
        self.name = name
        self.server = server
        self.cfg = cfg
        self.dir = workdir / name
        self.dir.mkdir(exist_ok=True)
        self.ns = NetNs()
        self.fw = self.ns.firewall()
        self.fw.setup()
        self.q: queue.Queue[Any] = queue.Queue()
        self.alerts: list[tuple[str, dict[str, Any]]] = []
        self.registry = CollectorRegistry()
        self.metrics = FleetMetrics(self.registry)
        self.stage: FleetStage | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> Host:
        self._stop.clear()
        self._started.clear()
        self.thread = threading.Thread(target=self._run, name=f"loop-{self.name}")
        self.thread.start()
        assert self._started.wait(10)
        return self

    def _run(self) -> None:
        self.store = Store(self.dir / "state.db")
        self.stage = FleetStage(
            self.cfg, self.name, transport=self.server.transport(self.name, socket_timeout=2),
            store=self.store, firewall=self.fw, metrics=self.metrics,
            alerts=Alerts(send=lambda m, **f: self.alerts.append((m, f)), echo=False),
            resync_wait=2.0)
        self.stage.start(self.q.put)
        self._started.set()
        try:
            while not self._stop.is_set():
                try:
                    item = self.q.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if callable(item):
                    item()
                elif item is not None:
                    assert self.stage.handle(item), item
                self.stage.timers()
        finally:
            self.stage.stop()
            self.store.close()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(20)

    def call(self, fn: Callable[[], T]) -> T:
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["v"] = fn()
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
                box["e"] = exc
            done.set()
        self.q.put(run)
        assert done.wait(20)
        if "e" in box:
            raise box["e"]
        return box["v"]  # type: ignore[no-any-return]

    def ban(self, *nets: str, ttl: float = 600) -> None:
        """A local decision, as the daemon makes it: store (with its outbox entries) in one
        transaction, then the kernel, then the writer."""
        def do() -> None:
            assert self.stage is not None
            now = time.time()
            bans = [Ban(n, ttl, now + ttl, 1, "5 failed attempts within 10m, last "
                        "bad_password") for n in nets]
            with self.store.batch():
                self.store.add_bans(bans)
                staged = self.stage.stage_bans(bans)
            self.fw.add(bans, now)
            self.stage.offer(staged)
        self.call(do)

    def unban(self, *nets: str) -> None:
        def do() -> None:
            assert self.stage is not None
            with self.store.batch():
                for n in nets:
                    self.store.remove_ban(n)
                staged = self.stage.stage_unbans(list(nets))
            self.fw.remove(list(nets))
            self.stage.offer(staged)
        self.call(do)

    def kernel(self) -> set[str]:
        return self.ns.elements()

    def status(self) -> dict[str, Any]:
        assert self.stage is not None
        return self.call(self.stage.status)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"sshguardd_fleet_{name}", labels or None) or 0.0

    def close(self) -> None:
        self.stop()
        self.ns.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[RedisServer, dict[str, Host]]]:
    server = RedisServer(tmp_path, HOSTS).start()
    cfg = config.parse(CONFIG)
    hosts = {h: Host(h, server, tmp_path, cfg) for h in HOSTS}
    try:
        for h in hosts.values():
            h.start()
        yield server, hosts
    finally:
        try:
            for h in hosts.values():
                h.stop()
        finally:
            for h in hosts.values():
                h.ns.close()
            server.close()


def publish_raw(server: RedisServer, host: str, entries: list[FleetEntry]) -> None:
    """A compromised host: its own ACL user, any fields it likes."""
    c = server.client(host)
    try:
        for e in entries:
            c.xadd("{fleet}:ev:" + host, entry_fields(e))
    finally:
        c.close()


def test_a_ban_reaches_every_peer_and_an_unban_lifts_only_its_contribution(
        fleet: tuple[RedisServer, dict[str, Host]]) -> None:
    _, h = fleet
    h["h1"].ban("203.0.113.5/32", "2001:db8:7::/64")
    for peer in ("h2", "h3"):
        wait_for(lambda peer=peer: {"203.0.113.5", "2001:db8:7::"} <= h[peer].kernel(), 10,
                 what=f"h1's bans in {peer}'s kernel")
    assert h["h1"].kernel() == {"203.0.113.5", "2001:db8:7::"}  # own stream not re-applied
    # h2 decides the same ban itself: its local ban rules there, h3 now holds two
    h["h3"].ban("198.18.7.7/32")
    wait_for(lambda: "198.18.7.7" in h["h2"].kernel(), 10, what="h3's ban on h2")
    h["h2"].ban("203.0.113.5/32")
    wait_for(lambda: h["h3"].call(lambda: h["h3"].stage.veto.contributions(  # type: ignore
        "203.0.113.5/32")).keys() == {"h1", "h2"}, 10, what="two contributions on h3")
    h["h1"].unban("203.0.113.5/32")
    wait_for(lambda: "203.0.113.5" not in h["h1"].kernel(), 5, what="h1's own unban")
    wait_for(lambda: h["h3"].call(lambda: h["h3"].stage.veto.contributions(  # type: ignore
        "203.0.113.5/32")).keys() == {"h2"}, 10, what="h1's contribution gone on h3")
    assert "203.0.113.5" in h["h3"].kernel()      # h2 still bans it
    assert "203.0.113.5" in h["h2"].kernel()      # h2's local ban untouched
    bans = h["h3"].call(lambda: {b.network: b.reason for b in h["h3"].store.active_bans(
        time.time())})
    assert bans["203.0.113.5/32"].startswith("fleet: h2")  # shown with its publisher
    assert h["h3"].metric("events_in_total", op="unban") == 1


def test_a_compromised_peer_is_vetoed_then_quarantined(
        fleet: tuple[RedisServer, dict[str, Host]]) -> None:
    server, h = fleet
    far = time.time() + 3600
    bad = [FleetEntry("ban", n, far, "bad_password", 5, "h3", i + 1) for i, n in enumerate(
        ["127.0.0.1/32", "198.51.100.10/32", "10.1.2.3/32", "0.0.0.0/0", "203.0.0.0/8"])]
    bad.append(FleetEntry("ban", "203.0.113.66/32", far, "x", 1, "h1", 6))   # forged publisher
    bad.append(FleetEntry("unban", "203.0.113.5/32", 0, "x", 1, "h1", 7))   # someone else's
    h["h1"].ban("203.0.113.5/32")
    wait_for(lambda: "203.0.113.5" in h["h2"].kernel(), 10, what="h1's ban on h2")
    publish_raw(server, "h3", bad)
    wait_for(lambda: h["h2"].metric("vetoed_total", reason="publisher") == 2, 10,
             what="the forged entries vetoed on h2")
    for reason, n in (("loopback", 2), ("allow", 1), ("never_ban", 1), ("prefix", 1)):
        assert h["h2"].metric("vetoed_total", reason=reason) == n, reason
    assert h["h2"].kernel() == {"203.0.113.5"}
    # now h3 floods: 50 bans a minute are allowed, the 51st quarantines it everywhere and
    # withdraws what it contributed
    flood = [FleetEntry("ban", f"198.18.{i // 250}.{i % 250 + 1}/32", far, "bad_password",
                        5, "h3", 8 + i) for i in range(200)]
    publish_raw(server, "h3", flood)
    for peer in ("h1", "h2"):
        wait_for(lambda peer=peer: h[peer].metric("quarantines_total") == 1, 10,
                 what=f"h3 quarantined on {peer}")
        wait_for(lambda peer=peer: not any(e.startswith("198.18.") for e in h[peer].kernel()), 10,
                 what=f"h3's bans withdrawn on {peer}")
        assert [f["PUBLISHER"] for _, f in h[peer].alerts
                if f["SSHGUARDD_ALERT"] == "fleet_quarantine"] == ["h3"]
        assert "h3" in h[peer].status()["quarantined"]
    assert h["h2"].kernel() == {"203.0.113.5"}


def test_a_quarantine_survives_a_restart(fleet: tuple[RedisServer, dict[str, Host]]) -> None:
    """Regression: the quarantine lived in memory only, so a restarted host applied the
    flooding peer's bans again at once."""
    server, h = fleet
    far = time.time() + 3600
    flood = [FleetEntry("ban", f"198.18.{i // 250}.{i % 250 + 1}/32", far, "bad_password",
                        5, "h3", i + 1) for i in range(60)]
    publish_raw(server, "h3", flood)
    wait_for(lambda: h["h2"].metric("quarantines_total") == 1, 10, what="h3 quarantined")
    h["h2"].stop()
    h["h2"].start()  # a new stage and veto over the same state.db
    assert "h3" in h["h2"].status()["quarantined"]
    publish_raw(server, "h3", [FleetEntry("ban", "203.0.113.77/32", far, "bad_password", 5,
                                          "h3", 61)])
    wait_for(lambda: h["h2"].status()["cursors"].get("h3", {}).get("seq") == 61, 10,
             what="h2 read h3's ban after its restart")
    assert "203.0.113.77" not in h["h2"].kernel()
    assert not any(e.startswith("198.18.") for e in h["h2"].kernel())
    assert h["h2"].metric("vetoed_total", reason="quarantined") >= 1


def test_engine_outage_fails_static_and_loses_nothing(
        fleet: tuple[RedisServer, dict[str, Host]]) -> None:
    server, h = fleet
    h["h1"].ban(*[f"203.0.113.{i}/32" for i in range(1, 11)])
    want = {f"203.0.113.{i}" for i in range(1, 11)}
    for peer in ("h2", "h3"):
        wait_for(lambda peer=peer: want <= h[peer].kernel(), 10, what=f"the first bans on {peer}")
    server.kill()  # no persistence: the engine comes back empty
    h["h1"].ban(*[f"203.0.113.{i}/32" for i in range(11, 31)])
    want |= {f"203.0.113.{i}" for i in range(11, 31)}
    assert h["h1"].kernel() == want                      # local bans never wait
    wait_for(lambda: h["h1"].status()["outbox"] == 20, 5, what="20 entries in the outbox")
    wait_for(lambda: any(f["SSHGUARDD_ALERT"] == "fleet_outage" for _, f in h["h2"].alerts),
             10, what="the outage alert on h2")
    assert {f"203.0.113.{i}" for i in range(1, 11)} <= h["h2"].kernel()  # nothing flushed
    server.start()
    for peer in ("h2", "h3"):
        wait_for(lambda peer=peer: h[peer].kernel() == want, 20, what=f"all 30 bans on {peer}")
    wait_for(lambda: h["h1"].status()["outbox"] == 0, 10, what="the outbox drained")
    # exactly once: 30 entries published, 30 read and applied, none twice
    assert h["h1"].metric("events_out_total", op="ban") == 30
    for peer in ("h2", "h3"):
        assert h[peer].metric("events_in_total", op="ban") == 30
        assert h[peer].status()["applied_total"] == 30
        assert h[peer].status()["cursors"]["h1"]["seq"] == 30
    admin = server.admin()
    entries = [parse_entry(f) for _, f in admin.xrange("{fleet}:ev:h1")]
    seqs = [e.seq for e in entries if e is not None]
    admin.close()
    assert seqs == list(range(11, 31))  # the engine lost 1-10; no entry published twice


def test_a_trimmed_stream_makes_a_peer_resync_from_the_snapshot(
        fleet: tuple[RedisServer, dict[str, Host]]) -> None:
    server, h = fleet
    h["h1"].ban("203.0.113.1/32", "203.0.113.2/32")
    wait_for(lambda: {"203.0.113.1", "203.0.113.2"} <= h["h2"].kernel(), 10,
             what="the first bans on h2")
    h["h2"].stop()  # h2 is down while h1 bans, unbans, and its stream is trimmed
    h["h1"].ban("203.0.113.3/32", "203.0.113.4/32")
    h["h1"].unban("203.0.113.1/32")
    wait_for(lambda: h["h1"].status()["outbox"] == 0, 10, what="h1's outbox drained")
    admin = server.admin()
    admin.xtrim("{fleet}:ev:h1", maxlen=0, approximate=False)  # MINID would do the same
    admin.close()
    wait_for(lambda: h["h3"].kernel() == {"203.0.113.2", "203.0.113.3", "203.0.113.4"}, 10,
             what="h3 up to date (it read everything before the trim)")
    h["h2"].start()
    wait_for(lambda: h["h2"].kernel() == {"203.0.113.2", "203.0.113.3", "203.0.113.4"}, 10,
             what="h2 resynced from h1's snapshot")
    assert h["h2"].metric("resyncs_total") == 1
    assert h["h3"].metric("resyncs_total") == 0
