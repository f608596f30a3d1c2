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

# One connection: time of its latest line, pid (0: none), attempt sum (-1: no attempt line
# yet), largest refusal weight (-1: none), largest probe weight. 24 bytes, so a one-
# connection offender's bytes object fits a 64-byte allocation (1M offenders: ~135 MB).
# Weights as float32 are exact for the usual 0.5/1/2 and within 1e-7 for any other.
_CONN = struct.Struct("=dIfff")


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



class OffenderTable:
    """The part of BanPolicy that holds offenders: `_offenders` (key -> packed
    connections, least recently seen first), bounded by cfg.max_tracked, and `_dirty`,
    the keys changed since take_changes()."""

    cfg: BanConfig
    _offenders: dict[int, bytes]
    _dirty: set[int]
    evictions: int

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
