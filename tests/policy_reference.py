"""The ban policy's reference hot path: BanPolicy.observe and _count as they were before
the fast paths (an Event and a LogRecord per event, the key computed afresh each time,
every offender's connections unpacked into lists). tests/test_policy_fastpath.py proves
the fast paths (observe_raw, the memoised key, the one-connection paths of _count) give
the same bans and the same stored counters; it lives here because only that test runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sshguardd.bans.offenders import _CONN, _score
from sshguardd.bans.policy import (
    _EPSILON,
    ATTEMPTS,
    MAX_CONNECTIONS,
    REFUSALS,
    STANDALONE,
    BanPolicy,
    _fmt,
)
from sshguardd.contracts import Ban, Event, Kind, LogRecord

if TYPE_CHECKING:
    from sshguardd import config
    from sshguardd.scan import report


class ReferencePolicy(BanPolicy):
    """BanPolicy with the per-event path of commit 24c3528."""

    def _key(self, host: str) -> int | None:
        return self._key_uncached(host)

    def observe(self, record: LogRecord, event: Event) -> Ban | None:
        t = record.time if record.time is not None else self._latest
        if t > self._latest:
            self._latest = t
        key = self._key(event.host)
        if key is None:
            return None
        if event.kind is Kind.ACCEPTED:
            if self.cfg.protect_logged_in > 0:
                self.protection.remember(key, t, event.user)
            return None
        if event.pam_relay:
            return None
        until = self._banned.get(key)
        if until is not None:
            if until > t:
                return None
            del self._banned[key]
        if self._wide and self._covered_by_wide(key, t):
            return None
        score = self._count(key, record.pid, event.kind, t)
        if score + _EPSILON < self.cfg.max_retry or not self.cfg.enabled:
            return None
        protected = self.protection.judge(key, t, score, event.user)
        if protected is None:
            return None
        del self._offenders[key]
        self._dirty.add(key)
        reason = (f"{score:g} failed attempt{'' if score == 1 else 's'} within "
                  f"{_fmt(self.cfg.find_time)}, last {event.kind.value}{protected}")
        return self._ban(self._network(key), key, t, None, reason)

    def observe_raw(self, kind: Kind, host: str, user: str | None, pam_relay: bool,
                    pid: int | None, time: float | None) -> Ban | None:
        return self.observe(LogRecord("", time, pid), Event(kind, host, user, None, pam_relay))

    def _count(self, key: int, pid: int | None, kind: Kind, t: float) -> float:
        weight = self._weights[kind]
        old = self._offenders.pop(key, None)
        if old is None:
            if len(self._offenders) >= self.cfg.max_tracked:
                self._evict()
            conns: list[list[float]] = []
        else:
            horizon = t - self.cfg.find_time
            conns = [list(c) for c in _CONN.iter_unpack(old) if c[0] >= horizon]
        conn_pid = 0 if pid is None or kind in STANDALONE else pid & 0xFFFFFFFF
        conn = None
        if conn_pid:
            for c in conns:
                if c[1] == conn_pid:
                    conn = c
                    break
        if conn is None:
            conn = [t, conn_pid, -1.0, -1.0, 0.0]
            conns.append(conn)
            if len(conns) > MAX_CONNECTIONS:
                zero = next((c for c in conns if _score(c) == 0), conns[0])
                conns.remove(zero)
        conn[0] = max(conn[0], t)
        if kind in ATTEMPTS:
            conn[2] = max(conn[2], 0.0) + weight
        elif kind in REFUSALS:
            conn[3] = max(conn[3], weight)
        else:
            conn[4] = max(conn[4], weight)
        self._offenders[key] = b"".join(_CONN.pack(*c) for c in conns)
        self._dirty.add(key)
        return sum(_score(c) for c in conns)


def reference_summary(cfg: config.Config) -> report.Summary:
    """scan --summary's table with the reference policy and the per-event code of
    commit 24c3528 (an Event and a LogRecord per event)."""
    from sshguardd.scan import report

    class _Reference(report.Summary):
        failures = 0  # type: ignore[assignment]  # a plain counter here

        def emit_for(self, file: str) -> report.Emit:
            return self.emit

        def emit(self, raw, t, pid, machine, line, cursor):  # type: ignore[no-untyped-def]
            kind, host = raw[0], raw[1]
            if kind is Kind.ACCEPTED:
                self.accepted[host] = self.accepted.get(host, 0) + 1
            else:
                self.failures += 1
                o = self.offenders.get(host)
                if o is None:
                    o = self.offenders[host] = report._Offender()
                o.counts[kind] = o.counts.get(kind, 0) + 1
                if t is not None:
                    if o.first is None or t < o.first:
                        o.first = t
                    if o.last is None or t > o.last:
                        o.last = t
            if self.policy is not None and t is not None:
                ban = self.policy.observe(LogRecord("", t, pid, machine, cursor), Event(*raw))
                if ban is not None:
                    o = self.offenders.get(host)
                    if o is None:
                        o = self.offenders[host] = report._Offender()
                    o.bans.append({"network": ban.network, "at": report._iso(t),
                                   "duration": ban.duration, "strikes": ban.strikes})

    summary = _Reference(cfg)
    if summary.policy is not None:
        summary.policy = ReferencePolicy(cfg.ban)
    return summary
