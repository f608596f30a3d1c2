"""The ban policy's table of offenders: how one offender's connections are packed, how
the table is bounded, and how its counters are handed to the state store and back.

Pure, like the policy: the daemon writes what take_changes() returns to the store with
the position of the batch that changed it (one transaction), and hands the saved rows
to load_offenders() at start, so failure counters survive a restart whatever the
journal still holds (a flood with vacuum plus `kill -9` lost ~93 % of them before).
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterable, Sequence

from sshguardd.config import BanConfig
from sshguardd.contracts import Kind

ATTEMPTS = frozenset({Kind.BAD_PASSWORD, Kind.BAD_KEY, Kind.AUTH_FAILURE})
REFUSALS = frozenset({Kind.INVALID_USER, Kind.ROOT_REFUSED, Kind.USER_NOT_ALLOWED,
                      Kind.MAX_AUTH_TRIES})
PROBES = frozenset({Kind.PREAUTH_DISCONNECT, Kind.KEX_FAILURE, Kind.PROTOCOL_ERROR,
                    Kind.TIMEOUT})
STANDALONE = frozenset({Kind.PENALTY})

# Connections remembered per offender. Only zero-weight connections (failed public keys of
# a protected or legitimate client) can pile up; past this, the oldest is forgotten.
MAX_CONNECTIONS = 64

# One connection: time of its latest line, pid (0: none), attempt sum (-1: no attempt line
# yet), largest refusal weight (-1: none), largest probe weight. 24 bytes, so a one-
# connection offender's bytes object fits a 64-byte allocation (1M offenders: ~135 MB).
# Weights as float32 are exact for the usual 0.5/1/2 and within 1e-7 for any other.
_CONN = struct.Struct("=dIfff")
_PACK = _CONN.pack
_UNPACK = _CONN.unpack
_CONN_SIZE = _CONN.size


def _parse_ip(host: str) -> tuple[int, int] | None:
    """(version, value) of an IP literal, IPv4-mapped IPv6 as IPv4; None for anything else
    (host names). libc's inet_pton is strict and ~10x faster than ipaddress.ip_address,
    which matters at tens of thousands of events per second."""
    try:
        if ":" in host:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, host), "big")
            if value >> 32 == 0xFFFF:
                return 4, value & 0xFFFFFFFF
            return 6, value
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    except (OSError, ValueError):
        return None


def _evict_count(cap: int) -> int:
    """How many to evict at once when full. A dict iterates past the slots of deleted
    entries, which pile up at its front between resizes, so finding the oldest entry costs
    O(deletions since the last resize): evicting one per insert ran at 7k events/s with
    1M offenders over a 100k cap. Evicting 1/128 of the cap per scan amortises that."""
    return max(1, cap // 128)


def _score(conn: Sequence[float]) -> float:
    _, _, attempts, refusal, probe = conn
    if attempts >= 0 or refusal >= 0:
        return max(attempts, refusal, 0.0)
    return probe



def _slot(kind: Kind) -> int:
    """A kind's field in a connection: 2 attempts, 3 refusals, 4 probes."""
    return 2 if kind in ATTEMPTS else 3 if kind in REFUSALS else 4


def _fresh(slot: int, weight: float) -> tuple[float, float, float, float]:
    """(attempts, refusal, probe, score) of a new connection [t, pid, -1.0, -1.0, 0.0]
    after one line whose kind has this slot and weight: _count's general arithmetic and
    _score, done once per kind."""
    conn = [0.0, 0, -1.0, -1.0, 0.0]
    if slot == 2:
        conn[2] = max(conn[2], 0.0) + weight
    else:
        conn[slot] = max(conn[slot], weight)
    return conn[2], conn[3], conn[4], sum(_score(c) for c in [conn])


