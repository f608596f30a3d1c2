"""scan's two outputs: JSON lines per failure (Printer), or per-address counts and the
bans the configured policy would have made (Summary)."""

from __future__ import annotations

import datetime as _dt
import json
from typing import TYPE_CHECKING, Any, TextIO, cast

from sshguardd.contracts import Kind
from sshguardd.detect import Raw
from sshguardd.scan.fastpath import Emit
from sshguardd.scan.textio import iso_utc

if TYPE_CHECKING:  # the policy and config (pydantic) are imported by Summary only
    from sshguardd import config
    from sshguardd.bans.policy import BanPolicy

__all__ = ["Printer", "Summary"]

_UTC = _dt.UTC
_ACCEPTED = Kind.ACCEPTED


def _time_json(t: float) -> str:
    """A time as JSON: null when datetime cannot represent it (a crafted stamp such as
    9999-12-31T23:59:59-23:59 is past year 9999 in UTC), which used to end the scan of the
    whole file at that line."""
    try:
        return f'"{iso_utc(t)}"'
    except (ValueError, OverflowError, OSError):
        return "null"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    try:
        return iso_utc(t)
    except (ValueError, OverflowError, OSError):
        return None  # see _time_json



class Printer:
    """One JSON object per failure, formatted by hand for speed: the host is an IP literal
    or a name checked against DNS syntax and kinds are fixed words, so only user names,
    file names and cursors need JSON escaping (memoised, bounded). Output is written once
    per input chunk (emit.chunk_done) and by flush(), which the caller calls at the end."""


    def __init__(self, out: TextIO):
        self.out = out
        self.pending: list[str] = []

    def flush(self) -> None:
        if self.pending:
            self.out.write("".join(self.pending))
            self.pending.clear()

    def emit_for(self, file: str) -> Emit:
        fname = json.dumps(file)
        pending, flush = self.pending, self.flush
        append = pending.append
        dumps, accepted = json.dumps, Kind.ACCEPTED
        kinds = {k: k.value for k in Kind}
        times: dict[float | None, str] = {None: "null"}
        users: dict[str | None, str] = {None: "null"}

        def emit(event: Raw, t: float | None, pid: int | None, machine: str | None,
                 line: int, cursor: str | None) -> None:
            kind = event[0]
            if kind is accepted:
                return
            when = times.get(t)
            if when is None:
                if len(times) > 4096:
                    times.clear()
                    times[None] = "null"
                # times maps None from the start: t is a float here
                when = times[t] = _time_json(cast(float, t))
            user = event[2]
            juser = users.get(user)
            if juser is None:
                if len(users) > 4096:
                    users.clear()
                    users[None] = "null"
                juser = users[user] = dumps(user)
            if cursor is None:
                append(f'{{"time": {when}, "host": "{event[1]}", "user": {juser}, '
                       f'"kind": "{kinds[kind]}", "line": {line}, "file": {fname}}}\n')
            else:
                append(f'{{"time": {when}, "host": "{event[1]}", "user": {juser}, '
                       f'"kind": "{kinds[kind]}", "line": {line}, "file": {fname}, '
                       f'"cursor": {dumps(cursor)}}}\n')

        def time_json(t: float | None) -> str:
            when = times.get(t)
            if when is None:
                if len(times) > 4096:
                    times.clear()
                    times[None] = "null"
                # times maps None from the start: t is a float here
                when = times[t] = _time_json(cast(float, t))
            return when

        def user_json(user: str | None) -> str:
            juser = users.get(user)
            if juser is None:
                if len(users) > 4096:
                    users.clear()
                    users[None] = "null"
                juser = users[user] = dumps(user)
            return juser

        emit.chunk_done = flush  # type: ignore[attr-defined]  # scan_text flushes per chunk
        # For scan_text's hot path, which formats the same line itself (no cursor there).
        emit.direct = (append, fname, time_json, user_json, users)  # type: ignore[attr-defined]
        return emit


class _Offender:
    __slots__ = ("bans", "counts", "first", "last")

    def __init__(self) -> None:
        self.counts: dict[Kind, int] = {}  # in order of first appearance
        self.first: float | None = None
        self.last: float | None = None
        self.bans: list[dict[str, Any]] = []

    def kinds(self) -> dict[str, int]:
        return {k.value: n for k, n in self.counts.items()}


