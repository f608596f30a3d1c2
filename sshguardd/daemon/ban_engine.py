"""The ban engine: one LogBatch through detect -> policy -> firewall stage -> store ->
firewall commit, returning to the loop once per batch.

Fail closed: a decided ban is staged in the firewall before anything is written, and
committed to the kernel whether or not the store write succeeded. A failed store write
(a full disk) keeps the batch's bans in `unsaved`, retried with the next write, and does
not advance the saved position (so a restart reads those entries again). A failed
commit keeps the bans staged in the firewall; the loop retries it with backoff. Either
failure is alerted once per streak. The policy therefore never holds a network as
banned that is neither in the kernel nor waiting in the firewall's retry buffer.

Active-ban counts are counters (new bans that were not active already, minus unbans),
re-counted by SQLite every few seconds by the loop to account for expiries; no banning
batch re-reads the store.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sshguardd import config
from sshguardd.bans.penalties import CARRIED
from sshguardd.bans.policy import BanPolicy
from sshguardd.contracts import Ban, Kind, LogBatch, LogRecord
from sshguardd.daemon import parts
from sshguardd.detect import Correlator
from sshguardd.effects.nft_runner import FirewallError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: the bans it applied (or staged), and whether a write failed."""

    bans: tuple[Ban, ...] = ()
    store_failed: bool = False
    firewall_failed: bool = False


def family(network: str) -> str:
    return "ipv6" if ":" in network else "ipv4"


class FleetOutbox(Protocol):
    """daemon.fleet_sync.FleetStage as the engine uses it: entries for our fleet stream
    staged inside the transaction that records the bans, handed over after it."""

    def stage_bans(self, bans: Sequence[Ban]) -> list[Any]: ...

    def stage_unbans(self, networks: Sequence[str]) -> list[Any]: ...

    def offer(self, staged: Sequence[Any]) -> None: ...


