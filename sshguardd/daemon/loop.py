"""The daemon: one queue, one loop, one owner of all mutable state.

    journal follower ─┐                        ┌→ ban engine → store, firewall (stage/commit)
    control socket ───┼→ queue → Daemon loop ──┼→ control API
    drift watcher ────┘    (+ timers, flags)   ├→ drift guard (judge, repair)
                                               └→ metrics, journal alerts, sd_notify

Threads only read and enqueue; everything that changes state happens on the loop, so nothing
here needs a lock (the watcher filters with an immutable WatchSet; the guard is only called
here). Signal handlers only set flags; the loop wakes at least every `tick` to look at them,
run timers and ping the watchdog, and drains a burst for at most one tick first, so a flood
cannot starve WATCHDOG=1. A batch goes to the ban engine (daemon.ban_engine), which returns
once per batch; retries, the periodic firewall check and sshd's ports are
daemon.firewall_upkeep's; the drift guard is hosted by daemon.drift_host, allow-only mode
and the update watch by daemon.access_gate.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sshguardd import __version__, config
from sshguardd.contracts import FileChanged, LogBatch, PackageState
from sshguardd.daemon import fleet_sync, fleet_wiring, follower_restart, parts, status
from sshguardd.daemon.access_gate import AccessGate, HostGuards
from sshguardd.daemon.ban_engine import BanEngine
from sshguardd.daemon.control_api import ControlAPI
from sshguardd.daemon.drift_host import DriftHost
from sshguardd.daemon.firewall_upkeep import FirewallUpkeep
from sshguardd.daemon.messages import (
    ControlRequest,
    QueueItem,
    Reply,
    StartupError,
    StateStoreError,
)
from sshguardd.daemon.penalty_carry import PenaltyCarry
from sshguardd.daemon.reload import reload_config
from sshguardd.effects.nft_runner import FirewallError
from sshguardd.effects.store import StoreError

__all__ = ["Daemon", "StartupError", "StateStoreError"]
log = logging.getLogger(__name__)

RELOAD_ANSWER_WAIT = 55.0


class Daemon:
    """`Daemon(cfg, parts)`; `run() -> int`. config_path is re-read on SIGHUP."""

    def __init__(self, cfg: config.Config, parts_: parts.Parts, *,
                 config_path: Path | str | None = None, tick: float = 1.0,
                 firewall_check_interval: float = 30.0, install_signals: bool = True) -> None:
        self.cfg = cfg
        self.parts = parts_
        self.config_path = config_path
        self.clock = parts_.clock
        self.tick = tick
        self.firewall_check_interval = firewall_check_interval
        self.install_signals = install_signals
        self.metrics = parts_.metrics
        self.alerts = parts_.alerts
        self.notifier = parts_.notifier
        self.firewall = parts_.firewall

        self.queue: queue.Queue[QueueItem] = queue.Queue(maxsize=1024)
        self.store: parts.Store | None = None
        self.engine: BanEngine | None = None
        self.upkeep: FirewallUpkeep | None = None
        self.follower: parts.Follower | None = None
        self.drift: DriftHost | None = None
        self.penalties = PenaltyCarry(lambda: self.cfg, lambda: self.engine, self.clock)
        self.fleet: fleet_sync.FleetStage | None = None
        self.control: parts.ControlServer | None = None
        self.metrics_server: parts.Stoppable | None = None
        self.host = HostGuards(AccessGate(self.firewall, self.alerts, self.metrics,
                                          parts_.ports), parts_.updates)
        self.api = ControlAPI(self._engine, lambda: status.fields(self), self.clock, resume=(
            lambda s: {"ok": False, "error": "the drift guard is off"} if self.drift is None
            else self.drift.resume(s)), reload=self.reload)
        self._closing = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self.started_at = 0.0
        self.config_loaded_at = 0.0   # clock time the running config was read (status)
        self._status_text = ""
        self._next_recount = 0.0
        self._next_housekeeping = 0.0
        self._next_prune = 0.0
        self._clock_offset: float | None = None
        self.loop_errors = 0
        self._next_follower_restart = 0.0
        self._follower_restart_delay = 1.0
        self._follower_started_at = 0.0
        self.started = threading.Event()  # set once READY=1 was sent (for tests)

    def _engine(self) -> BanEngine:
        if self.engine is None:
            raise RuntimeError("the daemon has not started")
        return self.engine

    # -- signals: flags only ---------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True

    def request_reload(self, *_: object) -> None:
        self._reload_requested = True

    # -- start-up --------------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up; raises StartupError (StateStoreError for a damaged or
        unusable state store). Sends READY=1 at the end."""
        self.started_at = self.config_loaded_at = self.clock()
        try:
            self._start()
        except sqlite3.Error as exc:
            # Store() checked the file when it opened it; damage deeper in it shows up on
            # the first reads (active bans, history, position).
            path = self.store.path if self.store is not None else \
                self.cfg.daemon.state_dir / "state.db"
            self._store_failed(f"the state store {path} is not usable ({exc}); move it "
                               "aside to start with no bans and no history")

    def _store_failed(self, detail: str) -> None:
        self.alerts.startup_problem("state store", detail)
        raise StateStoreError(f"cannot start: {detail}") from None

    def _start(self) -> None:
        try:
            self.store = store = self.parts.store()
        except StoreError as exc:  # names the file and the reason
            self._store_failed(str(exc))
        self.engine = engine = BanEngine(self.cfg, store, self.firewall, self.metrics,
                                         self.alerts)
        self.upkeep = FirewallUpkeep(engine, self.firewall, store, self.parts.ports,
                                     self.firewall_check_interval, self.clock)
        now = self.clock()
        try:
            restored = engine.restore(now)
            log.info("firewall table %s ready; restored %d active bans", self.firewall.name,
                     restored)
        except FirewallError as exc:
            self.metrics.ban_errors.labels(operation="setup").inc()
            self.alerts.startup_problem("firewall", str(exc))
            raise StartupError(f"cannot set up the firewall: {exc}") from None

        self.fleet = fleet_wiring.attach(self, store, engine)  # None: [fleet] is off
        follower = self.parts.follower(store.position())
        self.follower = follower
        try:
            follower.open()
            replay = follower.backlog(self.cfg.ban.find_time)
        except OSError as exc:
            self.alerts.startup_problem("log source", str(exc))
            raise StartupError(f"cannot open the log source: {exc}") from None
        engine.rebuild(replay, now)
        self.penalties.observe(replay)
        follower.start(self._emit)
        self._follower_started_at = time.monotonic()

        try:
            self.control = self.parts.control(self.cfg.control.socket, self._on_request)
            self.control.start()
        except OSError as exc:
            self.alerts.startup_problem("control socket", str(exc))
            raise StartupError(f"cannot open the control socket: {exc}") from None

        self._host_drift(self.cfg)
        if self.drift is not None:
            self.drift.start()
        self.host.start(self.cfg, store, now, self._put)

        if self.parts.serve_metrics and self.cfg.metrics.enabled:
            try:
                self.metrics_server = self.metrics.serve(self.cfg.metrics.address,
                                                         self.cfg.metrics.port)
            except OSError as exc:
                # Metrics are for operators; bans and repairs matter more than them.
                self.alerts.startup_problem("metrics", str(exc))
        self.notifier.ready(self._status())
        self.started.set()
        log.info("sshguardd %s running (pid %d)", __version__, os.getpid())

    def _host_drift(self, cfg: config.Config) -> None:
        guard = self.parts.drift(cfg)
        if guard is not None and hasattr(guard, "runner"):  # its restarts carry penalties
            guard.runner = self.penalties.wrap(guard.runner)
        self.drift = None if guard is None else DriftHost(
            guard, self.parts.watcher, self._on_file, cfg.drift.debounce, self.alerts,
            self.clock)

    # -- producers (other threads): enqueue only ------------------------------------------

    def _put(self, item: QueueItem) -> bool:
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
        # A reload may replay the journal window and repair (sshd -t, restart): give it
        # most of the control server's 60 s answer deadline, the others 10 s.
        wait = RELOAD_ANSWER_WAIT if request.get("cmd") == "reload" else 10.0
        if not self._put(ControlRequest(request, reply)) or not reply.event.wait(wait) \
                or reply.value is None:
            return {"ok": False, "error": f"daemon busy or stopping (no answer within "
                                          f"{wait:.0f} s)"}
        return reply.value

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, shut down; 0 when stopped by a signal.
        Raises StartupError (after shutting down what had started) when it cannot start:
        the caller (the `run` verb) prints it and picks the exit code."""
        previous: dict[signal.Signals, Any] = {}
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
                item: QueueItem | None = self.queue.get(timeout=tick)
            except queue.Empty:
                item = None
            if item is not None:
                self._guarded(item)
                # Drain what else is waiting before timers, so bursts stay batched; but
                # only for one tick: under a sustained flood the follower refills the
                # queue as fast as it is emptied, and a drain until empty would starve the
                # timers, the reload flag and, above all, WATCHDOG=1.
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

    def _guarded_call(self, fn: Callable[[], object], what: str) -> None:
        try:
            fn()
        except Exception:
            self.loop_errors += 1
            log.exception("%s failed", what)

    def _guarded(self, item: QueueItem) -> None:
        # A bug or an I/O error on one item must not end the loop.
        try:
            self._dispatch(item)
        except Exception:
            self.loop_errors += 1
            log.exception("processing %s failed", type(item).__name__)

    def _dispatch(self, item: QueueItem) -> None:
        if isinstance(item, LogBatch):
            self.on_batch(item)
        elif isinstance(item, FileChanged):
            if self.drift is not None:
                self.drift.changed(item)
        elif isinstance(item, fleet_sync.FLEET_MESSAGES) and self.fleet is not None:
            self.fleet.handle(item)
        elif isinstance(item, PackageState):
            self.host.on_state(item)
        else:
            try:
                item.reply.set(self.api(item.request))
            except Exception as exc:  # an answer, always; the loop goes on
                log.exception("control command %r failed", item.request.get("cmd"))
                item.reply.set({"ok": False, "error": f"internal error: {exc}"})

    def on_batch(self, batch: LogBatch) -> None:
        result = self._engine().on_batch(batch, self.clock())
        self.penalties.observe(batch.records)
        if result.firewall_failed and self.upkeep is not None:
            self.upkeep.failed()

    def _timers(self) -> None:
        engine = self._engine()
        mono = time.monotonic()
        self._watch_clock(mono)
        if self.upkeep is not None:
            self.upkeep.timers(mono)
            self.host.gate.count()
        for host in [h for h in (self.drift, self.fleet) if h is not None]:
            host.timers()
        if self.follower is not None and self.started.is_set() and \
                not self.follower.alive and mono >= self._next_follower_restart:
            self._restart_follower(mono)
        now = self.clock()
        if mono >= self._next_recount:
            self._next_recount = mono + 10.0
            engine.recount(now)   # expiries show here; a SQLite count, not a re-read
        if mono >= self._next_housekeeping:
            self._next_housekeeping = mono + 10.0
            engine.policy.expire(now)
            if mono >= self._next_prune:
                self._next_prune = mono + 600.0
                ban = self.cfg.ban
                engine.store.prune(now, now - ban.history_time, now - ban.protect_logged_in,
                                   now - ban.find_time)
            self.metrics.policy_state(engine.policy.tracked, engine.policy.evictions)
        status = self._status()
        if status != self._status_text:
            self._status_text = status
            self.notifier.status(status)
        if self.healthy():
            self.notifier.watchdog()

    def _watch_clock(self, mono: float) -> None:
        """A wall-clock step of over 5 s moves the active bans' ends (see ban_engine)."""
        offset, last = self.clock() - mono, self._clock_offset
        self._clock_offset = offset
        if last is not None and abs(offset - last) > 5.0:
            self._engine().clock_stepped(offset - last)

    def _restart_follower(self, mono: float) -> None:
        follower_restart.restart(self, mono)

    def healthy(self) -> bool:
        """What WATCHDOG=1 vouches for: the daemon can do its job. Its producers are alive
        (follower, control server, drift watcher) and the firewall is not failing past
        its retries."""
        return not self.health_problems()

    def health_problems(self) -> list[str]:
        return status.health_problems(self)

    def _status(self) -> str:
        return status.summary(self)

    # -- reload and shutdown ---------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """SIGHUP or the `reload` command: re-check the firewall table (restoring the bans
        into it), then re-read the config (daemon.reload). Bans, history and the log
        position stay; an invalid file is refused and the running config kept. Sent
        between RELOADING=1 and READY=1; returns the outcome `sshguardd reload` prints."""
        self.notifier.reloading()
        try:
            if self.upkeep is not None:
                self.upkeep.resync()
            return reload_config(self)
        except Exception as exc:  # a bug must not end the loop; say so and carry on
            self.loop_errors += 1
            log.exception("reload failed")
            self.alerts.startup_problem("reload", f"reload failed: {exc}")
            self.metrics.reloads.labels(result="failure").inc()
            return {"ok": False, "result": "failed", "error": f"reload failed: {exc}"}
        finally:
            self.notifier.ready(self._status())

    def shutdown(self) -> None:
        """Stop producers, answer nothing more, close the store. The firewall table and its
        bans stay in the kernel: stopping sshguardd must not open the door."""
        self.notifier.stopping()
        self._closing.set()
        for name, part in (("follower", self.follower), ("drift watcher", self.drift),
                           ("control", self.control), ("fleet", self.fleet),
                           ("host guards", self.host)):
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
            if isinstance(item, ControlRequest):
                item.reply.set({"ok": False, "error": "daemon stopping"})
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        if self.follower is not None:
            self.follower.close()
        if self.store is not None:
            self.store.close()
        self.notifier.close()
        log.info("sshguardd stopped")
