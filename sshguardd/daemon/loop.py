"""The daemon: one queue, one loop, one owner of all mutable state.

    journal follower ─┐                        ┌→ firewall (one nft transaction per batch)
    control socket ───┼→ queue → Daemon loop ──┼→ store (bans, history, cursor)
    drift watcher ────┘    (+ timers, flags)   ├→ drift guard (judge, repair)
                                               └→ metrics, journal alerts, sd_notify

Threads only read and enqueue; everything that changes state happens on the loop, so
nothing here needs a lock. Signal handlers only set flags (uvicorn's model); the loop wakes
at least every `tick` seconds to look at them, to run timers and to ping the watchdog, and
drains a burst for at most one tick before doing so, so a flood cannot starve WATCHDOG=1.

Order of effects for a batch of log records: classify (classify.Correlator, which lends an
address-less line the address of its connection's other lines) → policy (which scores the
lines of one sshd pid as one connection) → store (new bans and the
journal cursor in one SQLite transaction) → firewall (all new bans in one nft transaction).
Committing before the firewall means a crash between the two leaves a ban that start-up
restores into the kernel, and never a cursor that is ahead of what was decided. A failed
nft call is logged with its argv, payload and stderr, counted, and retried with backoff;
the daemon lives on.

On start, the journal entries of the last find_time before the saved cursor are replayed
into the (fresh) policy and correlator without acting on them, so failure counters
survive a restart or a `kill -9`: no failure lost, none counted twice. The policy is also
given the bans still active in the store, so lines in flight from a network banned before
the restart (by the log or by hand) neither ban nor escalate it again.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sshguardd import __version__, config
from sshguardd.contracts import Ban, FileChanged, Kind, LogBatch, LogRecord

log = logging.getLogger(__name__)

class StartupError(Exception):
    """The daemon cannot start (firewall, journal or control socket unavailable). Its
    str() is the one line to print; the CLI maps the class to an exit code."""


class StateStoreError(StartupError):
    """The state store (state.db or its directory) is damaged or unusable."""


def sshd_ports(sshd: Path | str = "/usr/sbin/sshd", timeout: float = 10.0) -> tuple[int, ...]:
    """The ports sshd listens on, from `sshd -T` (falling back to 22)."""
    argv = [str(sshd), "-T"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed (%s); protecting port 22", argv, exc)
        return (22,)
    if out.returncode != 0:
        log.warning("%s exited %d: %s; protecting port 22", argv, out.returncode,
                    out.stderr.strip())
        return (22,)
    ports = []
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "port" and value.strip().isdigit():
            ports.append(int(value))
    return tuple(dict.fromkeys(ports)) or (22,)


@dataclass
class Reply:
    """A slot a control request waits on until the loop has answered it."""

    event: threading.Event = field(default_factory=threading.Event)
    value: dict[str, Any] | None = None

    def set(self, value: dict[str, Any]) -> None:
        self.value = value
        self.event.set()


@dataclass(frozen=True)
class _Control:
    request: dict[str, Any]
    reply: Reply


def _network(text: str) -> str:
    return str(ipaddress.ip_network(text.strip(), strict=False))


class Daemon:
    """`Daemon(cfg, metrics=..., alerts=..., notifier=..., ...)`; `run() -> int`.

    Every effect can be injected (tests pass real ones with temp paths); None builds the
    production one from cfg when the daemon starts:
      store      store.Store(state_dir / "state.db")
      firewall   firewall.NftFirewall(table, ports, nft); ports from cfg or `sshd -T`
      follower   journal_follow.JournalFollower(units, commands, directory, cursor)
      drift      drift.DriftGuard(cfg, alerts=, metrics=) (None if drift.enabled is false)
      watcher_factory(paths, callback, debounce=, relevant=) -> watcher.Watcher
      control    control.ControlServer(cfg.control.socket, handler)
    config_path is re-read on SIGHUP. clock gives wall time (for manual bans, expiry and
    status); the policy itself only ever sees the log entries' own timestamps.
    """

    def __init__(
        self,
        cfg: config.Config,
        *,
        config_path: Path | str | None = None,
        metrics: Any = None,
        alerts: Any = None,
        notifier: Any = None,
        store: Any = None,
        firewall: Any = None,
        follower: Any = None,
        drift: Any = None,
        watcher_factory: Callable[..., Any] | None = None,
        control_server: Callable[..., Any] | None = None,
        serve_metrics: bool = True,
        clock: Callable[[], float] = time.time,
        tick: float = 1.0,
        firewall_check_interval: float = 30.0,
        install_signals: bool = True,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        if metrics is None:
            from sshguardd.effects.metrics import Metrics

            metrics = Metrics()
        if alerts is None:
            from sshguardd.effects.alerts import Alerts

            alerts = Alerts()
        if notifier is None:
            from sshguardd.daemon.notify import Notifier

            notifier = Notifier()
        self.metrics = metrics
        self.alerts = alerts
        self.notifier = notifier
        self.store = store
        self.firewall = firewall
        self.follower = follower
        self.drift = drift
        self._watcher_factory = watcher_factory
        self._control_factory = control_server
        self._serve_metrics = serve_metrics
        self.clock = clock
        self.tick = tick
        self.firewall_check_interval = firewall_check_interval
        self.install_signals = install_signals

        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1024)
        self.policy: Any = None
        self.correlator: Any = None
        self.watcher: Any = None
        self.control: Any = None
        self.metrics_server: Any = None
        self._closing = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._pending_bans: dict[str, Ban] = {}   # decided, not yet in the kernel
        self._pending_unbans: set[str] = set()
        self._retry_at = 0.0
        self._retry_delay = 1.0
        self._next_fw_check = 0.0
        self._started_at = 0.0
        self._last_drift = "none"
        self._last_full_check: float | None = None  # clock time of the last check_all
        self._status_text = ""
        self._active_count: int | None = None
        self._active_counted_at = 0.0
        self._next_housekeeping = 0.0
        self._next_prune = 0.0
        self.firewall_errors = 0
        self.loop_errors = 0
        self._next_follower_restart = 0.0
        self._follower_restart_delay = 1.0
        self._follower_started_at = 0.0
        self.batches = 0
        self.started = threading.Event()  # set once READY=1 was sent (for tests)

    # -- signals: flags only ---------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop_requested = True

    def request_reload(self, *_: Any) -> None:
        self._reload_requested = True

    # -- start-up --------------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.cfg
        if self.store is None:
            from sshguardd.effects.store import Store, StoreError

            try:
                cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise StoreError(f"cannot create the state directory "
                                 f"{cfg.daemon.state_dir}: {exc.strerror or exc}") from exc
            self.store = Store(cfg.daemon.state_dir / "state.db")
        if self.firewall is None:
            from sshguardd.effects.nft_runner import NftFirewall

            ports = cfg.firewall.ports or sshd_ports(cfg.drift.sshd)
            self.firewall = NftFirewall(table=cfg.firewall.table, ports=tuple(ports),
                                        nft=str(cfg.firewall.nft),
                                        ipv4_prefix=cfg.ban.ipv4_prefix,
                                        ipv6_prefix=cfg.ban.ipv6_prefix,
                                        family=cfg.firewall.family)
            log.info("protecting ssh port(s) %s", ", ".join(map(str, ports)))
        if self.follower is None:
            self.follower = self._make_follower(self.store.cursor())
        if self.drift is None and cfg.drift.enabled:
            from sshguardd.daemon.drift_guard import DriftGuard

            self.drift = DriftGuard(cfg, alerts=self.alerts, metrics=self.metrics)
        if self._watcher_factory is None:
            from sshguardd.effects.watcher import Watcher

            self._watcher_factory = Watcher
        if self._control_factory is None:
            from sshguardd.effects.control_socket import ControlServer

            self._control_factory = ControlServer

    def _make_follower(self, cursor: str | None) -> Any:
        src = self.cfg.source
        if src.backend == "file":
            from sshguardd.effects.logfile import FileFollower

            return FileFollower(src.files, position=cursor)
        from sshguardd.effects.journal import JournalFollower

        return JournalFollower(src.units, src.commands, directory=src.journal_directory,
                               cursor=cursor, on_suppressed=self._log_suppressed)

    def _log_suppressed(self, unit: str, dropped: int) -> None:
        # Called on the follower's thread: a counter and a journal entry, no loop state.
        self.metrics.log_suppressed.labels(unit=unit).inc(dropped)
        self.alerts.log_suppressed(unit, dropped)

    def _make_policy(self, replay: Sequence[LogRecord]) -> Any:
        """A fresh BanPolicy (and Correlator) rebuilt from the store and the replayed
        entries. Sets self.correlator too: the two are only meaningful together."""
        from sshguardd.detect import Correlator
        from sshguardd.bans.policy import BanPolicy

        ban = self.cfg.ban
        now = self.clock()
        history = self.store.history(now - ban.history_time)
        # The bans in force: lines still in flight from a network banned before the
        # restart (or banned by hand, which no replay can re-decide) must neither ban nor
        # escalate it again.
        active = self.store.active_bans(now)
        if replay and replay[0].time is not None:
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
        policy = BanPolicy(ban, history=history, logged_in=logged_in, active=active)
        # One correlator per policy, fed every sshd entry in order (replay, then live), so
        # a connection that spans the saved position is still put together. Bounded:
        # 4096 open connections (oldest dropped first), entries older than 10 minutes of
        # log time dropped, and a connection's entry is dropped at its closing line.
        correlator = Correlator()
        replayed = 0
        for rec in replay:
            for event in correlator.feed(rec.message, rec.pid, rec.host, rec.time):
                policy.observe(rec, event)  # decisions were taken before the restart
                replayed += 1
        if replay:
            log.info("replayed %d journal entries (%d sshd events) from before the saved "
                     "position to rebuild failure counters", len(replay), replayed)
        self.correlator = correlator
        return policy

    def start(self) -> None:
        """Bring everything up; raises StartupError (StateStoreError for a damaged or
        unusable state store). Sends READY=1 at the end."""
        self._started_at = self.clock()
        try:
            self._start()
        except sqlite3.Error as exc:
            # Store() checked the file when it opened it; damage deeper in it shows up on
            # the first reads (active bans, history, cursor).
            path = getattr(self.store, "path", self.cfg.daemon.state_dir / "state.db")
            self._store_failed(f"the state store {path} is not usable ({exc}); move it "
                               "aside to start with no bans and no history")

    def _store_failed(self, detail: str) -> None:
        self.alerts.startup_problem("state store", detail)
        raise StateStoreError(f"cannot start: {detail}") from None

    def _start(self) -> None:
        from sshguardd.effects.store import StoreError

        try:
            self._build()
        except StoreError as exc:  # names the file and the reason
            self._store_failed(str(exc))
        from sshguardd.effects.nft_runner import FirewallError

        now = self.clock()
        try:
            self.firewall.setup()
            active = self.store.active_bans(now)
            if active:
                self.firewall.restore(active, now)
            log.info("firewall table %s ready; restored %d active bans",
                     self._table_name(), len(active))
        except FirewallError as exc:
            self.metrics.ban_errors.labels(operation="setup").inc()
            self.alerts.startup_problem("firewall", str(exc))
            raise StartupError(f"cannot set up the firewall: {exc}") from None
        self.metrics.set_active_bans(b.network for b in active)
        self._next_fw_check = time.monotonic() + self.firewall_check_interval

        try:
            self.follower.open()
            replay = self.follower.backlog(self.cfg.ban.find_time)
        except OSError as exc:
            self.alerts.startup_problem("log source", str(exc))
            raise StartupError(f"cannot open the log source: {exc}") from None
        self.policy = self._make_policy(replay)
        self.follower.start(self._emit)
        self._follower_started_at = time.monotonic()

        try:
            self.control = self._control_factory(self.cfg.control.socket, self._on_request)
            self.control.start()
        except OSError as exc:
            self.alerts.startup_problem("control socket", str(exc))
            raise StartupError(f"cannot open the control socket: {exc}") from None

        if self.drift is not None:
            self._drift_check("start")
            self._start_watcher()

        if self._serve_metrics and self.cfg.metrics.enabled:
            try:
                self.metrics_server = self.metrics.serve(self.cfg.metrics.address,
                                                         self.cfg.metrics.port)
            except OSError as exc:
                # Metrics are for operators; bans and repairs matter more than them.
                self.alerts.startup_problem("metrics", str(exc))
        self.notifier.ready(self._status())
        self.started.set()
        log.info("sshguardd %s running (pid %d)", __version__, os.getpid())

    def _table_name(self) -> str:
        """'inet sshguardd': the table the firewall object really manages (an injected
        one may differ from the config), as `nft list table` wants it."""
        layout = getattr(self.firewall, "layout", None)
        family = getattr(layout, "family", None) or self.cfg.firewall.family
        table = getattr(layout, "table", None) or self.cfg.firewall.table
        return f"{family} {table}"

    def _start_watcher(self) -> None:
        assert self.drift is not None and self._watcher_factory is not None
        # An immutable snapshot: the watcher thread never calls into the drift guard.
        self.watcher = self._watcher_factory(
            self.drift.watch_set(), self._on_file, debounce=self.cfg.drift.debounce)
        self.watcher.start()

    # -- producers (other threads): enqueue only ------------------------------------------

    def _put(self, item: Any) -> bool:
        while not self._closing.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _emit(self, batch: LogBatch) -> None:
        self._put(batch)

    def _on_file(self, changed: FileChanged) -> None:
        self._put(changed)

    def _on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = Reply()
        if not self._put(_Control(request, reply)) or not reply.event.wait(10.0):
            return {"ok": False, "error": "daemon busy or stopping"}
        assert reply.value is not None
        return reply.value

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, shut down; 0 when stopped by a signal.
        Raises StartupError (after shutting down what had started) when it cannot start:
        the caller (the `run` verb) prints it and picks the exit code."""
        previous = {}
        if self.install_signals:
            for sig, handler in ((signal.SIGTERM, self.request_stop),
                                 (signal.SIGINT, self.request_stop),
                                 (signal.SIGHUP, self.request_reload)):
                previous[sig] = signal.signal(sig, handler)
        try:
            self.start()
            self.loop()
            return 0
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        tick = self.tick if interval is None else min(self.tick, interval / 3)
        while not self._stop_requested:
            try:
                item = self.queue.get(timeout=tick)
            except queue.Empty:
                item = None
            if item is not None:
                self._guarded(item)
                # Drain what else is waiting before timers, so bursts stay batched; but
                # only for one tick: under a sustained flood the follower refills the
                # queue as fast as it is emptied, and a drain until empty would starve the
                # timers, the reload flag and, above all, WATCHDOG=1 (systemd would then
                # kill a daemon that is merely busy).
                budget_end = time.monotonic() + tick
                while not self._stop_requested and time.monotonic() < budget_end:
                    try:
                        self._guarded(self.queue.get_nowait())
                    except queue.Empty:
                        break
            if self._reload_requested:
                self._reload_requested = False
                self._guarded_call(self.reload, "reload")
            # WATCHDOG=1 is the last step of _timers: if it keeps failing, the pings stop
            # and systemd restarts the daemon; a one-off failure costs one tick.
            self._guarded_call(self._timers, "timers")

    def _guarded_call(self, fn: Callable[[], None], what: str) -> None:
        try:
            fn()
        except Exception:
            self.loop_errors += 1
            log.exception("%s failed", what)

    def _guarded(self, item: Any) -> None:
        # A bug or an I/O error on one item (a full disk under the store, say) must not end
        # the loop; a batch that failed is not marked processed and is read again after a
        # restart.
        try:
            self._dispatch(item)
        except Exception:
            self.loop_errors += 1
            log.exception("processing %s failed", type(item).__name__)

    def _dispatch(self, item: Any) -> None:
        if isinstance(item, LogBatch):
            self.on_batch(item)
        elif isinstance(item, FileChanged):
            if self.drift is not None:
                self._drift_changed(item)
        elif isinstance(item, _Control):
            try:
                item.reply.set(self.on_request(item.request))
            except Exception as exc:  # an answer, always; the loop goes on
                log.exception("control command %r failed", item.request.get("cmd"))
                item.reply.set({"ok": False, "error": f"internal error: {exc}"})
        else:
            log.error("unknown queue item %r", item)

    def _timers(self) -> None:
        mono = time.monotonic()
        if (self._pending_bans or self._pending_unbans) and mono >= self._retry_at:
            self._apply_firewall()
        if mono >= self._next_fw_check:
            self._next_fw_check = mono + self.firewall_check_interval
            self._check_firewall()
        if self.drift is not None:
            wake = self.drift.next_wakeup()
            now = self.clock()
            if wake is not None and now >= wake:
                self._drift_check(self._drift_wakeup_reason(now))
        if self.follower is not None and self.started.is_set() and \
                not getattr(self.follower, "alive", True) and mono >= self._next_follower_restart:
            self._restart_follower(mono)
        if mono >= self._next_housekeeping:
            self._next_housekeeping = mono + 10.0
            now = self.clock()
            self.policy.expire(now)
            if mono >= self._next_prune:
                self._next_prune = mono + 600.0
                ban = self.cfg.ban
                self.store.prune(now, now - ban.history_time, now - ban.protect_logged_in)
            self.metrics.policy_state(self.policy.tracked, self.policy.evictions)
        status = self._status()
        if status != self._status_text:
            self._status_text = status
            self.notifier.status(status)
        if self.healthy():
            self.notifier.watchdog()

    def _restart_follower(self, mono: float) -> None:
        """The reader thread died (its exception is logged): reopen from the last saved
        position, after 1, 2, 4 .. 30 s between attempts (back to 1 s once a follower has
        lived for 5 minutes). WATCHDOG=1 stops while it is dead, so if it cannot be
        reopened, or keeps dying, systemd restarts the whole daemon."""
        if mono - self._follower_started_at >= 300.0:
            self._follower_restart_delay = 1.0
        self._next_follower_restart = mono + self._follower_restart_delay
        self._follower_restart_delay = min(self._follower_restart_delay * 2, 30.0)
        self.metrics.journal_read_errors.inc()
        log.error("log follower stopped; reopening it from the saved position")
        try:
            self.follower.close()
        except Exception:
            log.exception("closing the dead follower failed")
        try:
            follower = self._make_follower(self.store.cursor())
            follower.open()
            follower.start(self._emit)
        except Exception:
            log.exception("reopening the log source failed")
            return
        self.follower = follower
        self._follower_started_at = mono
        log.info("log follower reopened")

    def healthy(self) -> bool:
        """What WATCHDOG=1 vouches for: the loop turns and its producers are alive."""
        follower_ok = bool(getattr(self.follower, "alive", True))
        control_ok = self.control is None or getattr(self.control, "_thread", None) is None \
            or self.control._thread.is_alive()
        # The servers' own verdict: thread dead, or accept() out of descriptors.
        servers_ok = not any(getattr(s, "problem", None)
                             for s in (self.control, self.metrics_server) if s is not None)
        return follower_ok and control_ok and servers_ok

    def _status(self) -> str:
        # Counting active bans is a query: do it at most every 10 s (or after a change),
        # not on every tick of an idle daemon.
        mono = time.monotonic()
        if self.store is not None and (self._active_count is None
                                       or mono >= self._active_counted_at + 10.0):
            bans = self.store.active_bans(self.clock())
            self._active_count = len(bans)
            self._active_counted_at = mono
            self.metrics.set_active_bans(b.network for b in bans)  # expiries show here
        active = self._active_count or 0
        tracked = self.policy.tracked if self.policy is not None else 0
        text = f"{active} bans active, {tracked} offenders tracked, last drift: {self._last_drift}"
        if self._pending_bans or self._pending_unbans:
            text += f", {len(self._pending_bans) + len(self._pending_unbans)} firewall changes pending"
        return text

    # -- log records -------------------------------------------------------------------------

    def on_batch(self, batch: LogBatch) -> None:
        self.batches += 1
        bans: dict[str, Ban] = {}
        logins: list[tuple[str, float]] = []
        feed = self.correlator.feed
        for rec in batch.records:
            # The correlator gives classify()'s event for this line plus any event of an
            # earlier address-less line of the same connection that this line completes
            # (a kex error and then the close naming the address). Those are observed with
            # this record: same pid, so BanPolicy scores them into the same connection
            # (probes once per connection, refusals as max with the attempts), never twice.
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
                        logins.append((net, rec.time))
                try:
                    ban = self.policy.observe(rec, event)
                except Exception:
                    self.loop_errors += 1
                    log.exception("policy failed on %r", rec.message[:200])
                    continue
                if ban is not None:
                    bans[ban.network] = ban
        now = self.clock()
        self.metrics.journal_read([r.time for r in batch.records], now)
        new = list(bans.values())
        with self.store.batch():
            if new:
                self.store.add_bans(new)
            if logins:
                self.store.record_logins(logins)
            if batch.position is not None:
                self.store.save_cursor(batch.position)
        # Catching up after downtime can decide bans that have run out already: they
        # count for escalation (stored above) but are neither applied nor announced.
        live = [b for b in new if b.until > now]
        if len(live) < len(new):
            log.info("%d bans decided from old entries had already expired",
                     len(new) - len(live))
        if live:
            for ban in live:
                self._pending_bans[ban.network] = ban
                self._pending_unbans.discard(ban.network)
            self._apply_firewall()
            for ban in live:  # the alert is also the log line (alerts.Alerts)
                self.alerts.ban(ban.network, ban.duration, ban.strikes, ban.reason)
            self.metrics.ban_applied(b.network for b in live)
            self.metrics.set_active_bans(b.network for b in self.store.active_bans(now))
            self._active_count = None

    # -- the firewall ------------------------------------------------------------------------

    def _apply_firewall(self) -> None:
        """Push pending bans (one transaction) and unbans; on failure keep them pending and
        retry with exponential backoff (1 s .. 60 s)."""
        from sshguardd.effects.nft_runner import FirewallError

        now = self.clock()
        ok = True
        if self.firewall_errors and self._retry_delay > 1.0:
            # Failed before: the table may be gone (nftables.service restarted); put it
            # back first, with every ban in the store (which includes the pending ones).
            self._check_firewall()
        if self._pending_unbans:
            nets = sorted(self._pending_unbans)
            try:
                self.firewall.remove(nets)
                self._pending_unbans.clear()
            except FirewallError as exc:
                ok = False
                self._firewall_failed("remove", exc)
        if self._pending_bans:
            bans = [b for b in self._pending_bans.values() if b.until > now]
            try:
                if bans:
                    self.firewall.add(bans, now)
                self._pending_bans.clear()
            except FirewallError as exc:
                ok = False
                self._firewall_failed("add", exc)
        if ok:
            self._retry_delay = 1.0
        else:
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, 60.0)

    def _firewall_failed(self, operation: str, exc: Exception) -> None:
        self.firewall_errors += 1
        self.metrics.ban_errors.labels(operation=operation).inc()
        # str(FirewallError) quotes argv, the JSON payload and nft's stderr.
        log.error("firewall %s failed (will retry in %.0fs): %s", operation,
                  self._retry_delay, exc)

    def _check_firewall(self) -> None:
        """If our table vanished (nftables.service restarted, `nft flush ruleset`), put it
        back with every active ban: the kernel forgot them, the store did not."""
        from sshguardd.effects.nft_runner import FirewallError

        try:
            if self.firewall.exists():
                return
            now = self.clock()
            log.warning("firewall table is gone; recreating it and restoring bans")
            self.firewall.setup()
            self.firewall.restore(self.store.active_bans(now), now)
        except FirewallError as exc:
            self._firewall_failed("restore", exc)

    def _resync_firewall(self) -> None:
        """On SIGHUP: make the kernel match the store now, whatever happened to it. A
        reload of nftables.service (`flush ruleset`) is propagated to ours as a reload
        (ReloadPropagatedFrom= in the unit), and `nft flush table` leaves the table but
        empties it, which exists() cannot see: so repair the table and re-add every
        active ban, rather than waiting for the periodic check."""
        from sshguardd.effects.nft_runner import FirewallError

        now = self.clock()
        try:
            self.firewall.setup()
            active = self.store.active_bans(now)
            self.firewall.restore(active, now)
        except FirewallError as exc:
            self._firewall_failed("restore", exc)
            self._retry_at = time.monotonic() + self._retry_delay
            return
        # The store holds every decided ban and none of the lifted ones, so whatever was
        # waiting for a retry is settled by the restore.
        self._pending_bans.clear()
        self._pending_unbans.clear()
        self._retry_delay = 1.0
        self._next_fw_check = time.monotonic() + self.firewall_check_interval
        log.info("firewall table %s re-checked on reload; %d active bans in place",
                 self._table_name(), len(active))

    # -- drift -------------------------------------------------------------------------------

    def _drift_check(self, reason: str) -> None:
        # The drift guard failing must not take the ban engine down with it.
        self._last_full_check = self.clock()
        try:
            self._drift_outcomes(self.drift.check_all(reason))
        except Exception as exc:
            self.loop_errors += 1
            log.exception("drift check (%s) failed", reason)
            self.alerts.startup_problem("drift guard", f"{reason}: {exc}")
        self._update_watches()

    def _drift_changed(self, changed: FileChanged) -> None:
        try:
            self._drift_outcomes(self.drift.handle(changed))
        finally:
            self._update_watches()

    def _update_watches(self) -> None:
        """Watch what the drift guard needs now: an Include line added to sshd_config
        brings a directory that must be watched at once, not at the next full check."""
        if self.drift is None or self.watcher is None:
            return
        try:
            watch = self.drift.watch_set()
            if watch != getattr(self.watcher, "watch", None):
                self.watcher.update(watch)
                log.info("watching %s", ", ".join(watch.dirs))
        except Exception:
            self.loop_errors += 1
            log.exception("updating the watched directories failed")

    def _drift_wakeup_reason(self, now: float) -> str:
        """Why next_wakeup() is due: the periodic full re-check, or a revert war's pause
        that ran out (or both)."""
        from sshguardd.daemon.drift_guard import RECHECK_INTERVAL

        last = self._last_full_check
        if last is not None and now >= last + RECHECK_INTERVAL:
            return "periodic re-check"
        return "revert-war pause over"

    def _drift_outcomes(self, outcomes: Sequence[Any]) -> None:
        for o in outcomes:
            action = getattr(o, "action", "")
            action = getattr(action, "value", action)
            if action in ("ok", "ignored", "(own write)"):
                continue
            self._last_drift = f"{o.item} in {o.file}: {action} at " + time.strftime(
                "%H:%M:%S", time.localtime(self.clock()))

    # -- control commands --------------------------------------------------------------------

    def on_request(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return self._cmd_status()
        if cmd == "bans":
            return self._cmd_bans()
        if cmd == "ban":
            return self._cmd_ban(req)
        if cmd == "unban":
            return self._cmd_unban(req)
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _cmd_status(self) -> dict[str, Any]:
        now = self.clock()
        active = self.store.active_bans(now)
        fam = {"ipv4": 0, "ipv6": 0}
        for b in active:
            fam["ipv6" if ":" in b.network else "ipv4"] += 1
        return {
            "ok": True,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(now - self._started_at, 3),
            "healthy": self.healthy(),
            "source": self.cfg.source.backend,
            "position": getattr(self.follower, "cursor", None),
            "entries_read": getattr(self.follower, "entries_read", 0),
            "batches": self.batches,
            "bans_active": len(active),
            "bans_by_family": fam,
            "offenders_tracked": self.policy.tracked,
            "offender_evictions": self.policy.evictions,
            # sshd connections whose lines the correlator holds (bounded, see _make_policy)
            "connections_tracked": len(self.correlator) if self.correlator is not None else 0,
            "firewall_errors": self.firewall_errors,
            "firewall_calls": getattr(self.firewall, "calls", None),
            "firewall_pending": len(self._pending_bans) + len(self._pending_unbans),
            "loop_errors": self.loop_errors,
            "last_drift": self._last_drift,
            "drift_mode": self.cfg.drift.mode if self.cfg.drift.enabled else "off",
        }

    def _cmd_bans(self) -> dict[str, Any]:
        now = self.clock()
        bans = sorted(self.store.active_bans(now), key=lambda b: b.until)
        return {"ok": True, "now": now, "bans": [
            {"network": b.network, "remaining": max(0.0, round(b.until - now, 1)),
             "until": b.until, "duration": b.duration, "strikes": b.strikes,
             "reason": b.reason} for b in bans]}

    def _cmd_ban(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = req.get("address")
        duration = req.get("duration")
        if not isinstance(addr, str):
            return {"ok": False, "error": "ban needs an address"}
        if duration is not None and (isinstance(duration, bool)
                                     or not isinstance(duration, (int, float))
                                     or duration <= 0):
            return {"ok": False, "error": "duration must be a positive number of seconds"}
        try:
            _network(addr)
        except ValueError:
            return {"ok": False, "error": f"not an IP address or network: {addr!r}"}
        now = self.clock()
        try:
            ban = self.policy.manual_ban(addr, None if duration is None else float(duration),
                                         now)
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        from sshguardd.effects.nft_runner import FirewallError

        with self.store.batch():
            self.store.add_bans([ban])
        self._pending_unbans.discard(ban.network)
        try:
            # replace, not add: a manual ban may lengthen one already in the kernel
            self.firewall.replace([ban], now)
        except FirewallError as exc:
            self._pending_bans[ban.network] = ban
            self._firewall_failed("add", exc)
            self._retry_at = time.monotonic() + self._retry_delay
        self.alerts.ban(ban.network, ban.duration, ban.strikes, ban.reason or "manual")
        self.metrics.ban_applied([ban.network])
        self.metrics.set_active_bans(b.network for b in self.store.active_bans(now))
        self._active_count = None
        return {"ok": True, "ban": {"network": ban.network, "duration": ban.duration,
                                    "until": ban.until, "strikes": ban.strikes,
                                    "reason": ban.reason or "manual"},
                "applied": ban.network not in self._pending_bans}

    def _cmd_unban(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = req.get("address")
        if not isinstance(addr, str):
            return {"ok": False, "error": "unban needs an address"}
        try:
            target = ipaddress.ip_network(addr.strip(), strict=False)
        except ValueError:
            return {"ok": False, "error": f"not an IP address or network: {addr!r}"}
        now = self.clock()
        # An address unbans the ban that covers it (an IPv6 /64, say); a network the bans
        # inside it.
        nets = [b.network for b in self.store.active_bans(now)
                if _overlaps(ipaddress.ip_network(b.network, strict=False), target)]
        if not nets:
            return {"ok": False, "error": f"{addr} is not banned"}
        with self.store.batch():
            for n in nets:
                self.store.remove_ban(n)
        for n in nets:
            self.policy.forget(n)
            self._pending_bans.pop(n, None)
            self._pending_unbans.add(n)
        self._apply_firewall()
        for n in nets:
            self.alerts.unban(n, "manual")
        self.metrics.unbanned(nets)
        self.metrics.set_active_bans(b.network for b in self.store.active_bans(now))
        self._active_count = None
        return {"ok": True, "removed": nets,
                "applied": not any(n in self._pending_unbans for n in nets)}

    # -- reload and shutdown ---------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-check the firewall table (restoring the bans into it), then re-read
        the config. Bans, history and the journal position stay; an invalid file is
        reported and the running config kept. READY=1 ends it in every case."""
        self.notifier.reloading()
        try:
            self._resync_firewall()
            self._reload_config()
        except Exception as exc:  # a bug must not end the loop; say so and carry on
            self.loop_errors += 1
            log.exception("reload failed")
            self.alerts.startup_problem("reload", f"reload failed: {exc}")
            self.metrics.reloads.labels(result="failure").inc()
        finally:
            self.notifier.ready(self._status())

    def _reload_config(self) -> None:
        path = self.config_path
        try:
            new = config.load(path)
        except config.ConfigError as exc:
            for line in exc.lines():
                log.error("reload refused: %s", line)
            self.alerts.startup_problem("reload", "; ".join(exc.lines()))
            self.metrics.reloads.labels(result="failure").inc()
            return
        old = self.cfg
        for section in ("firewall", "source", "control", "metrics", "daemon"):
            if getattr(old, section) != getattr(new, section):
                log.warning("config section [%s] changed: takes effect on restart", section)
        self.cfg = new
        if new.ban != old.ban:
            # Rebuild the policy under the new rules from the same evidence: stop the
            # follower, finish what it already read, replay the window, resume.
            self.follower.stop()
            while True:
                try:
                    self._guarded(self.queue.get_nowait())
                except queue.Empty:
                    break
            self.policy = self._make_policy(self.follower.backlog(new.ban.find_time))
            self.follower.start(self._emit)
        if new.drift != old.drift:
            from sshguardd.daemon.drift_guard import DriftGuard

            if self.watcher is not None:
                self.watcher.stop()
                self.watcher = None
            self.drift = DriftGuard(new, alerts=self.alerts, metrics=self.metrics) \
                if new.drift.enabled else None
            if self.drift is not None:
                self._start_watcher()
        if self.drift is not None:
            self._drift_check("reload")
        self.metrics.reloads.labels(result="success").inc()
        log.info("configuration reloaded from %s", path or config.DEFAULT_PATH)

    def shutdown(self) -> None:
        """Stop producers, answer nothing more, close the store. The firewall table and its
        bans stay in the kernel: stopping sshguardd must not open the door."""
        self.notifier.stopping()
        self._closing.set()
        for name in ("follower", "watcher", "control"):
            part = getattr(self, name)
            if part is None:
                continue
            try:
                part.stop()
            except Exception:
                log.exception("stopping %s failed", name)
        # Requests that raced with shutdown get an answer instead of a timeout.
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Control):
                item.reply.set({"ok": False, "error": "daemon stopping"})
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        if self.follower is not None and hasattr(self.follower, "close"):
            self.follower.close()
        if self.store is not None:
            self.store.close()
        close = getattr(self.notifier, "close", None)
        if close is not None:
            close()
        log.info("sshguardd stopped")


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


def _overlaps(a: Any, b: Any) -> bool:
    return a.version == b.version and (a.subnet_of(b) or b.subnet_of(a))
