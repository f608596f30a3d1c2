"""Reopening the log follower after its thread died, with backoff (on the loop thread)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sshguardd.daemon.loop import Daemon

log = logging.getLogger(__name__)


def restart(d: Daemon, mono: float) -> None:
    """The reader thread died (its exception is logged): reopen from the last saved
    position, after 1, 2, 4 .. 30 s between attempts (back to 1 s once a follower has
    lived for 5 minutes). WATCHDOG=1 stops while it is dead, so if it cannot be
    reopened, or keeps dying, systemd restarts the whole daemon."""
    engine = d._engine()
    if mono - d._follower_started_at >= 300.0:
        d._follower_restart_delay = 1.0
    d._next_follower_restart = mono + d._follower_restart_delay
    d._follower_restart_delay = min(d._follower_restart_delay * 2, 30.0)
    d.metrics.journal_read_errors.inc()
    log.error("log follower stopped; reopening it from the saved position")
    try:
        if d.follower is not None:
            d.follower.close()
    except Exception:
        log.exception("closing the dead follower failed")
    try:
        follower = d.parts.follower(engine.store.position())
        follower.open()
        follower.start(d._emit)
    except Exception:
        log.exception("reopening the log source failed")
        return
    d.follower = follower
    d._follower_started_at = mono
    log.info("log follower reopened")
