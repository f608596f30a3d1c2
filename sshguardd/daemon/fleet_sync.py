"""Fleet mode: this host's bans go out to its peers, theirs come in through the local veto.

    ban decided here ──(same transaction as the ban)──> outbox ──FleetWriter──> our stream
    peers' streams ──FleetReader──> FleetRead / FleetSnapshot ──> queue ──> FleetStage
        ──> bans/fleet_veto (local veto, quorum, quarantine) ──> store (bans, the peer's
            contributions and its cursor: one transaction) ──> firewall (same interface
            and table as local bans)

FleetStage lives on the daemon loop (it touches the store and the firewall, so only the
loop may call it); its two threads (daemon/fleet_threads.py) only talk to the engine and
enqueue frozen messages. Local decisions never wait for the engine: staging an entry is
one more INSERT in the transaction that records the ban.

Fail static: an unreachable engine changes nothing in the kernel. Bans in force stay
until their kernel timeouts, outgoing entries wait in the outbox (bounded; the oldest
dropped and counted), and after `outage_alert_after` a fleet_outage alert is written
once per outage. Cursors are committed with the kernel change they caused, and stream
ids are the publisher's own, so after an outage or a crash nothing is lost or applied
twice.

Remote bans are stored in the bans table with a reason starting "fleet:" (so a restart,
SIGHUP or a vanished table restores them with the local ones); a local ban of the same
network is never overwritten or lifted by the fleet.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sshguardd import __version__
from sshguardd.bans.fleet_veto import Change, FleetVeto
from sshguardd.config import Config
from sshguardd.contracts import (
    Ban,
    FleetEntry,
    FleetLink,
    FleetPublished,
    FleetRead,
    FleetSnapshot,
)
from sshguardd.daemon.fleet_threads import FleetReader, FleetWriter
from sshguardd.effects.fleet_metrics import FleetMetrics
from sshguardd.effects.fleet_store import FleetStore, Staged
from sshguardd.effects.fleet_transport import FleetTransport, id_ms
from sshguardd.effects.store import Store

log = logging.getLogger(__name__)

FLEET_REASON = "fleet:"
FLEET_MESSAGES = (FleetRead, FleetSnapshot, FleetPublished, FleetLink)


class Firewall(Protocol):
    """The part of the daemon's firewall (daemon.parts.Firewall) the fleet stage uses:
    the same table and sets as local bans. A failed commit keeps what it could not apply
    staged, and the next commit (ours or the ban engine's) retries it."""

    @property
    def pending(self) -> int: ...

    def stage(self, add: Sequence[Ban] = (), remove: Sequence[str] = (), *,
              replace: bool = False) -> None: ...

    def commit(self, now: float) -> None: ...


class FleetAlerts(Protocol):
    def startup_problem(self, what: str, detail: str) -> None: ...
    def fleet_quarantine(self, publisher: str, reason: str, duration: float) -> None: ...
    def fleet_outage(self, engine: str, detail: str, seconds: float) -> None: ...


_POLICY_REASON = re.compile(r"^(\d+(?:\.\d+)?) failed attempts? .*, last (\w+)$")


def kind_count(ban: Ban) -> tuple[str, float]:
    """What decided a local ban, from its reason (bans/policy.py writes "5 failed
    attempts within 10m, last bad_password"); ("manual", strikes) otherwise."""
    m = _POLICY_REASON.match(ban.reason)
    if m:
        return m.group(2), float(m.group(1))
    return "manual", float(ban.strikes)


def is_fleet(ban: Ban | None) -> bool:
    return ban is not None and ban.reason.startswith(FLEET_REASON)


class FleetStage:
    """The loop's side of fleet mode. Calls: start(emit), handle(message), stage_bans()
    and stage_unbans() inside the store transaction of the decision, then offer() with
    what they returned, timers() on the loop's timer, status(), stop()."""

    def __init__(self, cfg: Config, host: str, *, transport: FleetTransport, store: Store,
                 firewall: Firewall, metrics: FleetMetrics, alerts: FleetAlerts,
                 clock: Callable[[], float] = time.time,
                 status_extra: Callable[[], Mapping[str, Any]] = dict,
                 resync_wait: float = 60.0) -> None:
        self.cfg = cfg
        self.fleet = cfg.fleet
        self.host = host
        self.transport = transport
        self.store = store
        self.firewall = firewall
        self.metrics = metrics
        self.alerts = alerts
        self.clock = clock
        self.status_extra = status_extra
        self.resync_wait = resync_wait
        self.fstore = FleetStore(store, host, self.fleet.outbox_max)
        self.veto: FleetVeto | None = None
        self.writer: FleetWriter | None = None
        self.reader: FleetReader | None = None
        self._down: dict[str, str] = {"reader": "starting", "writer": "starting"}
        self._down_since: float | None = time.monotonic()
        self._outage_alerted = False
        self._retry = False                          # a commit failed: retry on tick
        self._new_quarantine = False                 # a publisher quarantined: save it
        # Judged, not yet committed (see flush): network -> (expiry before, after).
        self._changes: dict[str, tuple[float | None, float | None]] = {}
        self._why: dict[str, FleetEntry] = {}
        self._cursors: dict[str, tuple[str, int]] = {}
        self._touched: set[str] = set()
        self._next_snapshot = 0.0
        self._next_status = 0.0
        self._snapshot_seq = -1
        self.applied_total = 0
        self.vetoed: dict[str, int] = {}   # reason -> entries refused (also a metric)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, emit: Callable[[Any], Any]) -> None:
        now = self.clock()
        ban = self.cfg.ban
        logins = self.store.logins(now - ban.protect_logged_in) \
            if ban.protect_logged_in > 0 else {}
        self.veto = FleetVeto(self.fleet, ban, contributions=self.fstore.contributions(),
                              logged_in=logins, quarantined=self.fstore.quarantines(now))
        self.writer = FleetWriter(self.transport, emit, retention=self.fleet.retention,
                                  reconnect_max=self.fleet.reconnect_max,
                                  pending=self.fstore.pending())
        self.reader = FleetReader(self.transport, emit, cursors=self.fstore.cursors(),
                                  reconnect_max=self.fleet.reconnect_max,
                                  discovery_interval=self.fleet.discovery_interval,
                                  resync_wait=self.resync_wait)
        self.metrics.outbox.set(self.fstore.outbox_depth())
        self._send_snapshot(now)
        self.writer.start()
        self.reader.start()
        log.info("fleet mode: host %s, engine %s, %d peer cursors, %d entries in the "
                 "outbox", self.host, self.transport.url, len(self.reader.cursors),
                 self.fstore.outbox_depth())

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.flush()
        except Exception:  # the store may be failing: the cursors simply stay behind
            log.exception("fleet: final flush failed")
        for part in (self.reader, self.writer):
            if part is not None:
                part.stop()
        self.transport.close()

    def _veto(self) -> FleetVeto:
        if self.veto is None:
            raise RuntimeError("FleetStage.start() was not called")
        return self.veto

    def healthy(self) -> bool:
        """The threads run (an unreachable engine is not unhealthy: we fail static)."""
        return all(p is None or p.alive for p in (self.reader, self.writer))

    # -- outgoing ------------------------------------------------------------------------
    def stage_bans(self, bans: Sequence[Ban]) -> list[Staged]:
        """Outbox entries for bans decided here (inside the caller's store.batch())."""
        now = self.clock()
        rows = []
        for b in bans:
            if is_fleet(b) or b.until <= now:
                continue
            kind, count = kind_count(b)
            rows.append(("ban", b.network, b.until, kind, count))
        return self.fstore.stage(rows, now)

    def stage_unbans(self, networks: Sequence[str]) -> list[Staged]:
        return self.fstore.stage([("unban", n, 0.0, "manual", 0.0) for n in networks],
                                 self.clock())

    def offer(self, staged: Sequence[Staged]) -> None:
        """Hand committed outbox entries to the writer."""
        if staged and self.writer is not None:
            self.writer.offer(staged)
            for _, e in staged:
                self.metrics.events_out.labels(op=e.op).inc()
            self.metrics.outbox.set(self.fstore.outbox_depth())
            self.metrics.outbox_dropped.inc(0)

    # -- incoming ------------------------------------------------------------------------
    def handle(self, item: Any) -> bool:
        """Act on one fleet message from the queue; False if it is not one."""
        if isinstance(item, FleetRead):
            self._on_read(item)
        elif isinstance(item, FleetSnapshot):
            self._on_snapshot(item)
        elif isinstance(item, FleetPublished):
            self.fstore.published(item.seq)
            self.metrics.outbox.set(self.fstore.outbox_depth())
        elif isinstance(item, FleetLink):
            self._on_link(item)
        else:
            return False
        return True

    def _on_read(self, read: FleetRead) -> None:
        """Judge now, commit at the next flush(): the loop calls timers() right after each
        burst it drained, so a burst of reads from every peer costs one transaction and
        one nft call, not one per XREAD reply."""
        now = self.clock()
        if not read.entries:
            return
        batch = self._veto().judge_all(read.peer, [e for _, e in read.entries], now)
        for reason, n in batch.vetoed.items():
            self._count_veto(reason, n)
        if batch.quarantined:
            self._quarantined(read.peer, now)
        merge = self._merge
        for c, entry in batch.changes:
            merge(c, entry)
        ops = Counter(e.op for _, e in read.entries if e is not None)
        for op in ("ban", "unban"):  # label values are ours, never a peer's text
            if ops[op]:
                self.metrics.events_in.labels(op=op).inc(ops[op])
        last_id = read.entries[-1][0]
        last_seq = next((e.seq for _, e in reversed(read.entries) if e is not None), None)
        self.metrics.lag.labels(peer=read.peer).set(max(0.0, now - id_ms(last_id) / 1000))
        if last_seq is None:  # nothing but malformed entries: the sequence stays
            prev = self._cursors.get(read.peer) or self.fstore.cursors().get(read.peer)
            last_seq = prev[1] if prev else 0
        self._cursors[read.peer] = (last_id, last_seq)
        self._touched.add(read.peer)

    def _on_snapshot(self, snap: FleetSnapshot) -> None:
        now = self.clock()
        self.metrics.resyncs.inc()
        self.flush()  # what came before the snapshot, committed before it replaces it
        j, vetoed = self._veto().resync(snap.peer, snap.bans, now, self.fleet.outbox_max)
        for reason, n in vetoed.items():
            self._count_veto(reason, n)
        if j.quarantined:
            self._count_veto("quarantined", len(snap.bans))
            self._quarantined(snap.peer, now)
        by_net = {b.network: b for b in snap.bans}
        for c in j.changes:
            self._merge(c, by_net.get(c.network))
        log.info("fleet: resynced %s from its snapshot (seq %d, %d bans, %d vetoed)",
                 snap.peer, snap.seq, len(snap.bans), sum(vetoed.values()))
        self._cursors[snap.peer] = (snap.entry_id, snap.seq)
        self._touched.add(snap.peer)
        self.flush()

    def _count_veto(self, reason: str, n: int) -> None:
        self.vetoed[reason] = self.vetoed.get(reason, 0) + n
        self.metrics.vetoed.labels(reason=reason).inc(n)

    def _merge(self, c: Change, entry: FleetEntry | None) -> None:
        first = self._changes.get(c.network, (c.old, None))[0]
        self._changes[c.network] = (first, c.until)
        if entry is not None:
            self._why[c.network] = entry

    def _quarantined(self, peer: str, now: float) -> None:
        self._new_quarantine = True  # saved by flush(), with the withdrawals it caused
        self.metrics.quarantines.inc()
        self.metrics.quarantined.set(len(self._veto().quarantined(now)))
        self.alerts.fleet_quarantine(
            peer, f"more than {self.fleet.max_bans_per_publisher} bans within "
            f"{self.fleet.rate_window:g}s", self.fleet.quarantine_time)

    def flush(self) -> None:
        """Commit what the reads since the last flush decided. Store first (bans,
        contributions and cursors: one transaction), then the kernel: a crash in between
        leaves bans that start-up restores, never a cursor ahead of what we acted on."""
        if not (self._touched or self._changes or self._new_quarantine):
            return
        now = self.clock()
        changes, self._changes = self._changes, {}
        why, self._why = self._why, {}
        cursors = {p: self._cursors[p] for p in self._touched}
        self._touched = set()
        veto = self._veto()
        adds: list[Ban] = []
        replaces: list[Ban] = []
        removes: list[str] = []
        with self.store.batch():
            self.fstore.write_contributions(veto.drain())
            if self._new_quarantine:
                self._new_quarantine = False
                self.fstore.save_quarantines(veto.quarantined(now), now)
            rows: list[Ban] = []
            rows_now = self.fstore.ban_rows(changes)
            for network, (old, new) in changes.items():
                if old is None and new is None:
                    continue  # came and went within the batch
                current = rows_now.get(network)
                if current is not None and not current[1].startswith(FLEET_REASON) \
                        and current[0] > now:
                    continue  # decided here: the local ban rules this network
                if new is None:
                    if current is not None:
                        self.store.remove_ban(network)
                    removes.append(network)
                    continue
                e = why.get(network)
                pubs = sorted(veto.contributions(network))
                reason = f"{FLEET_REASON} {','.join(pubs)}" + (
                    f" ({e.kind} x{e.count:g})" if e is not None else "")
                ban = Ban(network, new - now, new, 1, reason)
                rows.append(ban)
                if old == new:
                    continue  # only who holds it changed: the kernel is right already
                (replaces if old is not None else adds).append(ban)
            self.store.add_bans(rows)
            for peer, (entry_id, seq) in cursors.items():
                self.fstore.save_cursor(peer, entry_id, seq)
        if self._kernel(adds, replaces, removes, now):
            # counted once the kernel took them (bench_fleet.py reads this)
            self.applied_total += len(adds)
            self.metrics.applied.inc(len(adds))
        self.metrics.remote_active.set(len(veto.applied))

    def _kernel(self, adds: list[Ban], replaces: list[Ban], removes: list[str],
                now: float) -> bool:
        from sshguardd.effects.nft_runner import FirewallError

        if not (adds or replaces or removes):
            return True
        self.firewall.stage(remove=removes)
        self.firewall.stage(add=adds)
        self.firewall.stage(add=replaces, replace=True)
        try:
            self.firewall.commit(now)
        except FirewallError as exc:
            # Fail closed: the store has them and they stay staged; timers() retries.
            log.error("fleet: firewall update failed (will retry): %s", exc)
            self._retry = True
            return False
        return True

    def _on_link(self, link: FleetLink) -> None:
        was_up = not self._down
        if link.connected:
            self._down.pop(link.part, None)
            if link.part == "writer":
                self._send_snapshot(self.clock(), force=True)
        else:
            self._down[link.part] = link.detail
        up = not self._down
        self.metrics.connected.set(1 if up else 0)
        if not link.connected:
            self.metrics.reconnects.inc()
        if up and not was_up:
            if self._down_since is not None and self._outage_alerted:
                log.info("fleet engine %s reachable again after %.0fs", self.transport.url,
                         time.monotonic() - self._down_since)
            self._down_since = None
            self._outage_alerted = False
        elif not up and self._down_since is None:
            self._down_since = time.monotonic()

    # -- timers --------------------------------------------------------------------------
    def timers(self) -> None:
        self.flush()
        now = self.clock()
        mono = time.monotonic()
        if self._retry and self.firewall.pending:
            from sshguardd.effects.nft_runner import FirewallError

            try:
                self.firewall.commit(now)
                self._retry = False
            except FirewallError as exc:
                log.error("fleet: firewall update failed again: %s", exc)
        if self._down_since is not None and not self._outage_alerted and \
                mono - self._down_since >= self.fleet.outage_alert_after:
            self._outage_alerted = True
            detail = "; ".join(f"{p}: {d}" for p, d in sorted(self._down.items()))
            self.alerts.fleet_outage(self.transport.url, detail, mono - self._down_since)
        if mono >= self._next_snapshot:
            self._send_snapshot(now)
        if mono >= self._next_status and self.writer is not None:
            self._next_status = mono + self.fleet.status_interval
            self.writer.set_status(self.status_record(now), 3 * self.fleet.status_interval)
            self._veto().expire(now)
            if self.cfg.ban.protect_logged_in > 0:  # logins since start protect too
                for network, when in self.store.logins(
                        now - self.cfg.ban.protect_logged_in).items():
                    self._veto().login(network, when)
            with self.store.batch():
                self.fstore.write_contributions(self._veto().drain())
            self.metrics.quarantined.set(len(self._veto().quarantined(now)))
            self.metrics.remote_active.set(len(self._veto().applied))
        self.metrics.outbox.set(self.fstore.outbox_depth())
        dropped = self.fstore.dropped
        if dropped:
            self.fstore.dropped = 0
            self.metrics.outbox_dropped.inc(dropped)
            log.warning("fleet: outbox full, dropped the %d oldest entries (peers will "
                        "resync from our snapshot)", dropped)

    def _send_snapshot(self, now: float, force: bool = False) -> None:
        """Our active local bans as of the latest staged entry, for peers that resync.
        Sent when something changed (or forced: the engine may have lost it)."""
        if self.writer is None:
            return
        self._next_snapshot = time.monotonic() + self.fleet.snapshot_interval
        entry_id, seq = self.fstore.last_staged()
        if seq == self._snapshot_seq and not force:
            return
        self._snapshot_seq = seq
        bans = []
        for b in self.store.active_bans(now):
            if not is_fleet(b):
                kind, count = kind_count(b)
                bans.append(FleetEntry("ban", b.network, b.until, kind, count, self.host, 0))
        self.writer.set_snapshot(entry_id, seq, bans)

    # -- seeing it -----------------------------------------------------------------------
    def status_record(self, now: float) -> dict[str, Any]:
        """What we publish about ourselves (with a TTL) for `sshguardd fleet status`."""
        rec: dict[str, Any] = {
            "host": self.host, "version": __version__, "last_seen": round(now, 3),
            "bans_active": len(self.store.active_bans(now)),
            "fleet_bans": len(self._veto().applied),
            "outbox": self.fstore.outbox_depth(),
            "quarantined": sorted(self._veto().quarantined(now)),
        }
        rec.update(self.status_extra())
        return rec

    def status(self) -> dict[str, Any]:
        """For the control socket's status: connection, cursors, outbox, quarantines."""
        now = self.clock()
        q = self.veto.quarantined(now) if self.veto is not None else {}
        return {"host": self.host, "engine": self.transport.url, "connected": not self._down,
                "last_seq": self.fstore.last_staged()[1],
                "down": dict(self._down), "outbox": self.fstore.outbox_depth(),
                "cursors": {p: {"id": i, "seq": s}
                            for p, (i, s) in self.fstore.cursors().items()},
                "fleet_bans": len(self.veto.applied) if self.veto is not None else 0,
                "applied_total": self.applied_total, "vetoed": dict(self.vetoed),
                "quarantined": {p: round(u - now) for p, u in q.items()},
                "resyncs": self.reader.resyncs if self.reader is not None else 0}

