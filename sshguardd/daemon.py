"""The daemon: one queue, one loop, one owner of all mutable state.

    journal follower ─┐                        ┌→ firewall (one nft transaction per batch)
    control socket ───┼→ queue → Daemon loop ──┼→ store (bans, history, cursor)
    drift watcher ────┘    (+ timers, flags)   ├→ drift guard (judge, repair)
                                               └→ metrics, journal alerts, sd_notify

Threads only read and enqueue; everything that changes state happens on the loop, so
nothing here needs a lock. Signal handlers only set flags (uvicorn's model); the loop wakes
at least every `tick` seconds to look at them, to run timers and to ping the watchdog.

Order of effects for a batch of log records: classify → policy → store (new bans and the
journal cursor in one SQLite transaction) → firewall (all new bans in one nft transaction).
Committing before the firewall means a crash between the two leaves a ban that start-up
restores into the kernel, and never a cursor that is ahead of what was decided. A failed
nft call is logged with its argv, payload and stderr, counted, and retried with backoff;
the daemon lives on.

On start, the journal entries of the last find_time before the saved cursor are replayed
into the (fresh) policy without acting on them, so failure counters survive a restart or
a `kill -9`: no failure lost, none counted twice.
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

EX_OK = 0
EX_UNAVAILABLE = 69


class StartupError(Exception):
    """The daemon cannot start (firewall, journal or control socket unavailable)."""


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
            from sshguardd.metrics import Metrics

            metrics = Metrics()
        if alerts is None:
            from sshguardd.alerts import Alerts

            alerts = Alerts()
        if notifier is None:
            from sshguardd.notify import Notifier

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
        self._status_text = ""
        self._active_count: int | None = None
        self._active_counted_at = 0.0
        self._next_housekeeping = 0.0
        self._next_prune = 0.0
        self.firewall_errors = 0
        self.loop_errors = 0
        self._next_follower_restart = 0.0
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
            from sshguardd.store import Store

            cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.store = Store(cfg.daemon.state_dir / "state.db")
        if self.firewall is None:
            from sshguardd.firewall import NftFirewall

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
            from sshguardd.drift import DriftGuard

            self.drift = DriftGuard(cfg, alerts=self.alerts, metrics=self.metrics)
        if self._watcher_factory is None:
            from sshguardd.watcher import Watcher

            self._watcher_factory = Watcher
        if self._control_factory is None:
            from sshguardd.control import ControlServer

            self._control_factory = ControlServer

    def _make_follower(self, cursor: str | None) -> Any:
        src = self.cfg.source
        if src.backend == "file":
            from sshguardd.file_follow import FileFollower

            return FileFollower(src.files, position=cursor)
        from sshguardd.journal_follow import JournalFollower

        return JournalFollower(src.units, src.commands, directory=src.journal_directory,
                               cursor=cursor)

    def _make_policy(self, replay: Sequence[LogRecord]) -> Any:
        from sshguardd.policy import BanPolicy

        ban = self.cfg.ban
        now = self.clock()
        history = self.store.history(now - ban.history_time)
        if replay and replay[0].time is not None:
            # Bans decided inside the replayed window are decided again by the replay:
            # leave them out of the history so escalation does not count them twice.
            first = replay[0].time
            history = {n: [t for t in ts if t < first] for n, ts in history.items()}
        logged_in = self.store.logins(now - ban.protect_logged_in) \
            if ban.protect_logged_in > 0 else {}
        policy = BanPolicy(ban, history=history, logged_in=logged_in)
        from sshguardd.classify import classify

        replayed = 0
        for rec in replay:
            event = classify(rec.message)
            if event is not None:
                policy.observe(rec, event)  # decisions were taken before the restart
                replayed += 1
        if replay:
            log.info("replayed %d journal entries (%d sshd events) from before the saved "
                     "position to rebuild failure counters", len(replay), replayed)
        return policy

    def start(self) -> None:
        """Bring everything up; raises StartupError. Sends READY=1 at the end."""
        self._started_at = self.clock()
        try:
            self._build()
        except (OSError, sqlite3.Error) as exc:  # e.g. state_dir unwritable, corrupt db
            self.alerts.startup_problem("state store", str(exc))
            raise StartupError(f"cannot open the state store: {exc}") from None
        from sshguardd.firewall import FirewallError

        now = self.clock()
        try:
            self.firewall.setup()
            active = self.store.active_bans(now)
            if active:
                self.firewall.restore(active, now)
            log.info("firewall table %s %s ready; restored %d active bans",
                     self.cfg.firewall.family, self.cfg.firewall.table, len(active))
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

    def _start_watcher(self) -> None:
        assert self.drift is not None and self._watcher_factory is not None
        paths = self.drift.watch_paths()
        self.watcher = self._watcher_factory(
            paths, self._on_file, debounce=self.cfg.drift.debounce,
            relevant=self.drift.is_relevant)
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
        """Start, loop until SIGTERM/SIGINT, shut down. Returns an exit code."""
        previous = {}
        if self.install_signals:
            for sig, handler in ((signal.SIGTERM, self.request_stop),
                                 (signal.SIGINT, self.request_stop),
                                 (signal.SIGHUP, self.request_reload)):
                previous[sig] = signal.signal(sig, handler)
        try:
            try:
                self.start()
            except StartupError as exc:
                log.error("%s", exc)
                return EX_UNAVAILABLE
            self.loop()
            return EX_OK
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
                # Drain what else is waiting before timers: bursts stay batched.
                while not self._stop_requested:
                    try:
                        self._guarded(self.queue.get_nowait())
                    except queue.Empty:
                        break
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            self._timers()

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
                self._drift_outcomes(self.drift.handle(item))
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
            if wake is not None and self.clock() >= wake:
                self._drift_check("revert-war pause over")
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
        position, at most every 30 s. WATCHDOG=1 stops meanwhile, so if it keeps dying
        systemd restarts the whole daemon."""
        self._next_follower_restart = mono + 30.0
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

    def healthy(self) -> bool:
        """What WATCHDOG=1 vouches for: the loop turns and its producers are alive."""
        follower_ok = bool(getattr(self.follower, "alive", True))
        control_ok = self.control is None or getattr(self.control, "_thread", None) is None \
            or self.control._thread.is_alive()
        return follower_ok and control_ok

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
        from sshguardd.classify import classify

        self.batches += 1
        bans: dict[str, Ban] = {}
        logins: list[tuple[str, float]] = []
        for rec in batch.records:
            event = classify(rec.message)
            if event is None:
                continue
            self.metrics.failure(event.kind)
            if event.kind is Kind.ACCEPTED and rec.time is not None:
                net = self.policy.network_of(event.host)
                if net is not None:
                    logins.append((net, rec.time))
            try:
                ban = self.policy.observe(rec, event)
            except Exception:  # one odd record must not cost the rest of the batch
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
        from sshguardd.firewall import FirewallError

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
        from sshguardd.firewall import FirewallError

        try:
            if self.firewall.exists():
                return
            now = self.clock()
            log.warning("firewall table is gone; recreating it and restoring bans")
            self.firewall.setup()
            self.firewall.restore(self.store.active_bans(now), now)
        except FirewallError as exc:
            self._firewall_failed("restore", exc)

    # -- drift -------------------------------------------------------------------------------

    def _drift_check(self, reason: str) -> None:
        # The drift guard failing must not take the ban engine down with it.
        try:
            self._drift_outcomes(self.drift.check_all(reason))
        except Exception as exc:
            self.loop_errors += 1
            log.exception("drift check (%s) failed", reason)
            self.alerts.startup_problem("drift guard", f"{reason}: {exc}")

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
        from sshguardd.firewall import FirewallError

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
        """SIGHUP: re-read the config. Bans, history and the journal position stay; an
        invalid file is reported and the running config kept."""
        self.notifier.reloading()
        path = self.config_path
        try:
            new = config.load(path)
        except config.ConfigError as exc:
            for line in exc.lines():
                log.error("reload refused: %s", line)
            self.alerts.startup_problem("reload", "; ".join(exc.lines()))
            self.metrics.reloads.labels(result="failure").inc()
            self.notifier.ready(self._status())
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
                    self._dispatch(self.queue.get_nowait())
                except queue.Empty:
                    break
            self.policy = self._make_policy(self.follower.backlog(new.ban.find_time))
            self.follower.start(self._emit)
        if new.drift != old.drift and self.drift is not None:
            from sshguardd.drift import DriftGuard

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
        self.notifier.ready(self._status())

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


def _overlaps(a: Any, b: Any) -> bool:
    return a.version == b.version and (a.subnet_of(b) or b.subnet_of(a))