class OffenderTable:
    """The part of BanPolicy that holds offenders: `_offenders` (key -> packed
    connections, least recently seen first), bounded by cfg.max_tracked, and `_dirty`,
    the keys changed since take_changes()."""

    cfg: BanConfig
    _offenders: dict[int, bytes]
    _dirty: set[int]
    evictions: int
    # Per kind: (weight, slot, standalone, fresh), see BanPolicy.__init__.
    _kinds: dict[Kind, tuple[float, int, bool, tuple[float, float, float, float]]]

    def _count(self, key: int, pid: int | None, kind: Kind, t: float) -> float:
        """Update the offender's connection for this line; return its score in the window.
        The first line of an offender (the common case in a flood of distinct addresses)
        packs its one connection directly; the score is taken from the unpacked (double)
        values, as for the general path below."""
        weight, slot, standalone, fresh = self._kinds[kind]
        offenders = self._offenders
        old = offenders.pop(key, None)
        conn_pid = 0 if pid is None or standalone else pid & 0xFFFFFFFF
        if old is None:
            if len(offenders) >= self.cfg.max_tracked:
                self._evict()
            self._dirty.add(key)
            attempts, refusal, probe, score = fresh
            offenders[key] = _PACK(t, conn_pid, attempts, refusal, probe)
            return score
        self._dirty.add(key)
        horizon = t - self.cfg.find_time
        if len(old) == _CONN_SIZE:
            # One connection (most offenders): the general path below without its lists.
            latest, old_pid, attempts, refusal, probe = _UNPACK(old)
            if latest < horizon:  # out of the window: this line's connection alone
                latest, old_pid, attempts, refusal, probe = t, conn_pid, -1.0, -1.0, 0.0
            elif not conn_pid or old_pid != conn_pid:
                return self._count_conns(key, [[latest, old_pid, attempts, refusal, probe]],
                                         conn_pid, slot, weight, t)
            if t > latest:
                latest = t
            if slot == 2:
                attempts = max(attempts, 0.0) + weight
            elif slot == 3:
                refusal = max(refusal, weight)
            else:
                probe = max(probe, weight)
            offenders[key] = _PACK(latest, old_pid, attempts, refusal, probe)
            if attempts >= 0 or refusal >= 0:  # _score()
                return max(attempts, refusal, 0.0)
            return probe
        return self._count_conns(key, [list(c) for c in _CONN.iter_unpack(old) if c[0] >= horizon],
                                 conn_pid, slot, weight, t)

    def _count_conns(self, key: int, conns: list[list[float]], conn_pid: int, slot: int,
                     weight: float, t: float) -> float:
        """_count() for an offender with several connections in the window (conns)."""
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
        if t > conn[0]:
            conn[0] = t
        if slot == 2:
            conn[2] = max(conn[2], 0.0) + weight
        else:
            conn[slot] = max(conn[slot], weight)
        if len(conns) == 1:
            self._offenders[key] = _PACK(*conn)
            return _score(conn)
        self._offenders[key] = b"".join([_PACK(*c) for c in conns])
        return sum([_score(c) for c in conns])

    def _evict(self) -> None:
        """Drop the offenders seen least recently (the front of the dict)."""
        victims = list(itertools.islice(self._offenders, _evict_count(self.cfg.max_tracked)))
        for key in victims:
            del self._offenders[key]
        self._dirty.update(victims)
        self.evictions += len(victims)

    def take_changes(self) -> list[tuple[str, float, bytes | None]]:
        """Offenders changed since the last call, as (key, latest line time, packed
        connections or None when forgotten): what the daemon writes to the store with
        the batch's position, so a restart keeps the counters whatever the journal kept."""
        out: list[tuple[str, float, bytes | None]] = []
        for key in self._dirty:
            packed = self._offenders.get(key)
            latest = max((c[0] for c in _CONN.iter_unpack(packed)), default=0.0) \
                if packed else 0.0
            out.append((format(key, "x"), latest, packed))
        self._dirty.clear()
        return out

    def keep_changes(self, changes: Iterable[tuple[str, float, bytes | None]]) -> None:
        """The store write of take_changes() failed: offer them again next time."""
        self._dirty.update(int(k, 16) for k, _, _ in changes)

    def load_offenders(self, rows: Iterable[tuple[str, bytes]]) -> int:
        """Counters saved by take_changes(), oldest first (Store.offenders). Returns how
        many were taken (at most max_tracked; unreadable rows are skipped)."""
        n = 0
        for key_hex, packed in rows:
            try:
                key = int(key_hex, 16)
                if len(packed) % _CONN.size or not packed:
                    continue
            except (TypeError, ValueError):
                continue
            self._offenders.pop(key, None)
            if len(self._offenders) >= self.cfg.max_tracked:
                self._evict()
            self._offenders[key] = bytes(packed)
            n += 1
        return n
