"""`sshguardd scan`: find failed logins in sshd logs offline (the role of fail2ban-regex).

    sshguardd scan FILE... [-] [--journal-dir DIR] [--summary] [--config PATH] [--json]

Inputs, any mix: syslog files (/var/log/auth.log, /var/log/secure; classic, ISO 8601 or
RFC 5424 timestamps, sshd / sshd-session lines, other programs' lines skipped), journal
export format (`journalctl -o export`, detected from its content), journal files
(`*.journal`), `-` for standard input, and journal directories (`--journal-dir`).

Output: one JSON object per detected failure on stdout, in input order:
    {"time": ISO-8601 or null, "host": ..., "user": ... or null, "kind": ...,
     "line": N, "file": ...}
`line` is the 1-based line number in a text file or stdin; for journal export input it is
the 1-based number of the entry in that stream, and for journal files and directories
the 1-based position of the entry in the journal's time order (`cursor` is added then).
Successful logins are not printed, but they are fed to the ban policy (admin protection).

`--summary` prints, instead, per-address failure counts by kind and which addresses the
configured ban policy would have banned while reading these logs (a table, or one JSON
object with --json). Everything is streamed: memory is bounded by the number of distinct
addresses (and the correlator's bounded table), not by the size of the logs.

Exit status: 0, or 66 (EX_NOINPUT) when an input could not be read (the others are still
scanned and reported), 2 for usage errors, 78 for a bad --config with --summary.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from sshguardd import cli, config
from sshguardd.detect.classify import (
    CORRELATED_WORDS,
    ENDING_WORDS,
    ENDINGS,
    FAMILIES,
    MAX_MESSAGE,
    Correlator,
    Raw,
    parse_host,
    strip_prefixes,
)
from sshguardd.detect.classify import _MISS
from sshguardd.detect.classify import _memo as _host_memo  # parse_host's memo, read inline

from sshguardd.contracts import Event, Kind, LogRecord
from sshguardd.detect.logformats import (
    _MONTHS,
    SSHD_PROGRAMS,
    _classic_minute,
    is_sshd_entry,
    parse_syslog_line,
    read_export,
    record_from_journal,
)

log = logging.getLogger(__name__)

_JOURNAL_MAGIC = b"LPKSHHRH"
EX_NOINPUT = 66  # sysexits.h: an input file did not exist or was not readable
_UTC = _dt.timezone.utc

# emit(raw verdict (kind, host, user, port), time, pid, machine, message, line, cursor)
Emit = Callable[[Raw, "float | None", "int | None", "str | None", str, int, "str | None"], None]


def register(sub) -> None:
    p = sub.add_parser(
        "scan", help="find failed sshd logins in log files or journals (offline)",
        description="Classify sshd log lines and print one JSON object per failure.")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="syslog file, journal export file, *.journal file, or - for stdin")
    p.add_argument("--journal-dir", action="append", default=[], metavar="DIR",
                   help="read a journal directory (repeatable)")
    p.add_argument("--summary", action="store_true",
                   help="print per-address counts and the bans the policy would make")
    p.add_argument("--year", type=int, default=None,
                   help="year of classic syslog timestamps (default: from the file's mtime)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="scan large syslog files with N processes (default 1; 0 = one per CPU)")
    cli.add_config_arg(p)
    cli.add_json_arg(p)
    p.set_defaults(func=run)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _UTC).isoformat()


class _Years:
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
                         for m, n in _MONTHS.items()}


# "Mmm dd hh:mm:ss host sshd[pid]: ": the common classic line, matched in one C call.
_FAST_PREFIX = re.compile(
    r"[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] ([^ \[\]:]+) "
    r"(?:sshd|sshd-session|sshd-auth)\[([0-9]{1,10})\]: (.*)", re.S)


_LONG_LINE = 64 << 10  # far beyond MAX_MESSAGE plus any syslog prefix


def _chunks(raw: BinaryIO, size: int = 1 << 20) -> Iterator[str]:
    """A binary stream as decoded text, one string per ~1 MiB read (cut after a newline,
    which never falls inside a UTF-8 sequence), each starting with "\\n" and holding whole
    lines separated by "\\n" (see _scan_text). Lines end at "\\n" only; undecodable bytes
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


def _text_chunks(text: str) -> list[str]:
    """Already-decoded text as _chunks gives it."""
    if text.endswith("\n"):
        text = text[:-1]
    return ["\n" + text] if text else []