class Summary:
    """Per-address counts, and the bans the configured policy (policy.BanPolicy) makes
    while observing every event in log order with the entries' own time."""

    def __init__(self, cfg: config.Config):
        from sshguardd.bans.policy import BanPolicy

        self.cfg = cfg
        self.policy: BanPolicy | None = BanPolicy(cfg.ban) if cfg.ban.enabled else None
        self.offenders: dict[str, _Offender] = {}
        self.accepted: dict[str, int] = {}
        self._emit = self._emitter()

    @property
    def failures(self) -> int:
        """Failure events seen (each counted once in its address's counts)."""
        return sum(sum(o.counts.values()) for o in self.offenders.values())

    def emit_for(self, file: str) -> Emit:
        return self._emit

    def _emitter(self) -> Emit:
        """The Emit called for every event: a closure over the tables (no attribute
        lookups per event), plain tuple fields, and the policy fed the fields themselves
        (no LogRecord or Event per event)."""
        offenders, accepted = self.offenders, self.accepted
        find, accepted_get = offenders.get, accepted.get
        observe = self.policy.observe_raw if self.policy is not None else None

        def emit(raw: Raw, t: float | None, pid: int | None, machine: str | None,
                 line: int, cursor: str | None) -> None:
            kind, host = raw[0], raw[1]
            if kind is _ACCEPTED:
                accepted[host] = accepted_get(host, 0) + 1
            else:
                o = find(host)
                if o is None:
                    o = offenders[host] = _Offender()
                counts = o.counts
                counts[kind] = counts.get(kind, 0) + 1
                if t is not None:
                    first = o.first
                    if first is None:
                        o.first = o.last = t
                    elif t < first:
                        o.first = t
                    elif t > o.last:  # type: ignore[operator]  # set with first
                        o.last = t
            if observe is not None and t is not None:
                # The policy reads the record's time and pid, never its text.
                ban = observe(kind, host, raw[2], len(raw) > 4 and raw[4], pid, t)
                if ban is not None:
                    o = find(host)
                    if o is None:
                        o = offenders[host] = _Offender()
                    o.bans.append({"network": ban.network, "at": _iso(t),
                                   "duration": ban.duration, "strikes": ban.strikes})

        return emit

    def write(self, out: TextIO, as_json: bool) -> None:
        failures = self.failures
        ranked = sorted(self.offenders.items(),
                        key=lambda kv: (-sum(kv[1].counts.values()), kv[0]))
        if as_json:
            out.write(json.dumps({
                "failures": failures,
                "policy": self.policy is not None,
                "addresses": [{"host": host, "failures": sum(o.counts.values()),
                               "kinds": o.kinds(), "first": _iso(o.first), "last": _iso(o.last),
                               "bans": o.bans, "logged_in": self.accepted.get(host, 0)}
                              for host, o in ranked],
            }) + "\n")
            return
        cfg = self.cfg
        out.write(f"{failures} failures from {len(self.offenders)} addresses\n")
        if self.policy is None:
            out.write("(ban simulation unavailable: ban.enabled is false)\n")
        width = max([len(h) for h, _ in ranked] + [7])
        rows = [f"{'ADDRESS':<{width}}  {'FAILS':>6}  {'BANS':>4}  KINDS\n"]
        for host, o in ranked:
            kinds = ", ".join(f"{k}={n}"
                              for k, n in sorted(o.kinds().items(), key=lambda kv: -kv[1]))
            rows.append(f"{host:<{width}}  {sum(o.counts.values()):>6}  {len(o.bans):>4}  "
                        f"{kinds}\n")
            if len(rows) >= 1024:  # few writes, and no second copy of the whole table
                out.write("".join(rows))
                rows.clear()
        out.write("".join(rows))
        banned = sum(1 for _, o in ranked if o.bans)
        out.write(f"\n{banned} addresses would be banned"
                  f" (max_retry={cfg.ban.max_retry:g} within find_time={cfg.ban.find_time:g}s)\n")

