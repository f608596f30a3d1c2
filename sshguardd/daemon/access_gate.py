"""Allow-only mode in the daemon: switch it on (or change its networks) only when the
lockout guard agrees, and count what it drops.

The guard asks the kernel who is connected to sshd now (`effects.sessions`) and the store
which networks logged in within `ban.protect_logged_in`; if the configured networks would
shut out any of them, the change is refused with a `lockout_guard` alert and the mode
stays as it was (off at start). The firewall applies the mode in the same nft transaction
as its ban rules (`setup()`), so a reload switches it atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from sshguardd import config
from sshguardd.bans import access
from sshguardd.contracts import PackageState
from sshguardd.daemon import parts
from sshguardd.effects.sessions import ssh_peers

log = logging.getLogger(__name__)


class GateAlerts(Protocol):
    def lockout_guard(self, reason: str, setting: str | None = None,
                      file: str | None = None) -> None: ...


class AccessGate:
    def __init__(self, firewall: parts.Firewall, alerts: GateAlerts, metrics: parts.Metrics,
                 sshd_ports: Callable[[], tuple[int, ...]] | None = None,
                 peers: Callable[[Sequence[int]], list[str]] = ssh_peers) -> None:
        self.firewall, self.alerts, self.metrics = firewall, alerts, metrics
        self.sshd_ports, self.peers = sshd_ports, peers
        self.sources: tuple[str, ...] = ()     # in force
        self.refused: list[str] = []           # who the last refused change would cut off
        self._seen = {"ipv4": 0, "ipv6": 0}

    def decide(self, cfg: config.Config, store: parts.Store, now: float) -> bool:
        """Hand the firewall the networks the guard allows; True if its setup() must run."""
        wanted = tuple(cfg.access.sources)
        if wanted == self.sources:
            return False
        if wanted:
            logins = store.logins(now - cfg.ban.protect_logged_in)
            ports = tuple(cfg.firewall.ports) or (
                self.sshd_ports() if self.sshd_ports is not None else ()) or (22,)
            cut = access.uncovered(wanted, [*self.peers(ports), *logins])
            if cut:
                self.refused = cut
                reason = (f"allow-only mode ([access] sources) would shut out "
                          f"{', '.join(cut[:5])}: a current SSH session or a recent login; "
                          f"add their networks to [access] sources")
                log.error("%s; keeping %s", reason,
                          ", ".join(self.sources) if self.sources else "the mode off")
                self.alerts.lockout_guard(reason, "access.sources")
                return False
        self.refused = []
        self.sources = wanted
        log.info("allow-only mode %s", "on: new SSH connections only from " +
                 ", ".join(wanted) if wanted else "off")
        return self.firewall.set_access(wanted)

    def apply(self, cfg: config.Config, store: parts.Store, now: float) -> None:
        """decide(), then rebuild the rules if needed: one nft transaction holds the ban
        rules and the mode together, so a reload switches it atomically."""
        if self.decide(cfg, store, now):
            self.firewall.setup()

    def count(self) -> None:
        """Move the kernel's drop counters (read by the firewall's periodic check) into the
        metrics; a rebuilt rule starts from zero again."""
        for fam, n in self.firewall.access_dropped.items():
            delta = n - self._seen.get(fam, 0) if n >= self._seen.get(fam, 0) else n
            if delta:
                self.metrics.access_dropped.labels(family=fam).inc(delta)
            self._seen[fam] = n

    def status(self) -> dict[str, object]:
        return {"sources": list(self.sources), "refused_would_cut": self.refused}


class HostGuards:
    """What the loop hosts beside bans and drift: allow-only mode and the update watch."""

    def __init__(self, gate: AccessGate,
                 updates: Callable[[Callable[[PackageState], object]], parts.Updates] | None,
                 ) -> None:
        self.gate, self.make_updates = gate, updates
        self.updates: parts.Updates | None = None

    def start(self, cfg: config.Config, store: parts.Store, now: float,
              put: Callable[[PackageState], object]) -> None:
        self.gate.apply(cfg, store, now)
        if self.make_updates is not None:
            self.updates = self.make_updates(put)
            self.updates.start()

    def on_state(self, state: PackageState) -> None:
        if self.updates is not None:
            self.updates.on_state(state)

    def stop(self) -> None:
        if self.updates is not None:
            self.updates.stop()

    def status(self) -> dict[str, object]:
        return {"access": self.gate.status(),
                "updates": self.updates.status() if self.updates is not None else None}
