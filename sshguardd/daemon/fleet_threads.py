"""The fleet stage's two threads. They only talk to the engine and enqueue frozen messages
(contracts.Fleet*) for the daemon loop, which alone touches the state store and the kernel.

* FleetWriter publishes the outbox (entries the loop staged after committing them), then
  the latest snapshot and status record the loop handed it. It holds an entry until the
  server took it, so an outage only delays it; stream ids are the publisher's own, so a
  repeat after a crash is not a second entry.
* FleetReader blocks in XREAD on every peer's stream from its cursor and checks that each
  peer's sequence goes on without a gap. XREAD silently skips whatever trimming (MINID),
  an outbox overflow or an engine restart without persistence removed, so a jump in the
  sequence, or a peer's snapshot that is ahead of us while its stream holds nothing after
  our cursor (the stream's first entry is past it), makes the reader fetch that peer's
  snapshot and hand it to the loop as a FleetSnapshot before anything newer.

Both retry a failing engine with exponential backoff (0.5 s doubling up to reconnect_max,
with jitter so a fleet does not reconnect in lockstep) and say so with FleetLink.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sshguardd.contracts import (
    FleetEntry,
    FleetLink,
    FleetPublished,
    FleetRead,
    FleetSnapshot,
)
from sshguardd.effects.fleet_store import Staged
from sshguardd.effects.fleet_transport import FleetTransport, FleetUnavailable, id_key

log = logging.getLogger(__name__)

Emit = Callable[[Any], Any]
PUBLISH_BATCH = 2000


class _Backoff:
    def __init__(self, ceiling: float) -> None:
        self.ceiling = max(0.5, ceiling)
        self.delay = 0.5

    def next(self) -> float:
        d = self.delay * random.uniform(0.8, 1.2)  # noqa: S311  (jitter, not a secret)
        self.delay = min(self.delay * 2, self.ceiling)
        return d

    def reset(self) -> None:
        self.delay = 0.5


class _Thread:
    name = "fleet"

    def __init__(self, emit: Emit, reconnect_max: float) -> None:
        self.emit = emit
        self._stop = threading.Event()
        self._backoff = _Backoff(reconnect_max)
        self._thread: threading.Thread | None = None
        self.up = False
        self.errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _wake(self) -> None:
        pass

    def _main(self) -> None:
        part = self.name.removeprefix("fleet-")
        while not self._stop.is_set():
            try:
                self._round()
                if not self.up:
                    self.up = True
                    self._backoff.reset()
                    self.emit(FleetLink(True, part))
            except FleetUnavailable as exc:
                self.errors += 1
                if self.up or self.errors == 1:
                    log.warning("fleet %s: %s", part, exc)
                self.up = False
                self.emit(FleetLink(False, part, str(exc)))
                self._stop.wait(self._backoff.next())
            except Exception as exc:  # a bug must not silently end fleet mode
                self.errors += 1
                self.up = False
                log.exception("fleet %s failed", part)
                self.emit(FleetLink(False, part, f"internal error: {exc}"))
                self._stop.wait(self._backoff.next())

    def _round(self) -> None:
        raise NotImplementedError


class FleetWriter(_Thread):
    """Publishes what the loop offers, in order. Thread-safe: offer(), set_snapshot(),
    set_status() may be called from the loop at any time."""

    name = "fleet-writer"

    def __init__(self, transport: FleetTransport, emit: Emit, *, retention: float,
                 reconnect_max: float, pending: Sequence[Staged] = ()) -> None:
        super().__init__(emit, reconnect_max)
        self.transport = transport
        self.retention = retention
        self._cond = threading.Condition()
        self._items: deque[Staged] = deque(pending)
        self._snapshot: tuple[str, int, Sequence[FleetEntry]] | None = None
        self._status: tuple[Mapping[str, Any], float] | None = None
        self.published = 0

    def offer(self, items: Sequence[Staged]) -> None:
        if items:
            with self._cond:
                self._items.extend(items)
                self._cond.notify()

    def set_snapshot(self, entry_id: str, seq: int, bans: Sequence[FleetEntry]) -> None:
        with self._cond:
            self._snapshot = (entry_id, seq, bans)
            self._cond.notify()

    def set_status(self, record: Mapping[str, Any], ttl: float) -> None:
        with self._cond:
            self._status = (record, ttl)
            self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _minid(self) -> int:
        return int((time.time() - self.retention) * 1000)

    def _round(self) -> None:
        if not self.up:
            self.transport.ping()
        while not self._stop.is_set():
            with self._cond:
                batch = [self._items[i] for i in range(min(PUBLISH_BATCH, len(self._items)))]
                snap = self._snapshot
                status = self._status
                if not batch and snap is None and status is None:
                    self._cond.wait(1.0)
                    if not self.up:
                        return
                    continue
            if batch:
                self.transport.publish(batch, self._minid())
                with self._cond:
                    for _ in batch:
                        self._items.popleft()
                self.published += len(batch)
                self.emit(FleetPublished(batch[-1][1].seq))
                if not self.up:
                    return  # report the link up before a long drain
                continue
            if snap is not None and (not self._items or self._items[0][1].seq > snap[1]):
                self.transport.write_snapshot(*snap)
                self.transport.trim(self._minid())  # an idle stream is trimmed too
                with self._cond:
                    if self._snapshot is snap:
                        self._snapshot = None
            if status is not None:
                self.transport.write_status(*status)
                with self._cond:
                    if self._status is status:
                        self._status = None
            if not self.up:
                return


class FleetReader(_Thread):
    """Reads every peer's stream from its cursor; cursors: peer -> (stream id, seq) as
    the loop last committed them."""

    name = "fleet-reader"

    def __init__(self, transport: FleetTransport, emit: Emit, *,
                 cursors: Mapping[str, tuple[str, int]], reconnect_max: float,
                 discovery_interval: float, resync_wait: float = 60.0,
                 block: float = 1.0, count: int = 5000) -> None:
        super().__init__(emit, reconnect_max)
        self.transport = transport
        self.cursors: dict[str, tuple[str, int]] = dict(cursors)
        self.discovery_interval = discovery_interval
        self.resync_wait = resync_wait
        self.block = block
        self.count = count
        self._next_discovery = 0.0
        self._gap_since: dict[str, float] = {}
        self._hold: dict[str, float] = {}
        self.resyncs = 0

    def _round(self) -> None:
        mono = time.monotonic()
        if mono >= self._next_discovery:
            self._next_discovery = mono + self.discovery_interval
            for peer in self.transport.peers():
                self.cursors.setdefault(peer, ("0-0", 0))
            self._idle_check()
        wanted = {p: c[0] for p, c in self.cursors.items() if self._hold.get(p, 0) <= mono}
        if not wanted:
            self._stop.wait(min(self.block, self.discovery_interval))
            return
        for read in self.transport.read(wanted, self.count, self.block):
            self._process(read)

    def _idle_check(self) -> None:
        """A peer whose stream holds nothing after our cursor but whose snapshot is
        ahead of what we applied lost entries we never saw: resync it."""
        for peer, (cursor, seq) in list(self.cursors.items()):
            if self.transport.has_after(peer, cursor):
                continue
            snap = self.transport.read_snapshot(peer)
            if snap is not None and snap.seq > seq:
                log.warning("fleet: %s's stream lost entries %d..%d; resyncing from its "
                            "snapshot", peer, seq + 1, snap.seq)
                self._resynced(snap)

    def _resynced(self, snap: FleetSnapshot) -> None:
        self.resyncs += 1
        self.emit(snap)
        self.cursors[snap.peer] = (snap.entry_id, snap.seq)
        self._gap_since.pop(snap.peer, None)

    def _process(self, read: FleetRead) -> None:
        peer = read.peer
        cursor, last = self.cursors.get(peer, ("0-0", 0))
        first = next((e.seq for _, e in read.entries if e is not None), None)
        if first is not None and first != last + 1:
            if not self._resync(peer, first, last):
                self._hold[peer] = time.monotonic() + 1.0
                return
            cursor, last = self.cursors[peer]
        kept: list[tuple[str, FleetEntry | None]] = []
        for item in read.entries:
            entry = item[1]
            if entry is None:
                kept.append(item)
            elif entry.seq > last:
                kept.append(item)
                last = entry.seq
        # XREAD answers in stream order, so the newest id is the last one.
        top = cursor
        if read.entries and id_key(read.entries[-1][0]) > id_key(cursor):
            top = read.entries[-1][0]
        if kept:
            self.emit(FleetRead(peer, tuple(kept)))
        self.cursors[peer] = (top, last)

    def _resync(self, peer: str, first: int, last: int) -> bool:
        """The entry after ours is seq `first`, not last + 1. True when the reader may go
        on (a snapshot covering the gap was handed over, or we waited long enough)."""
        snap = self.transport.read_snapshot(peer)
        if snap is not None and snap.seq >= first - 1:
            log.warning("fleet: %s's stream jumps from %d to %d; resyncing from its "
                        "snapshot (seq %d)", peer, last, first, snap.seq)
            self._resynced(snap)
            return True
        since = self._gap_since.setdefault(peer, time.monotonic())
        if time.monotonic() - since < self.resync_wait:
            return False  # its snapshot is not written yet (it is reconnecting): wait
        log.error("fleet: %s's stream jumps from %d to %d and its snapshot does not "
                  "cover the gap; going on without it", peer, last, first)
        if snap is not None and snap.seq > last:
            self._resynced(snap)
        self._gap_since.pop(peer, None)
        cursor, _ = self.cursors.get(peer, ("0-0", 0))
        self.cursors[peer] = (cursor, first - 1)
        return True