def _lines_as_chunks(chunks: Iterable[str]) -> Iterator[list[str]]:
    """The lines of _chunks' texts (for _scan_lines, the reference path)."""
    for text in chunks:
        yield text[1:].split("\n")


# The chunk scanner. One regex walks a whole chunk ("\n" + lines joined by "\n") with
# finditer, so that the Python loop runs once per line that matters, not once per line:
#  1. A possessive loop consumes, in C, the lines that cannot give a failure: classic sshd
#     lines from PAM or whose message starts with no word any family or the correlator
#     looks at, and classic lines of other programs. Each test here is a strict subset of
#     the test _scan_lines applies, so a line skipped here is one it skips too.
#  2. The next line is then either a classic sshd line, whose prefix is split into groups
#     and whose message is, for the commonest sshd wordings, parsed by the regex (HOT
#     groups; each pattern is narrower than its family parser, which gives the same
#     verdict for every message the pattern accepts, see the comments at each), or any
#     other line (group OTHER), handled per line like _scan_lines does.
# tests/test_scan_fastpath.py checks that this and _scan_lines give identical output.
_U = r"[^ \n]{0,1024}"  # a user name without spaces (others take the general path)
_A = r"[^ \n]{1,256}"  # an address token (validated by parse_host)
_P = r"[0-9]{1,5}"
_SSHD = r"(?:sshd|sshd-session|sshd-auth)"
_STAMP = r"[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
# _scan_lines looks at a classic sshd message only when it starts with a prefix
# strip_prefixes removes (first letters e f k [ P) or when its first word is a family's or
# the correlator's, so a message whose first letter is none of these is skipped (PAM's
# lines, a third of a busy log, are skipped by their own prefix).
_LOOKED_AT = "[" + re.escape("".join(sorted(
    set("efk[P") | {w[0] for w in set(FAMILIES) | CORRELATED_WORDS}))) + "]"  # first letters
# A classic sshd message _scan_lines skips, with its newline.
_SKIP_MSG = r"(?:pam_|(?!" + _LOOKED_AT + r"))[^\n]*\n"
# Another program's classic line: "Mmm dd hh:mm:ss HOST TAG: " with TAG's program (before
# any "[") not sshd's, exactly _scan_lines' test (line[9], [12], [15], etc.), with its newline.
_OTHER_SKIP = (r"(?=[^\n]{21})[^\n]{9}:[^\n]{2}:[^\n]{2} [^ \[\n]+ (?!" + _SSHD
               + r"(?:\[|: ))[^ /\n]*: [^\n]*\n")
