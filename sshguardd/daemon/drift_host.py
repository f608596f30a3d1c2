"""The drift guard as the daemon's loop hosts it: the guard, its watcher and what the loop
remembers about them (last outcome, last full check, change events to retry).

Everything here runs on the loop thread. The watcher's own thread only filters with the
WatchSet snapshot it was given (effects.watcher.Watcher) and enqueues FileChanged;
it never calls the guard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from sshguardd.contracts import FileChanged, WatchSet
from sshguardd.daemon import parts

log = logging.getLogger(__name__)


class DriftHost:
    """`DriftHost(guard, watcher_factory, on_file, debounce, alerts, clock)`."""

    def __init__(self, guard: parts.DriftRepairer, watcher_factory: parts.WatcherFactory,
                 on_file: Callable[[FileChanged], None], debounce: float,
                 alerts: parts.Alerts, clock: Callable[[], float]) -> None:
        self.guard = guard
        self._factory = watcher_factory
        self._on_file = on_file
        self._debounce = debounce
        self._alerts = alerts
        self._clock = clock
        self.watcher: parts.Watcher | None = None
        self.watch_set: WatchSet | None = None
        self.last_drift = "none"
        self.last_drift_at: float | None = None     # clock time it was first seen
        # The last repair made (item, file, clock time), for the fleet status record.
        self.last_repair: dict[str, object] | None = None
        self._seen: dict[tuple[str, str], tuple[str, str]] = {}  # drifts already reported
        self.last_full_check: float | None = None   # clock time of the last check_all
        self.errors = 0
        self._failed: dict[str, FileChanged] = {}    # change events to handle again

    def start(self) -> None:
        """The first full check, then the watcher on what the guard needs watched."""
        self.check("start")
        self.start_watcher()

    def start_watcher(self) -> None:
        self.watch_set = self.guard.watch_set()
        self.watcher = self._factory(self.watch_set, self._on_file, self._debounce)
        self.watcher.start()

    def carry_over(self, before: DriftHost) -> None:
        """Keep what the host replaced on reload knew of standing drifts, so a drift that
        stays keeps the time it was first seen (status)."""
        self._seen = dict(before._seen)
        self.last_drift, self.last_drift_at = before.last_drift, before.last_drift_at
        self.last_repair = before.last_repair

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    @property
    def watcher_dead(self) -> bool:
        return self.watcher is not None and not self.watcher.alive

    def timers(self) -> None:
        # A change event whose handling failed is handled again now: waiting for the
        # guard's periodic re-check would leave an intruder's edit in place for minutes.
        for path, changed in list(self._failed.items()):
            del self._failed[path]
            self.changed(changed)
        wake = self.guard.next_wakeup()
        now = self._clock()
        if wake is not None and now >= wake:
            self.check(self._wakeup_reason(now))
        if self.watcher_dead:
            self._restart_watcher()

    def _restart_watcher(self) -> None:
        log.error("drift watcher stopped; starting it again and re-checking everything")
        try:
            self.stop()
        except Exception:
            log.exception("stopping the dead watcher failed")
            self.watcher = None
        try:
            self.start_watcher()
        except Exception:
            log.exception("restarting the drift watcher failed")
            return
        self.check("watcher restarted")

    def check(self, reason: str) -> None:
        # The drift guard failing must not take the ban engine down with it.
        self.last_full_check = self._clock()
        try:
            self._outcomes(self.guard.check_all(reason))
        except Exception as exc:
            self.errors += 1
            log.exception("drift check (%s) failed", reason)
            self._alerts.startup_problem("drift guard", f"{reason}: {exc}")
        self.update_watches()

    def changed(self, changed: FileChanged) -> None:
        try:
            self._outcomes(self.guard.handle(changed))
        except Exception as exc:
            # Never dropped: the same change is handled again on the next tick.
            self.errors += 1
            log.exception("handling a change of %s failed; retrying", changed.path)
            if changed.path not in self._failed:
                self._alerts.startup_problem("drift guard", f"{changed.path}: {exc}")
            self._failed[changed.path] = changed
        finally:
            self.update_watches()

    def resume(self, setting: str | None) -> dict[str, object]:
        """`sshguardd resume [SETTING]`: end revert-war pauses, then judge everything again
        so a drift still there is repaired before the answer goes back."""
        ended = self.guard.resume(setting)
        if ended:
            self.check("resume")
        return {"ok": True, "resumed": [{"item": p.item, "file": p.file} for p in ended]}

    def update_watches(self) -> None:
        """Watch what the guard needs now: an Include line added to sshd_config brings a
        directory that must be watched at once, not at the next full check."""
        if self.watcher is None:
            return
        try:
            snapshot = self.guard.watch_set()
            if snapshot != self.watch_set:
                self.watch_set = snapshot
                self.watcher.update(snapshot)
                log.info("watching %s", ", ".join(snapshot.dirs))
        except Exception:
            self.errors += 1
            log.exception("updating the watched directories failed")

    def _wakeup_reason(self, now: float) -> str:
        """Why next_wakeup() is due: the periodic full re-check, or a revert war's pause
        that ran out (or both)."""
        from sshguardd.daemon.drift_guard import RECHECK_INTERVAL

        last = self.last_full_check
        if last is not None and now >= last + RECHECK_INTERVAL:
            return "periodic re-check"
        return "revert-war pause over"

    @property
    def compliant(self) -> bool:
        """Does every policy item hold as last judged? The same policy `sshguardd check`
        audits: an item left drifted (audit mode), refused, failed or paused says no."""
        return not any(action in ("drift", "refused", "failed", "paused")
                       for action, _ in self._seen.values())

    def _outcomes(self, outcomes: Sequence[parts.Outcome]) -> None:
        for o in outcomes:
            action = str(o.action)
            if action == "repaired":
                self.last_repair = {"item": o.item, "file": o.file,
                                    "time": round(self._clock(), 3)}
            if action in ("ok", "ignored", "(own write)"):
                self._seen.pop((o.item, o.file), None)
                continue
            # A drift that stays (audit mode, a refusal, a pause) is reported again by
            # every re-check: its time is when it was first seen, not the re-check's.
            state = (action, str(getattr(o, "old", "")))
            if self._seen.get((o.item, o.file)) == state:
                continue
            self._seen[(o.item, o.file)] = state
            self.last_drift_at = self._clock()
            self.last_drift = f"{o.item} in {o.file}: {action} at " + time.strftime(
                "%H:%M:%S", time.localtime(self.last_drift_at))
