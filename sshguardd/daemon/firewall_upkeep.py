"""Keeping the kernel's table right between batches: retries of failed commits (with
backoff), the periodic check and repair, following sshd's ports, the SIGHUP re-sync.

Runs on the daemon's loop thread; the ban engine does the actual restore.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sshguardd.daemon import parts
from sshguardd.daemon.ban_engine import BanEngine
from sshguardd.effects.nft_runner import FirewallError

log = logging.getLogger(__name__)


class FirewallUpkeep:
    """`timers()` each loop turn; `failed()` after a batch whose commit failed;
    `resync()` on SIGHUP."""

    def __init__(self, engine: BanEngine, firewall: parts.Firewall, store: parts.Store,
                 ports: Callable[[], tuple[int, ...]] | None, interval: float,
                 clock: Callable[[], float]) -> None:
        self.engine = engine
        self.firewall = firewall
        self.store = store
        self.ports = ports
        self.interval = interval
        self.clock = clock
        self.retry_at = 0.0
        self.retry_delay = 1.0
        self.next_check = time.monotonic() + interval

    def timers(self, mono: float) -> None:
        if (self.firewall.pending or self.engine.unsaved) and mono >= self.retry_at:
            self.retry()
        if mono >= self.next_check:
            self.next_check = mono + self.interval
            self.check()

    def failed(self) -> None:
        """Schedule the next retry: 1 s, doubling to 60 s."""
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, 60.0)

    def retry(self) -> None:
        engine = self.engine
        if engine.unsaved:
            engine.retry_store()
        if not self.firewall.pending:
            return
        now = self.clock()
        if engine.firewall_errors:
            # Failed before: the table may be gone (nftables.service restarted); put it
            # back first, with every active ban (which includes the staged ones).
            try:
                problem = self.firewall.check(())
                if problem is not None:
                    log.warning("firewall %s: %s; repairing it", self.firewall.name, problem)
                    engine.restore(now)
            except FirewallError as exc:
                engine.firewall_failed("restore", exc)
                self.failed()
                return
        if engine.commit(now):
            self.retry_delay = 1.0
        else:
            self.failed()

    def check(self) -> None:
        """The periodic check: follow sshd's ports, verify the table, its rules and a
        sample of the stored bans, and repair at once (setup + restore) what is wrong:
        `nft flush table`, `flush chain`, `flush set` or a deleted table."""
        now = self.clock()
        try:
            problem = "the protected ports changed" if self.follow_ports() else \
                self.firewall.check(self.store.sample_active(now))
            if problem is None:
                return
            log.warning("firewall %s: %s; repairing it and restoring bans",
                        self.firewall.name, problem)
            restored = self.engine.restore(now)
            log.info("firewall %s repaired; %d active bans in place", self.firewall.name,
                     restored)
        except FirewallError as exc:
            self.engine.firewall_failed("check", exc)
            self.failed()

    def follow_ports(self) -> bool:
        """Re-derive what sshd listens on; True when the firewall's ports changed."""
        if self.ports is None:
            return False
        ports = self.ports()
        if not self.firewall.set_ports(ports):
            return False
        log.info("sshd listens on port(s) %s: protecting them", ", ".join(map(str, ports)))
        return True

    def resync(self) -> None:
        """On SIGHUP: make the kernel match the store now, whatever happened to it (and
        follow sshd's ports): a reload of nftables.service is propagated to ours as a
        reload (ReloadPropagatedFrom= in the unit)."""
        now = self.clock()
        try:
            self.follow_ports()
            restored = self.engine.restore(now)
        except FirewallError as exc:
            self.engine.firewall_failed("restore", exc)
            self.failed()
            return
        self.retry_delay = 1.0
        self.next_check = time.monotonic() + self.interval
        log.info("firewall table %s re-checked on reload; %d active bans in place",
                 self.firewall.name, restored)