_HOT = (
    # _auth_log: rest has no spaces but sshd's, so its last " from " is before the address;
    # the user after an optional "invalid user "/"illegal user ".
    r"(?P<fp>Failed password for (?:invalid user |illegal user )?(" + _U + r") from (" + _A
    + r") port (" + _P + r") ssh2)$"
    # _closed: the last " port " and last space are the ones before P and the address.
    r"|(?P<cl>(?:Connection closed by|Connection reset by|Disconnected from) "
    r"(?:(?:invalid |authenticating )?user (" + _U + r") )?(" + _A + r") port (" + _P
    + r") \[preauth\])$"
    # _invalid_user: no spaces in the user, so the last " from " is sshd's.
    r"|(?P<iu>Invalid user (" + _U + r") from (" + _A + r") port (" + _P + r"))$"
    # _auth_log with EXTRA: the only ": " preceded by " ssh2" is sshd's (no spaces in the
    # user, the address does not end with ":"), the key type is no "from" and the
    # fingerprint no "ssh2" or "[preauth]", so the end-anchored form gives no candidate
    # and the one candidate is this address.
    r"|(?P<ac>Accepted publickey for (" + _U + r") from ([^ \n]{0,255}[^ \n:]) port (" + _P
    + r") ssh2: (?:RSA|DSA|ECDSA|ED25519|ECDSA-SK|ED25519-SK) SHA256:[A-Za-z0-9+/=]{1,100})$"
    # _received: the first ": " is after ":11" (no spaces in the address), the client's
    # text ends with " [preauth]", code 11 is neither 3 nor 14.
    r"|(?P<rd>Received disconnect from (" + _A + r") port (" + _P
    + r"):11: [^\n]{0,1024} \[preauth\])$"
    # Closing lines for which every family says nothing (ends of normal sessions, the
    # close after a kex error): only the correlator's bookkeeping.
    r"|(?P<en>Disconnected from user " + _U + " " + _A + " port " + _P
    + r"|Received disconnect from " + _A + " port " + _P + r":11: disconnected by user"
    r"|Connection closed by " + _A + " port " + _P + r")$"
    # Address-less kex errors for the correlator, after strip_prefixes' "error: " (the
    # message ends with sshd's quote, so rstrip changes nothing).
    r"|error: (?P<kx>kex_exchange_identification: (?:Connection closed by remote host"
    r'|client sent invalid protocol identifier "[^\n]{0,1024}"))$'
    # _maximum (after "error: "): _tail takes off " [preauth]" and " ssh2", the last
    # " port " is before P and the last space before the address; the user follows an
    # optional "invalid user ".
    r"|error: (?P<mx>maximum authentication attempts exceeded for (?:invalid user )?(" + _U
    + r") from (" + _A + r") port (" + _P + r") ssh2 \[preauth\])$"
    # _disconnecting, too many failures: _remote_id reads "[<kind> user U ]ADDR port P".
    r"|(?P<dc>Disconnecting (?:(?:invalid |authenticating )?user (" + _U + r") )?(" + _A
    + r") port (" + _P + r"): Too many authentication failures \[preauth\])$"
    # _unable and _banner: _left_addr_port cuts at the first ": " (after P: no spaces in
    # the address) and splits "ADDR port P" at its only " port ".
    r"|(?P<un>Unable to negotiate with (" + _A + r") port (" + _P
    + r"): no matching [^\n]{0,1024}\[preauth\])$"
    r"|(?P<bn>banner exchange: Connection from (" + _A + r") port (" + _P
    + r"): [^\n]{0,1024}\S)$")
_CHUNK = re.compile(
    # Each classic sshd line's prefix is parsed once: a possessive loop takes the prefix,
    # then either a skipped message (and any other programs' lines after it) or nothing,
    # which ends the loop at an interesting message with the groups holding its prefix.
    # The lookbehinds make sure that a prefix starts a line (a message that looks like a
    # syslog line is not parsed again) and that the loop did stop at a message, not at
    # the start of a line it could not skip (that one is then taken as OTHER).
    r"\n(?:" + _OTHER_SKIP + r")*+"
    r"(?:(?:(?<=\n)(" + _STAMP + r") ([^ \[\]:\n]+) " + _SSHD + r"\[([0-9]{1,10})\]: "
    r"(?:" + _SKIP_MSG + r"(?:" + _OTHER_SKIP + r")*+|))*+"
    r"(?<=\]: )(?:" + _HOT + r"|(?P<msg>[^\n]*))|(?P<other>[^\n]*))", re.M)
_G = _CHUNK.groupindex
_FP, _CL, _IU, _AC, _RD, _EN, _KX, _MX, _DC, _UN, _BN, _MSG, _OTHER = (
    _G["fp"], _G["cl"], _G["iu"], _G["ac"], _G["rd"], _G["en"], _G["kx"], _G["mx"], _G["dc"],
    _G["un"], _G["bn"], _G["msg"], _G["other"])
# Per HOT group number: the failure kind, its JSON name, and whether the line ends the
# connection (its message starts with one of classify.ENDINGS).
_FOUR_FIELDS = frozenset({_FP, _CL, _IU, _AC, _MX, _DC})  # message, user, address, port
_THREE_FIELDS = frozenset({_RD, _UN, _BN})  # message, address, port
_HOT_KIND: list[Any] = [None] * (_CHUNK.groups + 1)
_HOT_ENDING = [False] * (_CHUNK.groups + 1)
for _group, _kind, _ending in ((_FP, Kind.BAD_PASSWORD, False), (_IU, Kind.INVALID_USER, False),
                               (_CL, Kind.PREAUTH_DISCONNECT, True),
                               (_RD, Kind.PREAUTH_DISCONNECT, True), (_AC, Kind.ACCEPTED, False),
                               (_MX, Kind.MAX_AUTH_TRIES, False), (_DC, Kind.MAX_AUTH_TRIES, False),
                               (_UN, Kind.KEX_FAILURE, False), (_BN, Kind.PROTOCOL_ERROR, False)):
    _HOT_KIND[_group], _HOT_ENDING[_group] = _kind, _ending
