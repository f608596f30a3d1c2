"""Follow sshd's messages in the systemd journal, in-process and event-driven.

Trust rule: an entry is sshd's only if fields the *journal* sets say so, never a field the
sender chooses. We match

    _SYSTEMD_UNIT in units AND _COMM in commands AND _UID == 0

SYSLOG_IDENTIFIER is never used: `logger -t sshd` sets it from any account. The unit alone
is not enough: without pam_systemd (minimal and container images, `UsePAM no`) a user's
session stays in ssh.service's cgroup, so its `logger` lines carry _SYSTEMD_UNIT=ssh.service
(issue 10). _COMM is the kernel's name of the sending process and _UID its uid; a user can
name a program `sshd` but cannot make it uid 0. Verified on OpenSSH 9.2 (Debian 12): every
line, including the unprivileged pre-auth child's `... [preauth]` lines, arrives with
_COMM=sshd and _UID=0, because the sandboxed child cannot reach /dev/log and hands its
messages to the root monitor, which logs them. OpenSSH 9.8 and later split the per-
connection work into `sshd-session` (root, logs itself) and, from 10.0, `sshd-auth`
(unprivileged; by OpenSSH's design its messages are relayed through the sshd-session
monitor like the old [preauth] child's, so they carry _COMM=sshd-session, _UID=0; not yet
run here). Hence the default commands `sshd` and `sshd-session`.

The unit part is required only where it can exist: on a host booted with systemd
(sd_booted(3): /run/systemd/system) by default; without systemd as PID 1 no entry has a
unit and _COMM with _UID=0 is the whole rule.

Floods: journald rate-limits each unit (RateLimitIntervalSec/RateLimitBurst, per unit
LogRateLimit*=) and drops what exceeds it, then writes one notice of its own,
"Suppressed N messages from ssh.service" (MESSAGE_ID a596d6fe..., SD_MESSAGE_JOURNAL_DROPPED
in systemd's sd-messages.h). Only journald can write _TRANSPORT=driver, so notices are
matched on that and MESSAGE_ID; those naming one of our units go to `on_suppressed(unit,
count)` and are not passed on as sshd records.

Only the fields the policy needs are read (MESSAGE, _PID, the realtime timestamp, and the
cursor of the last entry of a batch): converting whole entries to dicts measured 8x slower.

Position: the caller persists `LogBatch.position` (a journal cursor) once it has processed a
batch and hands it back on restart; reading resumes with the entry right after it, so
nothing is lost and nothing is counted twice. Without a cursor reading starts at the tail.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from systemd import journal

from sshguardd.contracts import LogBatch, LogRecord
from sshguardd.effects.follow_thread import FollowThread

log = logging.getLogger(__name__)

DEFAULT_BATCH = 2000
# systemd's SD_MESSAGE_JOURNAL_DROPPED (sd-messages.h), on journald's "Suppressed N
# messages from UNIT" notice; the wording is journald-server.c's.
JOURNAL_DROPPED = "a596d6fe7bfa4994828e72309e95d61e"
_SUPPRESSED = re.compile(r"Suppressed (\d+) messages from (\S+)")


def sd_booted(run: Path | str = "/run/systemd/system") -> bool:
    """Whether this host runs systemd as PID 1 (the test sd_booted(3) makes)."""
    return os.path.isdir(run)


class JournalFollower(FollowThread):
    """Reads sshd's entries from the system journal (or a directory of journal files).

    Usage: `open()`, optionally `backlog(since)`, then either `read()` from one thread, or
    `start(emit)` to run the loop on a thread of its own, and `close()`.
    The reader is used only by the thread that reads; nothing here is shared.
    """

    _thread_name = "journal-follower"

    def __init__(
        self,
        units: Iterable[str] = ("ssh.service", "sshd.service"),
        commands: Iterable[str] = ("sshd", "sshd-session"),
        directory: Path | str | None = None,
        cursor: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH,
        reader_factory: Callable[..., journal.Reader] = journal.Reader,
        hot_window: float = 10.0,
        hot_interval: float = 0.01,
        require_unit: bool | None = None,
        on_suppressed: Callable[[str, int], None] | None = None,
    ) -> None:
        """require_unit: None means "if sd_booted()"; on_suppressed(unit, dropped) is
        called on the reading thread for each journald suppression notice about one of
        `units` (default: a warning in the log)."""
        self.units = tuple(units)
        self.commands = tuple(commands)
        self.require_unit = bool(self.units) and (
            sd_booted() if require_unit is None else require_unit)
        self.on_suppressed = on_suppressed or _log_suppressed
        self.suppressed = 0  # messages journald says it dropped from our units
        self.directory = None if directory is None else str(directory)
        self.cursor = cursor
        self.batch_size = batch_size
        self.hot_window = hot_window
        self.hot_interval = hot_interval
        self._factory = reader_factory
        self._reader: journal.Reader | None = None
        # True when the reader sits on an entry that has not been delivered yet (after
        # resuming from a cursor whose own entry is gone, e.g. vacuumed).
        self._pending = False
        self.entries_read = 0

    # -- opening and positioning -------------------------------------------------------

    def open(self) -> None:
        """Open the journal, install the trusted matches and position the reader."""
        if not self.commands:
            raise ValueError("no sshd commands to trust in the journal")
        if self.directory is not None:
            reader = self._factory(path=self.directory)
        else:
            # sshd logs to the system journal: users' own journal files need not be
            # opened (and their entries could never pass the trust rule anyway).
            reader = self._factory(flags=journal.LOCAL_ONLY | journal.SYSTEM_ONLY)
        self._reader = reader
        self._add_matches(reader)
        self._position()

    def _add_matches(self, reader: journal.Reader) -> None:
        # Within one group, values of one field are ORed and different fields ANDed;
        # add_disjunction() ORs the groups.
        if self.require_unit:
            reader.add_match(*(f"_SYSTEMD_UNIT={u}" for u in self.units))
        reader.add_match(*(f"_COMM={c}" for c in self.commands))
        reader.add_match("_UID=0")
        if self.units:
            # journald's own notices: clients cannot set _TRANSPORT (fields starting
            # with "_" are dropped from what they send).
            reader.add_disjunction()
            reader.add_match(f"MESSAGE_ID={JOURNAL_DROPPED}")
            reader.add_match("_TRANSPORT=driver")

    def _position(self) -> None:
        reader = self._open_reader()
        self._pending = False
        if self.cursor:
            try:
                reader.seek_cursor(self.cursor)
            except (OSError, ValueError) as exc:
                log.warning("saved journal cursor unusable (%s); starting at the tail", exc)
            else:
                if reader._next():
                    try:
                        same = reader.test_cursor(self.cursor)
                    except (OSError, ValueError):
                        same = False
                    # If the saved entry itself is gone (vacuumed), the reader now sits on
                    # the first entry after it, which has not been processed yet.
                    self._pending = not same
                return
        reader.seek_tail()
        # Step onto the last existing entry so the next read returns only newer ones.
        if not reader._previous():
            # No matching entry at all. Left at "tail" with no current entry, the first
            # next() after new entries arrive returns the newest one and skips the others
            # (seen with systemd 252); from the head we get every one of them.
            reader.seek_head()

    # -- reading -----------------------------------------------------------------------

    def _record(self) -> LogRecord:
        reader = self._open_reader()
        try:
            raw = reader._get("MESSAGE")
        except KeyError:
            raw = b""
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            pid: int | None = int(reader._get("_PID"))
        except (KeyError, ValueError):
            pid = None
        return LogRecord(message=message, time=reader._get_realtime() / 1e6, pid=pid)

    def read(self, limit: int | None = None) -> LogBatch | None:
        """Return the entries available now (at most `limit`), or None when there are none.
        Never blocks."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("JournalFollower.read() before open()")
        limit = limit or self.batch_size
        records: list[LogRecord] = []
        append = records.append
        consumed = 0
        if self._pending:
            self._pending = False
            consumed = 1
            first = self._record()
            if not (first.message.startswith("Suppressed ")
                    and self._suppression(first.message)):
                append(first)
        # The hot loop, inlined with local names: per-entry Python overhead is what
        # separates this from journalctl's C loop (bench/bench_journal.py (b)).
        nxt, get, realtime, rec = reader._next, reader._get, reader._get_realtime, LogRecord
        n = len(records)
        while n < limit and nxt():
            consumed += 1
            try:
                message = get("MESSAGE").decode("utf-8", "replace")
            except (KeyError, AttributeError):
                message = ""
            # sshd's messages start with its fixed words, never this one: the notice
            # test costs nothing on the hot path.
            if message.startswith("Suppressed ") and self._suppression(message):
                continue
            try:
                pid: int | None = int(get("_PID"))
            except (KeyError, ValueError):
                pid = None
            append(rec(message, realtime() / 1e6, pid))
            n += 1
        if not records and not consumed:
            return None
        # A batch of notices only still moves the position, so they are not re-read.
        self.cursor = reader._get_cursor()
        self.entries_read += len(records)
        return LogBatch(records=tuple(records), position=self.cursor)

    def _suppression(self, message: str) -> bool:
        """Handle a journald notice (the reader sits on it); True if it was one."""
        reader = self._reader
        if reader is None:
            return False
        try:
            if reader._get("_TRANSPORT") != b"driver":
                return False
        except KeyError:
            return False
        m = _SUPPRESSED.match(message)
        if m is not None and m.group(2) in self.units:
            self.suppressed += int(m.group(1))
            try:
                self.on_suppressed(m.group(2), int(m.group(1)))
            except Exception:  # reporting must not stop the reading
                log.exception("handling a journald suppression notice failed")
        return True

    def backlog(self, window: float) -> list[LogRecord]:
        """The already-processed entries of the last `window` seconds before the saved
        cursor, up to and including the cursor's own entry, oldest first: what a restarted
        daemon replays (without acting on it) to rebuild its in-memory failure counters.
        The window is measured in the entries' own time, back from the cursor's entry.
        Leaves the reader where open() put it."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("JournalFollower.backlog() before open()")
        if not self.cursor:
            return []
        out: list[LogRecord] = []
        try:
            reader.seek_cursor(self.cursor)
        except (OSError, ValueError):
            return []
        # seek_cursor followed by previous() would skip the cursor's own entry; next()
        # lands on it (or on the first one after it when it is gone).
        if reader._next():
            if reader.test_cursor(self.cursor):
                out.append(self._record())
            elif not reader._previous():
                out = []
            else:
                out.append(self._record())
            if out:
                since = (out[0].time or 0.0) - window
                while reader._previous():
                    rec = self._record()
                    if rec.time is not None and rec.time < since:
                        break
                    out.append(rec)
        out.reverse()
        self._position()
        return out

    def _open_reader(self) -> journal.Reader:
        if self._reader is None:
            raise RuntimeError("JournalFollower.open() was not called")
        return self._reader

    # -- the thread ----------------------------------------------------------------------

    def _loop(self, emit: Callable[[LogBatch], None]) -> None:
        reader = self._open_reader()
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        jfd = reader.fileno()
        poller.register(jfd, reader.get_events())
        hot_until = 0.0
        try:
            while True:
                got = False
                while (batch := self.read()) is not None:
                    got = True
                    emit(batch)
                    if self._stopping():
                        return
                now = time.monotonic()
                if got:
                    hot_until = now + self.hot_window
                # The journal asks for a timeout only where inotify cannot be trusted
                # (e.g. network file systems); normally we sleep until inotify fires.
                # But journald delays that notification by 250-500 ms (it coalesces its
                # post-change timer, measured with systemd 252), while the entries are in
                # the shared mapping at once; so while sshd is busy (an attack) we also
                # look every hot_interval, and when quiet we sleep on inotify alone.
                timeout = reader.get_timeout_ms()
                if now < hot_until:
                    hot_ms = int(self.hot_interval * 1000)
                    timeout = hot_ms if timeout < 0 else min(timeout, hot_ms)
                events = poller.poll(None if timeout < 0 else max(timeout, 0))
                if any(fd == self._stop_r for fd, _ in events) or self._stopping():
                    return
                reader.process()
        except Exception:  # a dead follower must be visible, not silent
            log.exception("journal follower failed")
            raise

    def close(self) -> None:
        self.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _log_suppressed(unit: str, dropped: int) -> None:
    log.warning("journald dropped %d messages from %s (rate limit): attempts in them "
                "were not seen", dropped, unit)


def follow_matches(units: Sequence[str], commands: Sequence[str],
                   require_unit: bool | None = None) -> list[str]:
    """The sshd part of the trust rule as journalctl arguments (for docs, benchmarks and
    debugging): `journalctl _SYSTEMD_UNIT=ssh.service _COMM=sshd _UID=0`. require_unit
    None: as the follower decides it (sd_booted())."""
    if require_unit is None:
        require_unit = sd_booted()
    args: list[str] = [f"_SYSTEMD_UNIT={u}" for u in units] if require_unit else []
    return args + [f"_COMM={c}" for c in commands] + ["_UID=0"]
