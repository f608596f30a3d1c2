"""Syslog text as the chunk scanner reads it: decoded chunks of whole lines, and the
year of a classic timestamp (which has none)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import BinaryIO

from sshguardd.detect.logformats import MONTHS

__all__ = ["Years", "chunks", "text_chunks"]


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

