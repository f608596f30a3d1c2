"""The thread both log followers (journal, file) run their follow loop on.

A follower subclass provides `_loop(emit)` and `_thread_name`; this owns the thread and the
self-pipe that wakes the loop to stop. The loop blocks in select/poll on `_stop_r` beside
its own source, so a stop is seen at once rather than at the next poll interval.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

from sshguardd.contracts import LogBatch

log = logging.getLogger(__name__)


class FollowThread:
    _thread_name = "follower"
    _thread: threading.Thread | None = None
    _stop_r = -1
    _stop_w = -1

    def _loop(self, emit: Callable[[LogBatch], None]) -> None:
        raise NotImplementedError

    def start(self, emit: Callable[[LogBatch], None]) -> None:
        """Run the follow loop on a thread: every batch read goes to `emit` (which may
        block for back-pressure). open() must have been called."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(
            target=self._loop, args=(emit,), name=self._thread_name, daemon=True)
        self._thread.start()

    def _stopping(self) -> bool:
        # poll, not select: select(2) cannot take a descriptor above 1023, and the unit
        # allows more (LimitNOFILE=).
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        return bool(poller.poll(0))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (if any) and wait for it."""
        if self._thread is None:
            return
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Its pipe stays open: closing it under a live select() could wake it on a
            # reused descriptor.
            log.error("%s thread did not stop within %.1fs", self._thread_name, timeout)
            return
        self._thread = None
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self._stop_r = self._stop_w = -1
