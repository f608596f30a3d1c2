"""Carrying sshd's PerSourcePenalties over the restarts of sshd that the daemon causes.

The loop feeds every journal batch (and the start-up replay) to a PenaltyBook; the drift
guard's sshd runner is wrapped (RestartWatch) so that right after each restart it runs
(a repair's, or a rollback's), the penalties still in force become short nft bans
(sshguardd.bans.penalties.carry). The wrapper also keeps the last `sshd -T` of the main
file that the repair asked anyway, for PerSourcePenalties' settings: no extra sshd run.

Everything runs on the loop thread: the repair, and so the restart, run there. The bans
go to the kernel (one nft transaction) and to the store without history, so they never
escalate a later ban; the fleet never hears of them (sshd's local memory, not ours).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sshguardd import config
from sshguardd.bans import penalties
from sshguardd.contracts import Ban, LogRecord
from sshguardd.daemon.ban_engine import BanEngine, family
from sshguardd.detect.penalties import parse_settings
from sshguardd.effects.nft_runner import FirewallError
from sshguardd.effects.sshd import Sshd

log = logging.getLogger(__name__)


class PenaltyCarry:
    """`PenaltyCarry(cfg, engine, clock)`, cfg and engine as getters (a reload replaces
    the config): observe(records) on every batch; wrap(runner) for the drift guard;
    restarted() carries (RestartWatch calls it). settings_seen runs on the repair's
    `sshd -T` pool thread: it only replaces the book's frozen settings."""

    def __init__(self, cfg: Callable[[], config.Config],
                 engine: Callable[[], BanEngine | None], clock: Callable[[], float]) -> None:
        self._cfg = cfg
        self._engine = engine
        self._clock = clock
        self.book = penalties.PenaltyBook()
        self.carried = 0          # bans carried since start (status, tests)
        self._gaps_told: tuple[str, ...] | None = None

    def observe(self, records: Sequence[LogRecord]) -> None:
        self.book.observe(records)

    def settings_seen(self, sshd_t: Mapping[str, str]) -> None:
        """`sshd -T` of the main file, as the repair asked it."""
        settings = parse_settings(sshd_t)
        if settings is None:
            return
        self.book.settings = settings
        if not settings.enabled:
            return
        # Report only: PerSourcePenaltyExemptList is the admin's; sshguardd never edits it.
        gaps = tuple(penalties.exempt_gaps(self._cfg().ban.allow, settings.exempt))
        if gaps and gaps != self._gaps_told:
            log.warning("sshd's PerSourcePenalties may refuse never-ban networks that "
                        "PerSourcePenaltyExemptList does not list: %s (sshguardd never "
                        "bans them; add them there to keep sshd from refusing them too)",
                        ", ".join(gaps))
        self._gaps_told = gaps

    def wrap(self, runner: Sshd) -> Sshd:
        return runner if isinstance(runner, RestartWatch) else RestartWatch(runner, self)

    def restarted(self) -> list[Ban]:
        """sshd was just restarted by us: ban what it forgave. Never raises."""
        engine = self._engine()
        now = self._clock()
        in_force = self.book.in_force(now)
        self.book.forget_all()
        if engine is None or not in_force:
            return []
        try:
            ban = self._cfg().ban
            logged_in = engine.store.logins(now - ban.protect_logged_in) \
                if ban.protect_logged_in > 0 else {}
            active = engine.store.active_bans(now)
            bans = penalties.carry(in_force, now, allow=ban.allow, logged_in=logged_in,
                                   active=active)
        except (sqlite3.Error, OSError) as exc:
            log.error("could not carry %d sshd penalties over the restart: %s",
                      len(in_force), exc)
            return []
        if bans:
            self._apply(engine, bans, {b.network for b in active}, now)
        log.info("sshd restarted with %d penalties in force: %d carried over as bans",
                 len(in_force), len(bans))
        return bans

    def _apply(self, engine: BanEngine, bans: list[Ban], was: set[str], now: float) -> None:
        # Fail closed: staged for the kernel first; the store only so that a restart of
        # sshguardd restores them (without history: no escalation from sshd's memory).
        engine.firewall.stage(add=bans, replace=True)  # may lengthen a shorter ban
        try:
            with engine.store.batch():
                engine.store.add_bans(bans, history=False)
        except (sqlite3.Error, OSError) as exc:
            log.error("carried penalties are applied but not saved: %s", exc)
        try:
            engine.firewall.commit(now)
        except FirewallError as exc:
            engine.firewall_failed("add", exc)
        # Bounded: the ended ones go whenever new ones come.
        engine.carried = {n: u for n, u in engine.carried.items() if u > now}
        for b in bans:
            engine.carried[b.network] = b.until
            if b.network not in was:
                engine.active[family(b.network)] += 1
            engine.alerts.ban(b.network, b.duration, b.strikes, b.reason)
        engine.metrics.ban_applied(b.network for b in bans)
        for fam, n in engine.active.items():
            engine.metrics.bans_active.labels(family=fam).set(n)
        self.carried += len(bans)


class RestartWatch(Sshd):
    """An Sshd runner that tells a PenaltyCarry about each restart (after it, whether or
    not the restart command succeeded: a failed restart may still have ended the old
    listener, and a needless short ban is the lesser harm) and each `sshd -T` of a main
    file. Everything else is the wrapped runner's."""

    def __init__(self, inner: Sshd, carry: PenaltyCarry) -> None:
        # No super().__init__: every attribute and method not overridden is the inner's.
        self._inner = inner
        self._carry = carry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def restart_argv(self) -> tuple[str, ...]:
        return self._inner.restart_argv

    def test(self, config: Path | str) -> None:
        self._inner.test(config)

    def effective(self, config: Path | str,
                  context: Mapping[str, str] | None = None) -> dict[str, str]:
        out = self._inner.effective(config, context)
        if not context:
            try:
                self._carry.settings_seen(out)
            except Exception:  # settings are a nicety; the repair must go on
                log.exception("reading PerSourcePenalties from sshd -T failed")
        return out

    def restart(self) -> None:
        try:
            self._inner.restart()
        finally:
            try:
                self._carry.restarted()
            except Exception:  # the repair's outcome must not depend on this
                log.exception("carrying sshd penalties over the restart failed")