class BanEngine:
    """Owns the BanPolicy and its Correlator (rebuilt together by `rebuild`), and the
    active-ban counters. Used on the daemon's loop thread only."""

    def __init__(self, cfg: config.Config, store: parts.Store, firewall: parts.Firewall,
                 metrics: parts.Metrics, alerts: parts.Alerts) -> None:
        self.cfg = cfg
        self.store = store
        self.firewall = firewall
        self.metrics = metrics
        self.alerts = alerts
        self.policy = BanPolicy(cfg.ban)
        self.correlator = Correlator()
        self.active = {"ipv4": 0, "ipv6": 0}
        self.unsaved: dict[str, Ban] = {}     # decided and applied, not yet in the store
        self.store_errors = 0
        self.firewall_errors = 0              # failed firewall calls in a row
        self.firewall_errors_total = 0
        self.loop_errors = 0
        self.batches = 0
        self.fleet: FleetOutbox | None = None   # fleet mode: set by the loop
        # network -> end of a ban that carries an sshd penalty over a restart
        # (daemon.penalty_carry): not a decision of ours, so one the policy takes replaces it.
        self.carried: dict[str, float] = {}

    # -- (re)building ----------------------------------------------------------------------

    def rebuild(self, replay: Sequence[LogRecord], now: float, *,
                saved_counters: bool = True) -> None:
        """A fresh policy and correlator from the store and the replayed entries (the
        last find_time before the saved position), acting on nothing.

        The failure counters come from the store when it holds them (saved with each
        batch's position, so exact whatever the journal kept) and `saved_counters`; the
        replay then only rebuilds the correlator's open connections. Otherwise (a store
        from an earlier version, or a reload with new [ban] rules, whose weights the saved
        counters were scored with) the replay rebuilds the counters too."""
        ban = self.cfg.ban
        saved = self.store.offenders(now - ban.find_time) if saved_counters else None
        # A bounded read: the policy keeps at most max_tracked networks' history.
        history = self.store.history(now - ban.history_time, limit=4 * ban.max_tracked)
        # The bans in force: lines still in flight from a network banned before the
        # restart (or banned by hand, which no replay can re-decide) must neither ban nor
        # escalate it again.
        active = self.store.active_bans(now)
        if saved is None and replay and replay[0].time is not None:
            # Bans decided inside the replayed window are decided again by the replay:
            # leave them out of the history so escalation does not count them twice. Not
            # for networks under an active ban: the policy knows they are banned, so the
            # replay decides nothing for them and their history must stay whole.
            first = replay[0].time
            covered = _ActiveCover(active)
            history = {n: ts if covered(n) else [t for t in ts if t < first]
                       for n, ts in history.items()}
        logged_in = self.store.logins(now - ban.protect_logged_in) \
            if ban.protect_logged_in > 0 else {}
        users = self.store.login_users(now - ban.protect_logged_in) if logged_in else {}
        policy = BanPolicy(ban, history=history, logged_in=logged_in,
                           active=active[-ban.max_tracked:], login_users=users)
        if saved is not None:
            log.info("restored the failure counters of %d offenders from the state store",
                     policy.load_offenders(saved))
        # One correlator per policy, fed every sshd entry in order (replay, then live), so
        # a connection that spans the saved position is still put together.
        correlator = Correlator()
        replayed = 0
        for rec in replay:
            for event in correlator.feed(rec.message, rec.pid, rec.host, rec.time):
                if saved is None:
                    policy.observe(rec, event)  # decisions were taken before the restart
                replayed += 1
        if replay:
            log.info("replayed %d journal entries (%d sshd events) from before the saved "
                     "position to rebuild failure counters", len(replay), replayed)
        self.policy, self.correlator = policy, correlator
        self.recount(now)

    def recount(self, now: float) -> None:
        """Counters from the store (SQLite counts; expiries show up here)."""
        counts = self.store.count_active(now)
        for ban in self.unsaved.values():
            if ban.until > now:
                counts[family(ban.network)] += 1
        self.active = counts
        for fam, n in counts.items():
            self.metrics.bans_active.labels(family=fam).set(n)

    @property
    def active_total(self) -> int:
        return sum(self.active.values())

    # -- one batch -------------------------------------------------------------------------

    def on_batch(self, batch: LogBatch, now: float) -> BatchResult:
        self.batches += 1
        decided, logins = self._decide(batch)
        for w in self.policy.take_withheld():  # once per network and protection
            log.warning("not banning %s (admin protection): %g failures, last against %s, "
                        "who logged in from there within ban.protect_logged_in; banned "
                        "anyway at %g failures or at one against another account",
                        w.network, w.score, w.user, self.policy.cfg.protect_max_failures)
            self.metrics.bans_withheld.inc()
        self.metrics.journal_read([r.time for r in batch.records], now)
        new = list(decided.values())
        carried: set[str] = set()
        if new:
            # Escalation and the "already banned" test live in a bounded cache in the
            # policy; the store is the truth: a ban it still holds is not decided again.
            again = self.store.active_among([b.network for b in new], now)
            # A carried-over sshd penalty is no decision of ours: a ban the policy decides
            # replaces it (else the short one would swallow the real one).
            carried = {n for n in again if self.carried.pop(n, 0.0) > now}
            again -= carried
            for b in new:
                if b.network in again:
                    self.policy.note_banned(b.network, b.until)
            new = [b for b in new if b.network not in again]
        # Catching up after downtime can decide bans that have run out already: they
        # count for escalation (stored below) but are neither applied nor announced.
        live = [b for b in new if b.until > now]
        if len(live) < len(new):
            log.info("%d bans decided from old entries had already expired",
                     len(new) - len(live))
        if live:  # before the store: fail closed
            self.firewall.stage(add=[b for b in live if b.network not in carried])
            if carried:
                self.firewall.stage(add=[b for b in live if b.network in carried],
                                    replace=True)
        store_failed = not self._save(new, logins, batch.position)
        firewall_failed = bool(live) and not self.commit(now)
        for b in live:   # the alert is also the log line (alerts.Alerts)
            self.alerts.ban(b.network, b.duration, b.strikes, b.reason)
            self.active[family(b.network)] += 1
        if live:
            self.metrics.ban_applied(b.network for b in live)
            self._publish_counts()
        return BatchResult(tuple(live), store_failed, firewall_failed)

    def _decide(self, batch: LogBatch) -> tuple[dict[str, Ban],
                                                list[tuple[str, float, str | None]]]:
        bans: dict[str, Ban] = {}
        logins: list[tuple[str, float, str | None]] = []
        feed = self.correlator.feed
        for rec in batch.records:
            # The correlator gives classify()'s event for this line plus any event of an
            # earlier address-less line of the same connection that this line completes;
            # same pid, so the policy scores them into the same connection, never twice.
            try:
                events = feed(rec.message, rec.pid, rec.host, rec.time)
            except Exception:  # one odd record must not cost the rest of the batch
                self.loop_errors += 1
                log.exception("classifier failed on %r", rec.message[:200])
                continue
            for event in events:
                self.metrics.failure(event.kind)
                if event.kind is Kind.ACCEPTED and rec.time is not None:
                    net = self.policy.network_of(event.host)
                    if net is not None:
                        logins.append((net, rec.time, event.user))
                try:
                    ban = self.policy.observe(rec, event)
                except Exception:
                    self.loop_errors += 1
                    log.exception("policy failed on %r", rec.message[:200])
                    continue
                if ban is not None:
                    bans[ban.network] = ban
        return bans, logins

    def _save(self, new: Sequence[Ban], logins: Sequence[tuple[str, float, str | None]],
              position: str | None) -> bool:
        """Bans (with any left unsaved before), logins and the position in one
        transaction. False (and the bans kept in `unsaved`) when the store fails."""
        bans = [*self.unsaved.values(), *new]
        staged: list[Any] = []
        counters = self.policy.take_changes()
        try:
            with self.store.batch():
                if counters:
                    self.store.save_offenders(counters)
                if bans:
                    self.store.add_bans(bans)
                    if self.fleet is not None:  # our stream's entries, same transaction
                        staged = self.fleet.stage_bans(bans)
                if logins:
                    self.store.record_logins(logins)
                if position is not None:
                    self.store.save_position(position)
        except (sqlite3.Error, OSError) as exc:
            self.policy.keep_changes(counters)
            for b in new:
                self.unsaved[b.network] = b
            self.store_errors += 1
            log.error("state store write failed (%s); %d bans are applied but not saved, "
                      "retried with the next write", exc, len(self.unsaved))
            if self.store_errors == 1 or len(new):
                self.alerts.startup_problem("state store", f"write failed: {exc}; "
                                            f"{len(self.unsaved)} bans not saved yet")
            return False
        if self.fleet is not None:
            self.fleet.offer(staged)
        if self.unsaved:
            log.info("state store writable again: %d bans saved", len(self.unsaved))
            self.unsaved.clear()
        self.store_errors = 0
        return True

    def retry_store(self) -> bool:
        """Write what a failed write left unsaved (the loop calls this on its timer)."""
        return not self.unsaved or self._save((), (), None)

    # -- the firewall ----------------------------------------------------------------------

    def commit(self, now: float) -> bool:
        """Push what the firewall has staged. False when nft failed (it stays staged)."""
        try:
            self.firewall.commit(now)
        except FirewallError as exc:
            self.firewall_failed("add", exc)
            return False
        self.firewall_errors = 0
        return True

    def firewall_failed(self, operation: str, exc: Exception) -> None:
        self.firewall_errors += 1
        self.firewall_errors_total += 1
        self.metrics.ban_errors.labels(operation=_op(operation)).inc()
        # str(FirewallError) quotes argv, the JSON payload and nft's stderr.
        log.error("firewall %s failed (%d in a row; %d changes staged): %s", operation,
                  self.firewall_errors, self.firewall.pending, exc)
        if self.firewall_errors == 1:
            self.alerts.startup_problem("firewall", f"{operation} failed: {exc}")

    def restore(self, now: float) -> int:
        """Make the kernel hold every active ban (the store's and the unsaved ones)."""
        bans = {b.network: b for b in self.store.active_bans(now)}
        bans.update((n, b) for n, b in self.unsaved.items() if b.until > now)
        self.carried = {n: b.until for n, b in bans.items() if b.reason.startswith(CARRIED)}
        self.firewall.setup()
        self.firewall.restore(list(bans.values()), now)
        self.firewall_errors = 0
        return len(bans)

    def clock_stepped(self, delta: float) -> None:
        """The wall clock jumped by `delta` seconds (NTP at boot, an admin's `date -s`).
        The kernel's timeouts run on regardless, so every active ban's end moves with
        the clock: the store's, the policy's and the unsaved ones. Without this a step
        back by an hour left the policy ignoring a network for an hour after the kernel
        had let it in again."""
        log.warning("wall clock stepped by %+.0f s; moving the ends of active bans with it",
                    delta)
        try:
            self.store.shift_bans(delta)
        except (sqlite3.Error, OSError) as exc:
            log.error("could not move the stored bans' ends (%s)", exc)
        self.policy.shift_bans(delta)
        self.unsaved = {n: Ban(b.network, b.duration, b.until + delta, b.strikes, b.reason)
                        for n, b in self.unsaved.items()}

    # -- by hand (the control API) ---------------------------------------------------------

    def manual_ban(self, address: str, duration: float | None, now: float) -> Ban:
        """Raises ValueError for what cannot be banned (see BanPolicy.manual_ban)."""
        ban = self.policy.manual_ban(address, duration, now)
        self.carried.pop(ban.network, None)
        was = self.store.active_among([ban.network], now)
        self.firewall.stage(add=[ban], replace=True)  # may lengthen a live ban
        self._save([ban], (), None)
        self.commit(now)
        if not was:
            self.active[family(ban.network)] += 1
        self.alerts.ban(ban.network, ban.duration, ban.strikes, ban.reason or "manual")
        self.metrics.ban_applied([ban.network])
        self._publish_counts()
        return ban

    def unban(self, address: str, now: float) -> list[str] | None:
        """Lift the ban covering an address (an IPv6 /64, say) or the bans inside a
        network; None if nothing matched. Raises ValueError for a bad address."""
        target = ipaddress.ip_network(address.strip(), strict=False)
        nets = [b.network for b in self.store.active_bans(now)
                if _overlaps(ipaddress.ip_network(b.network, strict=False), target)]
        nets += [n for n in self.unsaved if n not in nets and
                 _overlaps(ipaddress.ip_network(n, strict=False), target)]
        if not nets:
            return None
        for n in nets:
            self.policy.forget(n)
            self.carried.pop(n, None)
        staged: list[Any] = []
        with self.store.batch():
            for n in nets:
                self.store.remove_ban(n)
            self.store.save_offenders(self.policy.take_changes())
            if self.fleet is not None:
                staged = self.fleet.stage_unbans(nets)
        if self.fleet is not None:
            self.fleet.offer(staged)
        for n in nets:
            self.unsaved.pop(n, None)
            self.active[family(n)] = max(0, self.active[family(n)] - 1)
        self.firewall.stage(remove=nets)
        self.commit(now)
        for n in nets:
            self.alerts.unban(n, "manual")
        self.metrics.unbanned(nets)
        self._publish_counts()
        return nets

    def _publish_counts(self) -> None:
        for fam, n in self.active.items():
            self.metrics.bans_active.labels(family=fam).set(n)


def _op(operation: str) -> str:
    # ban_errors' label values are fixed up front (metrics.FIREWALL_OPERATIONS).
    return {"check": "restore"}.get(operation, operation)


def _overlaps(a: ipaddress.IPv4Network | ipaddress.IPv6Network,
              b: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return a.version == b.version and (a.subnet_of(b) or b.subnet_of(a))  # type: ignore[arg-type]


class _ActiveCover:
    """`cover(network) -> bool`: is `network` one of the active bans, or inside a wider
    one (a manual /16, or the /64 around a /128)? One set lookup per prefix length in
    use, so thousands of bans against thousands of history entries stay cheap."""

    def __init__(self, bans: Sequence[Ban]):
        self.exact: set[str] = set()
        self.lengths: dict[int, set[int]] = {4: set(), 6: set()}
        for b in bans:
            try:
                net = ipaddress.ip_network(b.network, strict=False)
            except ValueError:
                continue
            self.exact.add(str(net))
            self.lengths[net.version].add(net.prefixlen)

    def __call__(self, network: str) -> bool:
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            return network in self.exact
        return any(str(net.supernet(new_prefix=n)) in self.exact
                   for n in self.lengths[net.version] if n <= net.prefixlen)