_HOT_KIND_NAME = [k.value if k is not None else None for k in _HOT_KIND]


def _scan_text(chunks: Iterable[str], name: str, years: _Years, correlator: Correlator,
               emit: Emit, first_line: int = 1) -> None:
    """Failures in syslog text given as chunks (see _chunks), each passed to emit() (or,
    for the printer, formatted right here: emit.direct).

    Lines are found by _CHUNK; the commonest wordings are parsed by it, the other classic
    sshd lines go through a fused loop (first-word dispatch, then the family parser,
    building nothing for lines without a verdict), and any other shape through
    parse_syslog_line. Gives exactly what _scan_lines gives (tests/test_scan_fastpath.py)."""
    by_month, default = years.by_month, years.year
    families, correlated = FAMILIES, CORRELATED_WORDS
    correlate, feed, minute = correlator.correlate, correlator.feed_raw, _classic_minute
    strip, limit = strip_prefixes, MAX_MESSAGE
    conns, max_conns, endings = correlator._conns, correlator.max_entries, ENDING_WORDS
    ending_prefixes, ttl = ENDINGS, correlator.ttl
    memo, miss, host_of = _host_memo, _MISS, parse_host
    EN, KX, OTHER = _EN, _KX, _OTHER
    four, three = _FOUR_FIELDS, _THREE_FIELDS
    kind_of, kind_name, ending_of = _HOT_KIND, _HOT_KIND_NAME, _HOT_ENDING
    accepted = Kind.ACCEPTED
    direct = getattr(emit, "direct", None)
    if direct is not None:
        append, fname, time_json, user_json, users = direct
    finditer = _CHUNK.finditer
    number = first_line - 1
    last_stamp, when, when_json = "", None, None
    chunk_done = getattr(emit, "chunk_done", None)
    for text in chunks:
        if chunk_done is not None:
            chunk_done()
        count = text.count
        pos = 0
        for m in finditer(text):
            end = m.end()
            number += count("\n", pos, end)
            pos = end
            alt = m.lastindex
            if alt in four:  # (message, user, address, port)
                stamp, machine, pid_text, user, token, port_text = m.group(
                    1, 2, 3, alt + 1, alt + 2, alt + 3)
            elif alt in three:  # (message, address, port)
                stamp, machine, pid_text, token, port_text = m.group(1, 2, 3, alt + 1, alt + 2)
                user = None
            elif alt == EN:
                # Correlator.correlate for a closing line without a verdict: with nothing
                # pending, the connection (if known) is simply forgotten.
                machine, pid_text = m.group(2, 3)
                key = (machine, int(pid_text))
                entry = conns.get(key)
                if entry is None:
                    continue
                if not entry[1]:
                    del conns[key]
                    continue
                stamp, msg = m.group(1, EN)
                if stamp != last_stamp:
                    last_stamp, when_json = stamp, None
                    base = minute(by_month.get(stamp[:3], default), stamp[:12])
                    when = base + int(stamp[13:15]) if base is not None else None
                for ev in correlate(msg, msg[:msg.find(" ")], None, key[1], machine, when):
                    emit(ev, when, key[1], machine, msg, number, None)
                continue
            elif alt == OTHER:
                line = m.group(OTHER)
                if len(line) > 20 and line[15] == " " and line[9] == ":" and line[12] == ":":
                    sp = line.find(" ", 16)
                    stop = line.find(": ", sp) if sp > 16 else -1
                    if stop > sp:
                        tag = line[sp + 1:stop]
                        if " " not in tag and "[" not in line[16:sp] and "/" not in tag \
                                and tag.partition("[")[0] not in SSHD_PROGRAMS:
                            continue  # another program's line
                record = parse_syslog_line(line, by_month.get(line[:3], default))
                if record is None:
                    continue
                for event in feed(record.message, record.pid, record.host, record.time):
                    emit(event, record.time, record.pid, record.host, record.message, number,
                         None)
                continue
            else:  # MSG or KX: the message only
                stamp, machine, pid_text, msg = m.group(1, 2, 3, alt)
                token = None
            if stamp != last_stamp:  # consecutive lines mostly share their second
                last_stamp, when_json = stamp, None
                base = minute(by_month.get(stamp[:3], default), stamp[:12])
                when = base + int(stamp[13:15]) if base is not None else None
            if token is not None:
                host = memo.get(token, miss)  # parse_host's memo, inlined
                if host is miss:
                    host = host_of(token)
                port = int(port_text)
                if host is not None and port <= 65535:
                    kind, ending = kind_of[alt], ending_of[alt]
                    pid = int(pid_text)
                    # Correlator.correlate's common case, inlined: a connection with nothing
                    # pending. Remember its address for its later address-less lines, and
                    # forget the connection when this line ends it.
                    key = (machine, pid)
                    entry = conns.get(key)
                    if entry is None or (entry[1] is None and (
                            when is None or entry[2] is None or when - entry[2] <= ttl)):
                        if ending:
                            if entry is not None:
                                del conns[key]
                        elif entry is None:
                            conns[key] = [host, None, when]
                            if len(conns) > max_conns:
                                conns.popitem(last=False)  # the oldest (an OrderedDict)
                        else:
                            entry[0] = host
                            entry[2] = when
                        if direct is None:
                            emit((kind, host, user, port), when, pid, machine, m.group(alt),
                                 number, None)
                        elif kind is not accepted:
                            # The printer's line (_Printer.emit_for), formatted here.
                            if when_json is None:
                                when_json = time_json(when)
                            juser = users.get(user)
                            if juser is None:
                                juser = user_json(user)
                            append(f'{{"time": {when_json}, "host": "{host}", "user": {juser}, '
                                   f'"kind": "{kind_name[alt]}", "line": {number}, '
                                   f'"file": {fname}}}\n')
                        continue
                    msg = m.group(alt)
                    for ev in correlate(msg, msg[:msg.find(" ")], (kind, host, user, port), pid,
                                        machine, when):
                        emit(ev, when, pid, machine, msg, number, None)
                    continue
                msg = m.group(alt)  # an address or port the pattern could not vouch for
            elif alt == KX:
                pid = int(pid_text)
                for ev in correlate(msg, "kex_exchange_identification:", None, pid, machine,
                                    when):
                    emit(ev, when, pid, machine, msg, number, None)
                continue
            # Any other classic sshd line: the fused per-message path.
            if msg[:4] == "pam_":
                continue
            # Length as Correlator.feed_raw measures it (parse_syslog_line drops
            # trailing CRs first), before strip_prefixes' rstrip.
            if len(msg) > limit and len(msg.rstrip("\r\n")) > limit:
                continue
            msg = msg.rstrip()
            if msg[:1] in "efk[P":
                msg = strip(msg)
            blank = msg.find(" ")
            first = msg[:blank] if blank > 0 else msg
            family = families.get(first)
            event = family(msg) if family is not None else None
            if event is None:
                if first not in correlated:
                    continue
                pid = int(pid_text)
                for ev in correlate(msg, first, None, pid, machine, when):
                    emit(ev, when, pid, machine, msg, number, None)
                continue
            pid = int(pid_text)
            key = (machine, pid)
            entry = conns.get(key)
            if entry is None or (entry[1] is None and (
                    when is None or entry[2] is None or when - entry[2] <= ttl)):
                if first in endings and msg.startswith(ending_prefixes):
                    if entry is not None:
                        del conns[key]
                elif entry is None:
                    conns[key] = [event[1], None, when]
                    if len(conns) > max_conns:
                        conns.popitem(last=False)  # the oldest (an OrderedDict)
                else:
                    entry[0] = event[1]
                    entry[2] = when
                emit(event, when, pid, machine, msg, number, None)
                continue
            for ev in correlate(msg, first, event, pid, machine, when):
                emit(ev, when, pid, machine, msg, number, None)


