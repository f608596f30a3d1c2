"""Readers that turn log text and journal entries into `contracts.LogRecord`s.

- `parse_syslog_line`: one line of /var/log/auth.log or /var/log/secure: classic BSD
  syslog ("Mon DD HH:MM:SS host prog[pid]: msg"), ISO 8601 timestamps (rsyslog's
  RSYSLOG_FileFormat), RFC 5424 ("<PRI>1 TS HOST APP PROCID MSGID SD MSG"), with or without
  a host name, a "[pid]", a facility ("auth.info") or a colon after the program.
- `record_from_journal`: one journal entry (a `systemd.journal.Reader` dict or the fields
  of an export-format entry).
- `read_export`: the journal export format (systemd's JOURNAL_EXPORT_FORMATS), streamed.

Only sshd's lines are returned (programs in SSHD_PROGRAMS); anything else is skipped, not
an error. Nothing here reads the clock: a classic syslog line has no year, so the caller
passes one.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
import struct
import time as _time
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from sshguardd.contracts import LogRecord

__all__ = [
    "MONTHS",
    "SSHD_PROGRAMS",
    "classic_minute",
    "is_sshd_entry",
    "iso_seconds",
    "parse_syslog_line",
    "read_export",
    "record_from_journal",
]

# OpenSSH 9.8 moved per-connection logging to sshd-session, 10.0 added sshd-auth.
SSHD_PROGRAMS = frozenset({"sshd", "sshd-session", "sshd-auth"})

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# "Mon DD HH:MM:SS " (day space-padded or not)
_CLASSIC = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) +")
# "YYYY-MM-DDTHH:MM:SS[.frac][Z|+hh:mm] "
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)? +")
# After the timestamp: "host [facility.level ]prog[pid]: ", "prog[pid]: " (no host name),
# or metalog's "[prog] " / "[prog]: ".
_PROG = r"(?P<prog>[A-Za-z0-9_.-]+)(?:\[(?P<pid>\d+)\])?: ?"
_TAG_HOST = re.compile(r"(?P<host>[^\s\[\]]+) +(?:[a-z0-9]+\.[a-z]+ +)?" + _PROG)
_TAG_BARE = re.compile(_PROG + r"|\[(?P<prog2>[A-Za-z0-9_.-]+)\]:? ?")
# RFC 5424 after "<PRI>1 ": TS HOST APP PROCID MSGID SD
_RFC5424 = re.compile(r"<\d{1,3}>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
# Param values may hold unescaped "]" in the wild (fail2ban gh-2309), so only quotes end them.
_SD_ELEMENT = re.compile(r'\[[^\s\]="]+(?: [^\s\]="]+="(?:[^"\\]|\\.)*")*\]')


def _iso_time(m: re.Match[str], local: bool = True) -> float:
    year, mon, day, hh, mm, ss = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    frac = float(m.group(7)) if m.group(7) else 0.0
    tz = m.group(8)
    if tz is None:
        return _local(year, mon, day, hh, mm, ss) + frac
    offset = 0
    if tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return calendar.timegm((year, mon, day, hh, mm, ss, 0, 0, 0)) - offset + frac


_iso_cache: dict[str, float | None] = {}


def iso_seconds(stamp: str) -> float | None:
    """Epoch of "YYYY-MM-DDTHH:MM:SS[Z|+hh:mm]" (no fraction) exactly as parse_syslog_line
    computes an ISO 8601 timestamp (local time without a zone), or None where it rejects
    the line for its timestamp. Memoised (bounded): scan's chunk scanner calls it per line
    and adds the fraction itself."""
    try:
        return _iso_cache[stamp]
    except KeyError:
        pass
    m = _ISO.match(stamp + " ")
    result = None
    if m is not None and m.end() == len(stamp) + 1:
        try:
            result = _iso_time(m)
        except (OverflowError, ValueError):
            result = None
    if len(_iso_cache) >= 4096:
        _iso_cache.clear()
    _iso_cache[stamp] = result
    return result


def _local(year: int, mon: int, day: int, hh: int, mm: int, ss: int) -> float:
    # Classic syslog and zone-less ISO timestamps are the logging host's local time.
    return _time.mktime((year, mon, day, hh, mm, ss, 0, 0, -1))


_minute_cache: dict[tuple[int, str], float | None] = {}


def classic_minute(year: int, stamp: str) -> float | None:
    """Epoch of 'Mmm dd hh:mm' in `year`, local time, memoised (bounded): one mktime per
    minute of log instead of one per line. DST changes fall on minute boundaries."""
    key = (year, stamp)
    try:
        return _minute_cache[key]
    except KeyError:
        pass
    mon = MONTHS.get(stamp[:3])
    try:
        day, hh, mm = int(stamp[4:6]), int(stamp[7:9]), int(stamp[10:12])
        value = (_local(year, mon, day, hh, mm, 0)
                 if mon is not None and 1 <= day <= 31 and hh < 24 and mm < 60 else None)
    except (ValueError, OverflowError):
        value = None
    if len(_minute_cache) > 100_000:
        _minute_cache.clear()
    _minute_cache[key] = value
    return value


def parse_syslog_line(line: str, year: int | None = None) -> LogRecord | None:
    """One syslog line -> LogRecord for sshd's lines, None for anyone else's or garbage.

    year: for classic timestamps, which carry none (required for a time; without it the
    record's time is None). position is left for the caller (it knows the file and line).
    """
    line = line.rstrip("\r\n")
    # Fast path for the common "Mmm dd hh:mm:ss host prog[pid]: msg" (no regex).
    if len(line) > 20 and line[15] == " " and line[3] == " " and line[9] == ":" and line[12] == ":":
        sp = line.find(" ", 16)
        if sp > 16:
            machine = line[16:sp]
            end = line.find(": ", sp)
            if end > sp and "[" not in machine and ":" not in machine:
                tag = line[sp + 1:end]
                b = tag.find("[")
                prog = tag[:b] if b >= 0 else tag
                if " " not in tag and "/" not in prog:
                    if prog not in SSHD_PROGRAMS:
                        return None
                    pid = tag[b + 1:-1] if b >= 0 and tag[-1] == "]" else ""
                    if (b < 0 or (pid.isdigit() and pid.isascii())) and line[13:15].isdigit() \
                            and line[13:15].isascii():
                        when: float | None = None
                        if year is not None:
                            base = classic_minute(year, line[:12])
                            when = base + int(line[13:15]) if base is not None else None
                        return LogRecord(line[end + 2:], when, int(pid) if pid else None,
                                         machine)
    if line.startswith("<"):
        return _rfc5424(line)
    when = None
    m = _CLASSIC.match(line)
    if m:
        mon = MONTHS.get(m.group(1))
        day = int(m.group(2))
        if mon is None or not 1 <= day <= 31:
            return None
        if year is not None:
            try:
                when = _local(year, mon, day, int(m.group(3)), int(m.group(4)), int(m.group(5)))
            except (OverflowError, ValueError):
                when = None
    else:
        m = _ISO.match(line)
        if not m:
            return None
        try:
            when = _iso_time(m)
        except (OverflowError, ValueError):
            return None
    pos = m.end()
    host: str | None = None
    t = _TAG_HOST.match(line, pos)
    if t and t.group("prog") in SSHD_PROGRAMS:
        host = t.group("host")
        prog, pid = t.group("prog"), t.group("pid")
    else:
        t = _TAG_BARE.match(line, pos)
        if not t:
            return None
        prog, pid = t.group("prog") or t.group("prog2"), t.group("pid")
        if prog not in SSHD_PROGRAMS:
            return None
    return LogRecord(message=line[t.end():], time=when, pid=int(pid) if pid else None,
                     host=host)


def _rfc5424(line: str) -> LogRecord | None:
    m = _RFC5424.match(line)
    if not m:
        return None
    ts, host, app, procid, _msgid = m.groups()
    if app not in SSHD_PROGRAMS:
        return None
    pos = m.end()
    if line.startswith("- ", pos) or line[pos:] == "-":
        pos += 2
    else:
        while True:  # structured data: one or more [id k="v"...] elements
            sd = _SD_ELEMENT.match(line, pos)
            if not sd:
                break
            pos = sd.end()
        if line.startswith(" ", pos):
            pos += 1
    msg = line[pos:]
    if msg.startswith("\ufeff"):  # RFC 5424 BOM before a UTF-8 MSG
        msg = msg[1:]
    when = None
    if ts != "-":
        tm = _ISO.match(ts + " ")
        if tm:
            try:
                when = _iso_time(tm)
            except (OverflowError, ValueError):
                when = None
    pid = int(procid) if procid.isdigit() else None
    return LogRecord(message=msg, time=when, pid=pid, host=None if host == "-" else host)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def record_from_journal(fields: Mapping[str, Any]) -> LogRecord | None:
    """A journal entry -> LogRecord (None without a MESSAGE).

    Accepts systemd.journal.Reader dicts (converted values: __REALTIME_TIMESTAMP a
    datetime, _PID an int) and raw fields (strings or bytes: microseconds, decimal pid).
    No filtering here: the journal follower matches trusted fields (_SYSTEMD_UNIT, _COMM);
    `is_sshd_entry` is the looser test used for offline files.
    """
    message = fields.get("MESSAGE")
    if message is None:
        return None
    msg = _text(message)
    when: float | None = None
    ts = fields.get("__REALTIME_TIMESTAMP")
    if isinstance(ts, _dt.datetime):
        # systemd.journal.Reader gives a naive local datetime; timestamp() reads it as such.
        when = ts.timestamp()
    elif ts is not None:
        try:
            when = int(_text(ts)) / 1e6
        except ValueError:
            when = None
    pid: int | None = None
    raw_pid = fields.get("_PID", fields.get("SYSLOG_PID"))
    if raw_pid is not None:
        try:
            pid = int(_text(raw_pid)) if not isinstance(raw_pid, int) else raw_pid
        except ValueError:
            pid = None
    host = fields.get("_HOSTNAME")
    cursor = fields.get("__CURSOR")
    return LogRecord(message=msg, time=when, pid=pid,
                     host=_text(host) if host is not None else None,
                     position=_text(cursor) if cursor is not None else None)


def is_sshd_entry(fields: Mapping[str, Any], units: frozenset[str] | set[str] = frozenset(
        {"ssh.service", "sshd.service"})) -> bool:
    """Whether an entry is sshd's, by _SYSTEMD_UNIT, _COMM or SYSLOG_IDENTIFIER.

    Offline analysis accepts SYSLOG_IDENTIFIER as syslog files do; the daemon's follower
    must not (any local user can write `logger -t sshd`)."""
    unit = fields.get("_SYSTEMD_UNIT")
    if unit is not None and _text(unit) in units:
        return True
    for name in ("_COMM", "SYSLOG_IDENTIFIER"):
        value = fields.get(name)
        if value is not None and _text(value) in SSHD_PROGRAMS:
            return True
    return False


_MAX_FIELD = 1 << 20  # a binary field larger than this is corrupt input, not a log entry


def read_export(stream: BinaryIO) -> Iterator[tuple[int, dict[str, bytes]]]:
    """Entries of a journal export-format stream as (entry number from 1, fields).

    Text fields are "NAME=value\\n"; binary ones "NAME\\n" + little-endian 64-bit size +
    data + "\\n"; a blank line ends an entry. Malformed input raises ValueError naming
    the entry."""
    fields: dict[str, bytes] = {}
    number = 1
    while True:
        line = stream.readline()
        if not line:
            if fields:
                yield number, fields
            return
        if line == b"\n":
            if fields:
                yield number, fields
                number += 1
                fields = {}
            continue
        line = line[:-1] if line.endswith(b"\n") else line
        name, eq, value = line.partition(b"=")
        if eq:
            fields[name.decode("ascii", "replace")] = value
            continue
        size_raw = stream.read(8)
        if len(size_raw) != 8:
            raise ValueError(f"journal export entry {number}: truncated binary field {name!r}")
        (size,) = struct.unpack("<Q", size_raw)
        if size > _MAX_FIELD:
            raise ValueError(f"journal export entry {number}: field {name!r} of {size} bytes")
        data = stream.read(size)
        if len(data) != size or stream.read(1) != b"\n":
            raise ValueError(f"journal export entry {number}: truncated binary field {name!r}")
        fields[name.decode("ascii", "replace")] = data
