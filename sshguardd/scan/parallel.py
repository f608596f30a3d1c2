"""scan --jobs: a large syslog file cut at newlines into segments for worker processes."""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing.pool import AsyncResult
from typing import BinaryIO, TextIO

from sshguardd.detect import Correlator
from sshguardd.scan.fastpath import scan_text
from sshguardd.scan.inputs import JOURNAL_MAGIC, is_export
from sshguardd.scan.report import Printer
from sshguardd.scan.textio import Years, text_chunks

__all__ = ["SEGMENT", "WARMUP", "parallel_ok", "scan_parallel", "segments"]

# --jobs: a large text file is cut at newlines into segments scanned by worker processes;
# outputs are written in input order. Each worker first replays WARMUP bytes before its
# segment without emitting, so its Correlator knows the connections already open there
# (connections span seconds, i.e. far fewer lines than this). That is not exact in every
# case: an address-less line whose connection's address was logged more than WARMUP
# earlier, or a connection the single pass had already evicted (more than max_entries
# open), is judged differently. So --jobs stays opt-in (default 1): the default output
# is the single pass's, always.
SEGMENT = 8 << 20
WARMUP = 512 << 10


def segments(path: str) -> list[tuple[int, int, int, int]]:
    """(warm-up start, start, end, first line number) for each segment of `path`."""
    return list(_iter_segments(path))


def _iter_segments(path: str) -> Iterator[tuple[int, int, int, int]]:
    """segments(), one at a time: the first can be scanned while the next are counted."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start, line = 0, 1
        while start < size:
            end = _after_newline(f, min(start + SEGMENT, size), size)
            warm = _after_newline(f, start - WARMUP, start) if start > WARMUP else 0
            yield warm, start, end, line
            f.seek(start)
            line += f.read(end - start).count(b"\n")
            start = end


def _after_newline(f: BinaryIO, pos: int, limit: int) -> int:
    """The offset just after the first newline at or after `pos` (at most `limit`), read
    in blocks so that an overlong line is never held in memory."""
    f.seek(pos)
    while pos < limit:
        block = f.read(1 << 16)
        if not block:
            return limit
        i = block.find(b"\n")
        if i >= 0:
            return min(pos + i + 1, limit)
        pos += len(block)
    return limit


def _scan_segment(path: str, by_month: dict[str, int], year: int,
                  segment: tuple[int, int, int, int]) -> bytes:
    """A worker: the JSON lines for one segment of a text file."""
    warm, start, end, first_line = segment
    with open(path, "rb") as f:
        f.seek(warm)
        warm_text = f.read(start - warm).decode("utf-8", "replace")
        text = f.read(end - start).decode("utf-8", "replace")
    years = Years(year, None)
    years.by_month = by_month
    correlator = Correlator()
    if warm_text:
        scan_text(text_chunks(warm_text), years, correlator, lambda *a: None)
    buffer = io.StringIO()
    printer = Printer(buffer)
    scan_text(text_chunks(text), years, correlator, printer.emit_for(path), first_line)
    printer.flush()
    # Bytes: the parent writes them as they are (the output is ASCII: JSON escapes the
    # rest), with no decoding and encoding of tens of MB on its single thread.
    return buffer.getvalue().encode("ascii")


def parallel_ok(path: str) -> bool:
    """Only large regular syslog text files are worth cutting into segments."""
    st = os.stat(path)
    if not os.path.isfile(path) or st.st_size < 2 * SEGMENT:
        return False
    with open(path, "rb") as f:
        head = f.read(256)
    return not head.startswith(JOURNAL_MAGIC) and not is_export(head)


def scan_parallel(path: str, year: int | None, jobs: int, out: TextIO) -> None:
    """Write scan's JSON lines for the syslog file `path` to `out`, scanned by `jobs`
    worker processes, in input order (see the caveat above)."""
    with open(path, "rb") as f:
        years = Years(year, os.fstat(f.fileno()).st_mtime)
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(jobs)
    out.flush()
    raw = getattr(out, "buffer", None)

    def write(data: bytes) -> None:
        if raw is not None:
            raw.write(data)
        else:
            out.write(data.decode("ascii"))

    try:
        pending: list[AsyncResult[bytes]] = []
        for segment in _iter_segments(path):
            pending.append(pool.apply_async(
                _scan_segment, (path, years.by_month, years.year, segment)))
            if len(pending) >= 2 * jobs:  # bounded: at most 2*jobs segments in flight
                write(pending.pop(0).get())
        for result in pending:
            write(result.get())
    finally:
        pool.close()
        pool.join()