def _scan_lines(chunks: Iterable[list[str]], name: str, years: _Years, correlator: Correlator,
                emit: Emit, first_line: int = 1) -> None:
    """The reference path for syslog text given as lists of lines: each line split by
    _FAST_PREFIX or parse_syslog_line, then classified and correlated. _scan_text must
    give exactly the same output (tests/test_scan_fastpath.py checks it)."""
    by_month, default = years.by_month, years.year
    families, correlated, sshd = FAMILIES, CORRELATED_WORDS, SSHD_PROGRAMS
    correlate, feed, minute = correlator.correlate, correlator.feed_raw, _classic_minute
    strip, limit = strip_prefixes, MAX_MESSAGE
    number = first_line - 1
    prefix = _FAST_PREFIX.match
    chunk_done = getattr(emit, "chunk_done", None)
    for lines in chunks:
        if chunk_done is not None:
            chunk_done()
        for line in lines:
            number += 1
            m = prefix(line)
            if m is not None:
                machine, pid_text, msg = m.groups()
                if msg[:4] == "pam_":
                    continue  # PAM's lines (a third of a busy log) name no failure of their own
                # Length as Correlator.feed_raw measures it (parse_syslog_line drops
                # trailing CRs first), before strip_prefixes' rstrip.
                if len(msg) > limit and len(msg.rstrip("\r\n")) > limit:
                    continue
                msg = msg.rstrip()
                if msg[:1] in "efk[P":
                    msg = strip(msg)
                blank = msg.find(" ")
                first = msg[:blank] if blank > 0 else msg
                family = families.get(first)
                event = family(msg) if family is not None else None
                if event is None and first not in correlated:
                    continue
                base = minute(by_month.get(line[:3], default), line[:12])
                when = base + int(line[13:15]) if base is not None else None
                for ev in correlate(msg, first, event, int(pid_text), machine, when):
                    emit(ev, when, int(pid_text), machine, msg, number, None)
                continue
            if len(line) > 20 and line[15] == " " and line[9] == ":" and line[12] == ":":
                sp = line.find(" ", 16)
                end = line.find(": ", sp) if sp > 16 else -1
                if end > sp:
                    tag = line[sp + 1:end]
                    if " " not in tag and "[" not in line[16:sp] and "/" not in tag \
                            and tag.partition("[")[0] not in sshd:
                        continue  # another program's line
            record = parse_syslog_line(line, by_month.get(line[:3], default))
            if record is None:
                continue
            for event in feed(record.message, record.pid, record.host, record.time):
                emit(event, record.time, record.pid, record.host, record.message, number, None)


