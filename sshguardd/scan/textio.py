"""Syslog text as the chunk scanner reads it: decoded chunks of whole lines, and the
year of a classic timestamp (which has none)."""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Iterator
from typing import BinaryIO

from sshguardd.detect.logformats import MONTHS

__all__ = ["Years", "chunks", "iso_utc", "text_chunks", "utc_second"]

_UTC = _dt.UTC


class Years:
    """The year of a classic syslog line: the file's mtime year, or the one before for
    months later than the mtime's month (a log rotated in January holds December)."""

    def __init__(self, year: int | None, mtime: float | None):
        if year is not None:
            self.year, self.month = year, 12
        else:
            stamp = _dt.datetime.fromtimestamp(mtime) if mtime is not None else _dt.datetime.now()
            self.year, self.month = stamp.year, stamp.month
        # month abbreviation -> year, so the per-line cost is one dict lookup
        self.by_month = {m: self.year - 1 if n > self.month else self.year
                         for m, n in MONTHS.items()}


_LONG_LINE = 64 << 10  # far beyond MAX_MESSAGE plus any syslog prefix


def chunks(raw: BinaryIO, size: int = 1 << 20) -> Iterator[str]:
    """A binary stream as decoded text, one string per ~1 MiB read (cut after a newline,
    which never falls inside a UTF-8 sequence), each starting with "\\n" and holding whole
    lines separated by "\\n" (see fastpath.scan_text). Lines end at "\\n" only; undecodable bytes
    are replaced, never fatal: a log is evidence, not a config."""
    rest = b""
    while True:
        block = raw.read(size)
        if not block:
            if rest:
                yield "\n" + rest.decode("utf-8", "replace")
            return
        cut = block.rfind(b"\n")
        if cut < 0:
            # No newline yet: keep only the head of an overlong line (it is ignored as
            # longer than any sshd message anyway), so memory stays bounded.
            rest = (rest + block)[:_LONG_LINE]
            continue
        data = rest + block[:cut]
        rest = block[cut + 1:]
        yield "\n" + data.decode("utf-8", "replace")


def text_chunks(text: str) -> list[str]:
    """Already-decoded text as chunks() gives it."""
    if text.endswith("\n"):
        text = text[:-1]
    return ["\n" + text] if text else []


_SECONDS: dict[int, str] = {}


def iso_utc(t: float) -> str:
    """datetime.fromtimestamp(t, UTC).isoformat(), exactly, at a fraction of its cost for
    the ISO 8601 logs whose every line has its own microsecond: CPython's rounding
    (modf, then the microseconds rounded half to even, then carried) and its format, with
    the date and time of each whole second memoised (bounded). tests/test_scan.py checks
    the two agree."""
    frac, whole = math.modf(t)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    head = utc_second(int(whole))
    if head is None:  # outside datetime's range: let it raise as it does
        return _dt.datetime.fromtimestamp(t, _UTC).isoformat()
    return f"{head}.{us:06d}+00:00" if us else f"{head}+00:00"


def utc_second(second: int) -> str | None:
    """'YYYY-MM-DDTHH:MM:SS' of a whole second in UTC as datetime.isoformat() writes it,
    None outside datetime's years 1 to 9999. Memoised (bounded)."""
    head = _SECONDS.get(second)
    if head is None:
        tm = time.gmtime(second)
        if not 1 <= tm.tm_year <= 9999:
            return None
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        head = _SECONDS[second] = (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T"
                                   f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
    return head
