"""Revert wars: another writer keeps undoing our repair of the same item.

Pure bookkeeping on the times it is given: each repair is recorded per key (setting, file);
when `max_reverts` repairs of one key fall within `window`, repairs of that key pause for
`pause` seconds and then resume, whether or not the drift is still there.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

Key = tuple[str, str]  # (item, file)


@dataclass(frozen=True, slots=True)
class Verdict:
    """started: this call began the pause (alert once); else it was already paused."""

    until: float
    started: bool
    count: int = 0


@dataclass
class RevertWars:
    max_reverts: int
    window: float
    pause: float
    _repairs: dict[Key, collections.deque[float]] = field(default_factory=dict)
    _paused: dict[Key, float] = field(default_factory=dict)

    def expire(self, now: float) -> list[Key]:
        """End every pause that is over; returns their keys."""
        over = [k for k, until in self._paused.items() if now >= until]
        for k in over:
            del self._paused[k]
            self._repairs.pop(k, None)
        return over

    def verdict(self, key: Key, now: float) -> Verdict | None:
        """None: repair it. Otherwise the pause it is in (maybe starting now)."""
        until = self._paused.get(key)
        if until is not None:
            if now < until:
                return Verdict(until, False)
            self.expire(now)
        recent = self._repairs.get(key)
        if recent:
            while recent and recent[0] < now - self.window:
                recent.popleft()
        if recent and len(recent) >= self.max_reverts:
            self._paused[key] = now + self.pause
            return Verdict(now + self.pause, True, len(recent))
        return None

    def record(self, key: Key, now: float) -> None:
        self._repairs.setdefault(key, collections.deque()).append(now)

    def next_wakeup(self) -> float | None:
        return min(self._paused.values(), default=None)

    def paused(self) -> dict[Key, float]:
        """Every key in a pause, with the time it ends (some may be over: see expire)."""
        return dict(self._paused)

    def restore(self, key: Key, until: float) -> None:
        """Put back a pause that began before a restart or a reload (it is kept on disk)."""
        self._paused[key] = until

    def resume(self, keys: list[Key]) -> list[Key]:
        """End these pauses now, counting afresh from here; returns those that were paused."""
        ended = [k for k in keys if k in self._paused]
        for k in ended:
            del self._paused[k]
            self._repairs.pop(k, None)
        return ended
