"""Follow sshd's lines in a classic syslog file (/var/log/auth.log, /var/log/secure), for
hosts that log there instead of (or besides) the journal: `source.backend = "file"`.

Weaker trust than the journal: a syslog line names its program itself (`sshd[PID]:`), so
any local user who can reach /dev/log can forge one with `logger -t sshd`. Prefer the
journal backend wherever journald runs.

Same interface as JournalFollower (open, read, backlog, start/stop, close, cursor). The
position is "PATH:INODE:OFFSET" of the last complete line processed; on restart the file
is resumed at that offset if it is still the same file (same inode, not shorter), else read
from its start (it was rotated while we were down). Rotation while running (rename and a
new file, or copytruncate) is noticed by polling the path's inode and size.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from sshguardd.contracts import LogBatch, LogRecord
from sshguardd.detect.logformats import parse_syslog_line
from sshguardd.effects.follow_thread import FollowThread

log = logging.getLogger(__name__)


class FileFollower(FollowThread):
    _thread_name = "file-follower"

    def __init__(self, files: Iterable[Path | str], position: str | None = None, *,
                 batch_size: int = 2000, poll_interval: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.files = [Path(f) for f in files]
        self.cursor = position
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.clock = clock
        self.path: Path | None = None
        self._fh: BinaryIO | None = None
        self._inode = 0
        self._offset = 0
        self.entries_read = 0

    def open(self) -> None:
        self.path = next((f for f in self.files if f.exists()), self.files[0])
        saved_path, inode, offset = _parse_position(self.cursor)
        self._reopen(start_at_end=self.cursor is None)
        if saved_path == str(self.path) and inode == self._inode and self._fh is not None:
            size = os.fstat(self._fh.fileno()).st_size
            self._offset = offset if offset <= size else 0
            self._fh.seek(self._offset)

    def _reopen(self, start_at_end: bool = False) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.path is None:
            raise RuntimeError("FileFollower.open() was not called")
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            self._inode, self._offset = 0, 0
            return
        st = os.fstat(self._fh.fileno())
        self._inode = st.st_ino
        self._offset = st.st_size if start_at_end else 0
        self._fh.seek(self._offset)

    def _rotated(self) -> bool:
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False  # between rename and the new file: keep reading the old one
        return st.st_ino != self._inode or st.st_size < self._offset

    def _year(self) -> int:
        return time.localtime(self.clock()).tm_year

    def read(self, limit: int | None = None) -> LogBatch | None:
        if self._fh is None or self._rotated():
            # Finish the old file first, then switch to the new one from its start.
            old: list[LogRecord] = self._read_lines(limit) if self._fh is not None else []
            if old:
                return self._batch(old)
            self._reopen()
            if self._fh is None:
                return None
        return self._batch(self._read_lines(limit))

    def _read_lines(self, limit: int | None) -> list[LogRecord]:
        if self._fh is None:
            return []
        limit = limit or self.batch_size
        out: list[LogRecord] = []
        year = self._year()
        while len(out) < limit:
            line = self._fh.readline()
            if not line:
                break
            if not line.endswith(b"\n"):
                # A line still being written: read it again, whole, next time.
                self._fh.seek(self._offset)
                break
            self._offset += len(line)
            rec = parse_syslog_line(line.decode("utf-8", "replace").rstrip("\n"), year)
            if rec is not None:
                out.append(rec)
        return out

    def _batch(self, records: list[LogRecord]) -> LogBatch | None:
        if not records:
            return None
        self.cursor = f"{self.path}:{self._inode}:{self._offset}"
        self.entries_read += len(records)
        return LogBatch(records=tuple(records), position=self.cursor)

    def backlog(self, window: float) -> list[LogRecord]:
        """sshd's lines of the last `window` seconds before the resumed offset."""
        if self._fh is None or self._offset == 0 or self.path is None:
            return []
        keep: list[LogRecord] = []
        year = self._year()
        with open(self.path, "rb") as fh:
            data = fh.read(self._offset)
        for raw in data.splitlines():
            rec = parse_syslog_line(raw.decode("utf-8", "replace"), year)
            if rec is not None:
                keep.append(rec)
        if not keep or keep[-1].time is None:
            return keep
        since = keep[-1].time - window
        return [r for r in keep if r.time is None or r.time >= since]

    def _loop(self, emit: Callable[[LogBatch], None]) -> None:
        # poll, not select: select(2) cannot take a descriptor above 1023.
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        try:
            while True:
                while (batch := self.read()) is not None:
                    emit(batch)
                if poller.poll(self.poll_interval * 1000):
                    return
        except Exception:
            log.exception("file follower failed")
            raise

    def close(self) -> None:
        self.stop()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _parse_position(position: str | None) -> tuple[str | None, int, int]:
    if not position:
        return None, 0, 0
    try:
        path, inode, offset = position.rsplit(":", 2)
        return path, int(inode), int(offset)
    except ValueError:
        return None, 0, 0