def _scan_record(record: LogRecord, correlator: Correlator, emit: Emit, number: int) -> None:
    for event in correlator.feed_raw(record.message, record.pid, record.host, record.time):
        emit(event, record.time, record.pid, record.host, record.message, number, record.position)


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


def _is_export(head: bytes) -> bool:
    """Journal export format starts with FIELD=value lines (__CURSOR= from journalctl)."""
    first = head.split(b"\n", 1)[0]
    name, eq, _ = first.partition(b"=")
    return bool(eq) and bool(name) and name.replace(b"_", b"").isalnum() and name.upper() == name


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


def _segments(path: str) -> list[tuple[int, int, int, int]]:
    """(warm-up start, start, end, first line number) for each segment of `path`."""
    return list(_iter_segments(path))


def _iter_segments(path: str) -> Iterator[tuple[int, int, int, int]]:
    """_segments, one at a time: the first can be scanned while the next are counted."""
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
    years = _Years(year, None)
    years.by_month = by_month
    correlator = Correlator()
    if warm_text:
        _scan_text(_text_chunks(warm_text), path, years, correlator, lambda *a: None)
    buffer = io.StringIO()
    printer = _Printer(buffer)
    _scan_text(_text_chunks(text), path, years, correlator, printer.emit_for(path), first_line)
    printer.flush()
    # Bytes: the parent writes them as they are (the output is ASCII: JSON escapes the
    # rest), with no decoding and encoding of tens of MB on its single thread.
    return buffer.getvalue().encode("ascii")


def _parallel_ok(path: str) -> bool:
    """Only large regular syslog text files are worth cutting into segments."""
    st = os.stat(path)
    if not os.path.isfile(path) or st.st_size < 2 * SEGMENT:
        return False
    with open(path, "rb") as f:
        head = f.read(256)
    return not head.startswith(_JOURNAL_MAGIC) and not _is_export(head)


def _scan_parallel(path: str, year: int | None, jobs: int, out: TextIO) -> None:
    import multiprocessing

    with open(path, "rb") as f:
        years = _Years(year, os.fstat(f.fileno()).st_mtime)
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
        pending: list[Any] = []
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


