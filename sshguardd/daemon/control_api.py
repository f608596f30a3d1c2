"""Answers control-socket requests (status, bans, ban, unban, resume, reload) on the
daemon's loop thread.

The socket thread only decodes and enqueues (effects.control_socket); the loop hands each
request here and sends back what this returns. Every answer is a JSON-able dict with "ok".
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable
from typing import Any

from sshguardd import __version__
from sshguardd.daemon.ban_engine import BanEngine
from sshguardd.durations import BAN_CEILING

Reply = dict[str, Any]

# What a root client may ask on the socket: the same ceiling as the config's ban lengths
# (durations.BAN_CEILING, far below what nft accepts). Non-finite numbers never get here
# as numbers worth trusting: a JSON `Infinity`/`NaN` is refused by isfinite() below.
MAX_MANUAL_BAN = BAN_CEILING


class ControlAPI:
    """`api(request) -> reply`. status() is given by the loop (it knows its own state)."""

    def __init__(self, engine: Callable[[], BanEngine], status: Callable[[], Reply],
                 clock: Callable[[], float],
                 resume: Callable[[str | None], Reply] | None = None,
                 reload: Callable[[], Reply] | None = None) -> None:
        self._engine = engine
        self._status = status
        self._clock = clock
        self._resume = resume
        self._reload = reload

    def __call__(self, req: dict[str, Any]) -> Reply:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "version": __version__, "pid": os.getpid(), **self._status(),
                    "withheld": self._withheld()}
        if cmd == "bans":
            return self._bans()
        if cmd == "ban":
            return self._ban(req)
        if cmd == "unban":
            return self._unban(req)
        if cmd == "resume" and self._resume is not None:
            setting = req.get("setting")
            if setting is not None and not isinstance(setting, str):
                return {"ok": False, "error": "setting must be a string"}
            return self._resume(setting)
        if cmd == "reload" and self._reload is not None:
            # Synchronous: the answer goes back once the new config is in force (or was
            # refused), so `systemctl reload` returns after it, not before (SIGHUP did).
            return self._reload()
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _bans(self) -> Reply:
        now = self._clock()
        bans = sorted(self._engine().store.active_bans(now), key=lambda b: b.until)
        return {"ok": True, "now": now, "bans": [
            {"network": b.network, "remaining": max(0.0, round(b.until - now, 1)),
             "until": b.until, "duration": b.duration, "strikes": b.strikes,
             "reason": b.reason} for b in bans], "withheld": self._withheld()}

    def _withheld(self) -> list[dict[str, Any]]:
        """Networks admin protection spares now (BanPolicy.withheld)."""
        return [{"network": w.network, "failures": w.score, "withheld": w.count,
                 "user": w.user, "logged_in_as": list(w.logged_in_as), "since": w.first,
                 "last": w.last} for w in self._engine().policy.withheld()]

    def _ban(self, req: dict[str, Any]) -> Reply:
        addr = req.get("address")
        duration = req.get("duration")
        if not isinstance(addr, str):
            return {"ok": False, "error": "ban needs an address"}
        if duration is not None and (isinstance(duration, bool)
                                     or not isinstance(duration, (int, float))
                                     or not math.isfinite(duration) or duration <= 0
                                     or duration > MAX_MANUAL_BAN):
            return {"ok": False, "error": "duration must be a positive, finite number of "
                                          f"seconds of at most {MAX_MANUAL_BAN:.0f}"}
        try:
            ipaddress.ip_network(addr.strip(), strict=False)
        except ValueError:
            return {"ok": False, "error": f"not an IP address or network: {addr!r}"}
        engine = self._engine()
        try:
            ban = engine.manual_ban(addr, None if duration is None else float(duration),
                                    self._clock())
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "ban": {"network": ban.network, "duration": ban.duration,
                                    "until": ban.until, "strikes": ban.strikes,
                                    "reason": ban.reason or "manual"},
                "applied": engine.firewall.pending == 0}

    def _unban(self, req: dict[str, Any]) -> Reply:
        addr = req.get("address")
        if not isinstance(addr, str):
            return {"ok": False, "error": "unban needs an address"}
        engine = self._engine()
        try:
            nets = engine.unban(addr, self._clock())
        except ValueError:
            return {"ok": False, "error": f"not an IP address or network: {addr!r}"}
        if nets is None:
            return {"ok": False, "error": f"{addr} is not banned"}
        return {"ok": True, "removed": nets, "applied": engine.firewall.pending == 0}
