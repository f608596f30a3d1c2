"""scan's inputs: syslog files, journal export streams, journal files and directories,
standard input; each read in order into one Correlator and reported through an Emit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from sshguardd.contracts import LogRecord
from sshguardd.detect import Correlator
from sshguardd.detect.logformats import is_sshd_entry, read_export, record_from_journal
from sshguardd.scan.fastpath import Emit, scan_text
from sshguardd.scan.textio import Years, chunks

__all__ = ["JOURNAL_MAGIC", "is_export", "scan_all", "scan_file"]

JOURNAL_MAGIC = b"LPKSHHRH"


def _scan_record(record: LogRecord, correlator: Correlator, emit: Emit, number: int) -> None:
    for event in correlator.feed_raw(record.message, record.pid, record.host, record.time):
        emit(event, record.time, record.pid, record.host, number, record.position)


def _scan_export(stream: BinaryIO, correlator: Correlator, emit: Emit) -> None:
    for number, fields in read_export(stream):
        if is_sshd_entry(fields):
            record = record_from_journal(fields)
            if record is not None:
                _scan_record(record, correlator, emit, number)


def _scan_journal(correlator: Correlator, emit: Emit, *, directory: str | None = None,
                  files: list[str] | None = None) -> None:
    from systemd import journal  # an effect: imported only for journal input

    reader = journal.Reader(files=files) if files else journal.Reader(path=directory)
    try:
        for number, entry in enumerate(reader, 1):
            if is_sshd_entry(entry):
                record = record_from_journal(entry)
                if record is not None:
                    _scan_record(record, correlator, emit, number)
    finally:
        reader.close()


def is_export(head: bytes) -> bool:
    """Journal export format starts with FIELD=value lines (__CURSOR= from journalctl)."""
    first = head.split(b"\n", 1)[0]
    name, eq, _ = first.partition(b"=")
    return bool(eq) and bool(name) and name.replace(b"_", b"").isalnum() and name.upper() == name



def scan_file(path: str, year: int | None, correlator: Correlator,
               emit_for: Callable[[str], Emit]) -> None:
    if path == "-":
        raw = sys.stdin.buffer
        head = raw.peek(256)[:256] if hasattr(raw, "peek") else b""
        if is_export(head):
            _scan_export(raw, correlator, emit_for("-"))
        else:
            scan_text(chunks(raw), Years(year, None), correlator, emit_for("-"))
        return
    with open(path, "rb") as f:
        head = f.read(256)
        f.seek(0)
        if head.startswith(JOURNAL_MAGIC):
            f.close()
            _scan_journal(correlator, emit_for(path), files=[path])
        elif is_export(head):
            _scan_export(f, correlator, emit_for(path))
        else:
            mtime = os.fstat(f.fileno()).st_mtime
            scan_text(chunks(f), Years(year, mtime), correlator, emit_for(path))


def scan_all(files: Sequence[str], journal_dirs: Sequence[str], year: int | None,
             emit_for: Callable[[str], Emit],
             parallel: Callable[[str], bool] | None = None) -> list[str]:
    """Scan every input in order (files, then journal directories) through one
    Correlator; returns the problems (unreadable inputs), each "INPUT: why". `year` is
    that of classic syslog timestamps (None: from each file's mtime). `parallel` may take
    a file over (returns True when it did)."""
    problems: list[str] = []
    correlator = Correlator()
    for path in files:
        try:
            if parallel is not None and parallel(path):
                continue
            scan_file(path, year, correlator, emit_for)
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
    for directory in journal_dirs:
        if not Path(directory).is_dir():
            problems.append(f"{directory}: not a directory")
            continue
        try:
            _scan_journal(correlator, emit_for(f"journal:{directory}"), directory=directory)
        except OSError as exc:
            problems.append(f"{directory}: {exc}")
    return problems