def _scan_file(path: str, year: int | None, correlator: Correlator,
               emit_for: Callable[[str], Emit]) -> None:
    if path == "-":
        raw = sys.stdin.buffer
        head = raw.peek(256)[:256] if hasattr(raw, "peek") else b""
        if _is_export(head):
            _scan_export(raw, correlator, emit_for("-"))
        else:
            _scan_text(_chunks(raw), "-", _Years(year, None), correlator, emit_for("-"))
        return
    with open(path, "rb") as f:
        head = f.read(256)
        f.seek(0)
        if head.startswith(_JOURNAL_MAGIC):
            f.close()
            _scan_journal(correlator, emit_for(path), files=[path])
        elif _is_export(head):
            _scan_export(f, correlator, emit_for(path))
        else:
            mtime = os.fstat(f.fileno()).st_mtime
            _scan_text(_chunks(f), path, _Years(year, mtime), correlator, emit_for(path))


def _scan_all(args, emit_for: Callable[[str], Emit],
              parallel: Callable[[str], bool] | None = None) -> list[str]:
    """Scan every input in order; returns the problems (unreadable inputs). `parallel`
    may take a file over (returns True when it did)."""
    problems: list[str] = []
    correlator = Correlator()
    for path in args.files:
        try:
            if parallel is not None and parallel(path):
                continue
            _scan_file(path, args.year, correlator, emit_for)
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
    for directory in args.journal_dir:
        if not Path(directory).is_dir():
            problems.append(f"{directory}: not a directory")
            continue
        try:
            _scan_journal(correlator, emit_for(f"journal:{directory}"), directory=directory)
        except OSError as exc:
            problems.append(f"{directory}: {exc}")
    return problems


class _Printer:
    """One JSON object per failure, formatted by hand for speed: the host is an IP literal
    or a name checked against DNS syntax and kinds are fixed words, so only user names,
    file names and cursors need JSON escaping (memoised, bounded). Output is written once
    per input chunk (emit.chunk_done) and by flush(), which the caller calls at the end."""

    def __init__(self, out: TextIO):
        self.out = out
        self.pending: list[str] = []

    def flush(self) -> None:
        if self.pending:
            self.out.write("".join(self.pending))
            self.pending.clear()

    def emit_for(self, file: str) -> Emit:
        fname = json.dumps(file)
        pending, flush = self.pending, self.flush
        append = pending.append
        dumps, accepted = json.dumps, Kind.ACCEPTED
        kinds = {k: k.value for k in Kind}
        times: dict[float | None, str] = {None: "null"}
        users: dict[str | None, str] = {None: "null"}

        def emit(event: Raw, t: float | None, pid: int | None, machine: str | None,
                 message: str, line: int, cursor: str | None) -> None:
            kind = event[0]
            if kind is accepted:
                return
            when = times.get(t)
            if when is None:
                if len(times) > 4096:
                    times.clear()
                    times[None] = "null"
                when = times[t] = '"' + _dt.datetime.fromtimestamp(t, _UTC).isoformat() + '"'
            user = event[2]
            juser = users.get(user)
            if juser is None:
                if len(users) > 4096:
                    users.clear()
                    users[None] = "null"
                juser = users[user] = dumps(user)
            if cursor is None:
                append(f'{{"time": {when}, "host": "{event[1]}", "user": {juser}, '
                       f'"kind": "{kinds[kind]}", "line": {line}, "file": {fname}}}\n')
            else:
                append(f'{{"time": {when}, "host": "{event[1]}", "user": {juser}, '
                       f'"kind": "{kinds[kind]}", "line": {line}, "file": {fname}, '
                       f'"cursor": {dumps(cursor)}}}\n')

        def time_json(t: float | None) -> str:
            when = times.get(t)
            if when is None:
                if len(times) > 4096:
                    times.clear()
                    times[None] = "null"
                when = times[t] = '"' + _dt.datetime.fromtimestamp(t, _UTC).isoformat() + '"'
            return when

        def user_json(user: str | None) -> str:
            juser = users.get(user)
            if juser is None:
                if len(users) > 4096:
                    users.clear()
                    users[None] = "null"
                juser = users[user] = dumps(user)
            return juser

        emit.chunk_done = flush  # type: ignore[attr-defined]  # _scan_text flushes per chunk
        # For _scan_text's hot path, which formats the same line itself (no cursor there).
        emit.direct = (append, fname, time_json, user_json, users)  # type: ignore[attr-defined]
        return emit


@dataclass
class _Offender:
    counts: dict[str, int] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None
    bans: list[dict[str, Any]] = field(default_factory=list)


