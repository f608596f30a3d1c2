"""The update watch's stage in the daemon: PackageState in, metrics and alerts out.

The probing runs on `effects.packages.PackageWatch`'s own thread (apt-cache takes about a
second of CPU without a binary cache, and it must never hold up bans); the loop only
receives each finished `PackageState` and calls `UpdateWatchStage.on_state` with it.
An alert goes out when the finding changes for the worse (a new pending security update,
a newly stale sshd, a new candidate), not on every check.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sshguardd.contracts import PackageState

log = logging.getLogger(__name__)


class UpdateMetrics(Protocol):
    openssh_update_pending: Any
    openssh_info: Any
    sshd_stale: Any
    update_check_timestamp: Any
    update_check_errors: Any


class UpdateAlerts(Protocol):
    def sshd_outdated(self, package: str, installed: str | None, candidate: str | None,
                      security: bool, stale: bool, reason: str) -> None: ...


class UpdateWatchStage:
    def __init__(self, metrics: UpdateMetrics, alerts: UpdateAlerts) -> None:
        self.metrics = metrics
        self.alerts = alerts
        self.state: PackageState | None = None
        self._alerted: tuple[object, ...] | None = None
        self._info_labels: tuple[str, str] | None = None

    def on_state(self, state: PackageState) -> None:
        m = self.metrics
        m.update_check_timestamp.set(state.checked)
        if state.error is not None:
            # Keep the last good finding: a package manager that failed once (a lock held
            # by a running apt) says nothing about sshd.
            m.update_check_errors.inc()
            if self.state is None:
                self.state = state
            return
        self.state = state
        m.openssh_update_pending.labels(kind="any").set(1 if state.pending else 0)
        m.openssh_update_pending.labels(kind="security").set(1 if state.security else 0)
        m.sshd_stale.set(1 if state.stale else 0)
        labels = (state.installed or "", state.candidate or "")
        if labels != self._info_labels:
            if self._info_labels is not None:
                m.openssh_info.remove(*self._info_labels)
            m.openssh_info.labels(installed=labels[0], candidate=labels[1]).set(1)
            self._info_labels = labels
        token = (state.candidate, state.security, state.stale) if (
            state.pending or state.security or state.stale) else None
        if token is not None and token != self._alerted:
            reason = "; ".join(state.stale_reasons[:3])
            if state.advisories:
                reason = "; ".join(filter(None, (", ".join(state.advisories[:5]), reason)))
            self.alerts.sshd_outdated(state.package, state.installed, state.candidate,
                                      state.security, state.stale, reason)
        if token != self._alerted:
            log.info("update watch: %s installed %s, candidate %s, security update %s, "
                     "sshd stale %s", state.package, state.installed, state.candidate,
                     "pending" if state.security else "none",
                     "yes" if state.stale else "no")
        self._alerted = token

    def status(self) -> dict[str, Any] | None:
        s = self.state
        if s is None:
            return None
        return {"package": s.package, "backend": s.backend, "installed": s.installed,
                "candidate": s.candidate, "update_pending": s.pending,
                "security_update": s.security, "advisories": list(s.advisories),
                "sshd_stale": s.stale, "stale_reasons": list(s.stale_reasons),
                "checked": s.checked, "error": s.error}


class Watch(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class UpdateWatch:
    """The daemon's part: the watch thread (effects.packages.PackageWatch) and the stage."""

    def __init__(self, stage: UpdateWatchStage, watch: Watch) -> None:
        self.stage, self.watch = stage, watch

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def on_state(self, state: PackageState) -> None:
        self.stage.on_state(state)

    def status(self) -> dict[str, Any] | None:
        return self.stage.status()