class _Summary:
    """Per-address counts, and the bans the configured policy (policy.BanPolicy, when
    present) makes while observing every event in log order with the entries' own time."""

    def __init__(self, cfg: config.Config):
        self.cfg = cfg
        try:
            from sshguardd.bans.policy import BanPolicy
        except ImportError:  # the ban policy module is not part of this build
            BanPolicy = None  # noqa: N806
        self.policy = BanPolicy(cfg.ban) if BanPolicy is not None and cfg.ban.enabled else None
        self.offenders: dict[str, _Offender] = {}
        self.accepted: dict[str, int] = {}
        self.failures = 0

    def emit_for(self, file: str) -> Emit:
        return self.emit

    def emit(self, raw: Raw, t: float | None, pid: int | None, machine: str | None,
             message: str, line: int, cursor: str | None) -> None:
        event = Event(*raw)
        if event.kind is Kind.ACCEPTED:
            self.accepted[event.host] = self.accepted.get(event.host, 0) + 1
        else:
            self.failures += 1
            o = self.offenders.get(event.host)
            if o is None:
                o = self.offenders[event.host] = _Offender()
            o.counts[event.kind.value] = o.counts.get(event.kind.value, 0) + 1
            if t is not None:
                o.first = t if o.first is None else min(o.first, t)
                o.last = t if o.last is None else max(o.last, t)
        if self.policy is not None and t is not None:
            ban = self.policy.observe(LogRecord(message, t, pid, machine, cursor), event)
            if ban is not None:
                o = self.offenders.get(event.host)
                if o is None:
                    o = self.offenders[event.host] = _Offender()
                o.bans.append({"network": ban.network, "at": _iso(t),
                               "duration": ban.duration, "strikes": ban.strikes})

    def write(self, out: TextIO, as_json: bool) -> None:
        ranked = sorted(self.offenders.items(),
                        key=lambda kv: (-sum(kv[1].counts.values()), kv[0]))
        if as_json:
            out.write(json.dumps({
                "failures": self.failures,
                "policy": self.policy is not None,
                "addresses": [{"host": host, "failures": sum(o.counts.values()),
                               "kinds": o.counts, "first": _iso(o.first), "last": _iso(o.last),
                               "bans": o.bans, "logged_in": self.accepted.get(host, 0)}
                              for host, o in ranked],
            }) + "\n")
            return
        cfg = self.cfg
        out.write(f"{self.failures} failures from {len(self.offenders)} addresses\n")
        if self.policy is None:
            why = "ban.enabled is false" if not cfg.ban.enabled else "no ban policy module"
            out.write(f"(ban simulation unavailable: {why})\n")
        width = max([len(h) for h, _ in ranked] + [7])
        out.write(f"{'ADDRESS':<{width}}  {'FAILS':>6}  {'BANS':>4}  KINDS\n")
        for host, o in ranked:
            kinds = ", ".join(f"{k}={n}" for k, n in sorted(o.counts.items(), key=lambda kv: -kv[1]))
            out.write(f"{host:<{width}}  {sum(o.counts.values()):>6}  {len(o.bans):>4}  {kinds}\n")
        banned = sum(1 for _, o in ranked if o.bans)
        out.write(f"\n{banned} addresses would be banned"
                  f" (max_retry={cfg.ban.max_retry:g} within find_time={cfg.ban.find_time:g}s)\n")


def run(args) -> int:
    if not args.files and not args.journal_dir:
        print("sshguardd scan: give FILE..., - for stdin, or --journal-dir DIR", file=sys.stderr)
        return cli.EX_USAGE
    out = sys.stdout
    if args.summary:
        summary = _Summary(config.load(args.config))
        problems = _scan_all(args, summary.emit_for)
        summary.write(out, args.json)
    else:
        jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)

        printer = _Printer(out)

        def parallel(path: str) -> bool:
            if jobs > 1 and path != "-" and _parallel_ok(path):
                printer.flush()
                _scan_parallel(path, args.year, jobs, out)
                return True
            return False

        try:
            problems = _scan_all(args, printer.emit_for, parallel)
        finally:
            printer.flush()
    out.flush()
    for problem in problems:
        print(f"sshguardd scan: {problem}", file=sys.stderr)
    return EX_NOINPUT if problems else cli.EX_OK
