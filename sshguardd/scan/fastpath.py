"""The chunk scanner: syslog text -> failures, as fast as pure Python gets.

It gives exactly what the per-line reference path gives (each line split by its syslog
prefix, then detect's Correlator.feed_raw): tests/scan_reference.py holds that path and
tests/test_scan_fastpath.py proves the two equal on the benchmark logs and near misses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from sshguardd.contracts import Kind
from sshguardd.detect import (
    CORRELATED_WORDS,
    ENDING_WORDS,
    ENDINGS,
    MAX_MESSAGE,
    PARSERS,
    Correlator,
    Raw,
    parse_host,
    split_prefixes,
)
from sshguardd.detect.logformats import (
    SSHD_PROGRAMS,
    classic_minute,
    iso_seconds,
    parse_syslog_line,
)
from sshguardd.scan.textio import Years, utc_second

__all__ = ["CHUNK", "Emit", "scan_text"]

# emit(raw verdict, time, pid, logging machine, line number, journal cursor or None). The
# raw verdict is (kind, host, user, port) and for a PAM relay a fifth item True, so that
# Event(*raw) is the Event the daemon's correlator would give.
Emit = Callable[[Raw, "float | None", "int | None", "str | None", int, "str | None"], None]

# The chunk scanner. One regex walks a whole chunk ("\n" + lines joined by "\n") with
# finditer, so that the Python loop runs once per line that matters, not once per line:
#  1. A possessive loop consumes, in C, the lines that cannot give a failure: classic sshd
#     lines from PAM or whose message starts with no word any family or the correlator
#     looks at, and classic lines of other programs. Each test here is a strict subset of
#     the test the per-line reference path applies, so a line skipped here is one it skips too.
#  2. The next line is then either a classic sshd line, whose prefix is split into groups
#     and whose message is, for the commonest sshd wordings, parsed by the regex (HOT
#     groups; each pattern is narrower than its family parser, which gives the same
#     verdict for every message the pattern accepts, see the comments at each), or any
#     other line (group OTHER), handled per line like the reference path does.
# tests/test_scan_fastpath.py checks that this and the per-line reference path
# (tests/scan_reference.py) give identical output.
_U = r"[^ \n]{0,1024}"  # a user name without spaces (others take the general path)
_A = r"[^ \n]{1,256}"  # an address token (validated by parse_host)
_P = r"[0-9]{1,5}"
_SSHD = r"(?:sshd|sshd-session|sshd-auth)"
_STAMP = r"[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
# rsyslog's RSYSLOG_FileFormat (Debian 12+): "2025-06-10T08:00:00.123456+00:00". Narrower
# than logformats._ISO (only "T", ASCII digits, one space after it), which reads the rest.
_ISO_STAMP = (r"[0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
              r"(?:\.[0-9]+)?(?:Z|[+-][0-9][0-9]:?[0-9][0-9])?")
# The reference path looks at a classic sshd message only when it starts with a prefix
# strip_prefixes removes (first letters e f k [ P) or when its first word is a family's or
# the correlator's, so a message whose first letter is none of these is skipped (PAM's
# lines, a third of a busy log, are skipped by their own prefix).
_LOOKED_AT = "[" + re.escape("".join(sorted(
    set("efk[P") | {w[0] for w in set(PARSERS) | CORRELATED_WORDS}))) + "]"  # first letters
# A classic sshd message the reference path skips, with its newline.
_SKIP_MSG = r"(?:pam_|(?!" + _LOOKED_AT + r"))[^\n]*\n"
# Another program's classic line: "Mmm dd hh:mm:ss HOST TAG: " with TAG's program (before
# any "[") not sshd's, exactly the reference path's test (line[9], [12], [15], etc.), with
# its newline.
_OTHER_SKIP = (r"(?=[^\n]{21})[^\n]{9}:[^\n]{2}:[^\n]{2} [^ \[\n]+ (?!" + _SSHD
               + r"(?:\[|: ))[^ /\n]*: [^\n]*\n"
               # Another program's ISO line: "STAMP HOST TAG[...": HOST without white space,
               # brackets or colons and TAG without white space up to its "[" or ":" (so no
               # facility field), TAG's program not sshd's. parse_syslog_line returns None
               # for such a line: _TAG_HOST takes HOST and TAG's program, _TAG_BARE fails
               # on HOST.
               r"|" + _ISO_STAMP + r" [^\s\[\]:]+ (?!" + _SSHD
               + r"[\[:])[^\s\[:]*[\[:][^\n]*\n")
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
CHUNK = re.compile(
    # Each classic sshd line's prefix is parsed once: a possessive loop takes the prefix,
    # then either a skipped message (and any other programs' lines after it) or nothing,
    # which ends the loop at an interesting message with the groups holding its prefix.
    # The lookbehinds make sure that a prefix starts a line (a message that looks like a
    # syslog line is not parsed again) and that the loop did stop at a message, not at
    # the start of a line it could not skip (that one is then taken as OTHER).
    r"\n(?:" + _OTHER_SKIP + r")*+"
    # An ISO stamp's host must have no white space at all (_TAG_HOST's [^\s\[\]]), a
    # classic one no space (the classic fast path splits at the first space).
    r"(?:(?:(?<=\n)(" + _STAMP + r"|" + _ISO_STAMP + r"(?= [^\s\[\]:]+ )) ([^ \[\]:\n]+) "
    + _SSHD + r"\[([0-9]{1,10})\]: "
    r"(?:" + _SKIP_MSG + r"(?:" + _OTHER_SKIP + r")*+|))*+"
    r"(?<=\]: )(?:" + _HOT + r"|(?P<msg>[^\n]*))|(?P<other>[^\n]*))", re.M)
_G = CHUNK.groupindex
_FP, _CL, _IU, _AC, _RD, _EN, _KX, _MX, _DC, _UN, _BN, _MSG, _OTHER = (
    _G["fp"], _G["cl"], _G["iu"], _G["ac"], _G["rd"], _G["en"], _G["kx"], _G["mx"], _G["dc"],
    _G["un"], _G["bn"], _G["msg"], _G["other"])
# Per HOT group number: the failure kind, its JSON name, and whether the line ends the
# connection (its message starts with one of classify.ENDINGS).
_FOUR_FIELDS = frozenset({_FP, _CL, _IU, _AC, _MX, _DC})  # message, user, address, port
_THREE_FIELDS = frozenset({_RD, _UN, _BN})  # message, address, port
_HOT_KIND: list[Any] = [None] * (CHUNK.groups + 1)
_HOT_ENDING = [False] * (CHUNK.groups + 1)
for _group, _kind, _ending in ((_FP, Kind.BAD_PASSWORD, False), (_IU, Kind.INVALID_USER, False),
                               (_CL, Kind.PREAUTH_DISCONNECT, True),
                               (_RD, Kind.PREAUTH_DISCONNECT, True), (_AC, Kind.ACCEPTED, False),
                               (_MX, Kind.MAX_AUTH_TRIES, False), (_DC, Kind.MAX_AUTH_TRIES, False),
                               (_UN, Kind.KEX_FAILURE, False), (_BN, Kind.PROTOCOL_ERROR, False)):
    _HOT_KIND[_group], _HOT_ENDING[_group] = _kind, _ending
_HOT_KIND_NAME = [k.value if k is not None else None for k in _HOT_KIND]


_UTC_SECONDS: dict[str, tuple[float | None, str | None]] = {}


def _iso_when(stamp: str) -> tuple[float | None, str | None]:
    """(parse_syslog_line's time of a line with this _ISO_STAMP, or None where it rejects
    the line; the printer's JSON of that time, or None to let it format it). The whole
    second is memoised by logformats.iso_seconds, the fraction added here as logformats
    does (the seconds' value, then + the fraction).

    rsyslog's own format in UTC ("...:SS.ffffff+00:00") also gets its JSON here, from the
    text: for a whole second B with 0 <= B < 2**32 and t = B + float(".ffffff"), t's
    rounding error is at most ulp(B)/2 <= 2.4e-7 s, so datetime (modf, microseconds
    rounded half to even) finds B and exactly ffffff, and prints what is built here
    (tests/test_scan_fastpath.py compares the printed output with the reference path's)."""
    if len(stamp) == 32 and stamp[19] == "." and stamp[26:] == "+00:00":
        second = _UTC_SECONDS.get(stamp[:19])
        if second is None:
            base = iso_seconds(stamp[:19] + "+00:00")
            head = utc_second(int(base)) if base is not None and 0 <= base < 2**32 else None
            if len(_UTC_SECONDS) >= 4096:
                _UTC_SECONDS.clear()
            second = _UTC_SECONDS[stamp[:19]] = (base, head)
        base, head = second
        if base is None:
            return None, None
        when = base + float(stamp[19:26])
        if head is None:
            return when, None
        digits = stamp[20:26]
        return when, f'"{head}.{digits}+00:00"' if digits != "000000" else f'"{head}+00:00"'
    if len(stamp) > 19 and stamp[19] == ".":
        rest = stamp[20:]
        n = len(rest) - len(rest.lstrip("0123456789"))
        base = iso_seconds(stamp[:19] + rest[n:])
        return None if base is None else base + float(stamp[19:20 + n]), None
    return iso_seconds(stamp), None


def scan_text(chunks: Iterable[str], years: Years, correlator: Correlator, emit: Emit,
              first_line: int = 1) -> None:
    """Failures in syslog text given as chunks (see textio.chunks), each passed to emit() (or,
    for the printer, formatted right here: emit.direct).

    Lines are found by CHUNK; the commonest wordings are parsed by it, the other classic
    sshd lines go through a fused loop (first-word dispatch, then the family parser,
    building nothing for lines without a verdict), and any other shape through
    parse_syslog_line. Gives exactly what the per-line reference path gives
    (tests/test_scan_fastpath.py)."""
    by_month, default = years.by_month, years.year
    families, correlated = PARSERS, CORRELATED_WORDS
    correlate, feed, minute = correlator.correlate, correlator.feed_raw, classic_minute
    settle, close, iso = correlator.settle, correlator.close, _iso_when
    split, limit = split_prefixes, MAX_MESSAGE
    endings, ending_prefixes, host_of = ENDING_WORDS, ENDINGS, parse_host
    en, kx, other = _EN, _KX, _OTHER
    four, three = _FOUR_FIELDS, _THREE_FIELDS
    kind_of, kind_name, ending_of = _HOT_KIND, _HOT_KIND_NAME, _HOT_ENDING
    accepted = Kind.ACCEPTED
    direct = getattr(emit, "direct", None)
    if direct is not None:
        append, fname, time_json, user_json, users = direct
    finditer = CHUNK.finditer
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
            alt: int = m.lastindex  # type: ignore[assignment]  # every alternative has a group
            if alt in four:  # (message, user, address, port)
                stamp, machine, pid_text, user, token, port_text = m.group(
                    1, 2, 3, alt + 1, alt + 2, alt + 3)
            elif alt in three:  # (message, address, port)
                stamp, machine, pid_text, token, port_text = m.group(1, 2, 3, alt + 1, alt + 2)
                user = None
            elif alt == en:
                # Correlator.correlate for a closing line without a verdict: with nothing
                # pending, the connection (if known) is simply forgotten.
                stamp, machine, pid_text = m.group(1, 2, 3)
                if stamp != last_stamp:
                    last_stamp, when_json = stamp, None
                    if stamp[4] == "-":
                        when, when_json = iso(stamp)
                    else:
                        base = minute(by_month.get(stamp[:3], default), stamp[:12])
                        when = base + int(stamp[13:15]) if base is not None else None
                if when is None and stamp[4] == "-":
                    continue  # parse_syslog_line rejects the line for its timestamp
                pid = int(pid_text)
                if close(machine, pid):
                    continue
                msg = m.group(en)
                for ev in correlate(msg, msg[:msg.find(" ")], None, pid, machine, when):
                    emit(ev, when, pid, machine, number, None)
                continue
            elif alt == other:
                line = m.group(other)
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
                    emit(event, record.time, record.pid, record.host, number, None)
                continue
            else:  # MSG or KX: the message only
                stamp, machine, pid_text, msg = m.group(1, 2, 3, alt)
                token = None
            if stamp != last_stamp:  # consecutive classic lines mostly share their second
                last_stamp, when_json = stamp, None
                if stamp[4] == "-":
                    when, when_json = iso(stamp)
                else:
                    base = minute(by_month.get(stamp[:3], default), stamp[:12])
                    when = base + int(stamp[13:15]) if base is not None else None
            if when is None and stamp[4] == "-":
                continue  # parse_syslog_line rejects the line for its timestamp
            if token is not None:
                host = host_of(token)
                port = int(port_text)
                if host is not None and port <= 65535:
                    kind, ending = kind_of[alt], ending_of[alt]
                    pid = int(pid_text)
                    # Correlator.correlate's common case in one call: a connection with
                    # nothing pending remembers its address for its later address-less
                    # lines, and is forgotten when this line ends it.
                    if settle(machine, pid, host, when, ending):
                        if direct is None:
                            emit((kind, host, user, port), when, pid, machine, number, None)
                        elif kind is not accepted:
                            # The printer's line (report.Printer.emit_for), formatted here.
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
                        emit(ev, when, pid, machine, number, None)
                    continue
                msg = m.group(alt)  # an address or port the pattern could not vouch for
            elif alt == kx:
                pid = int(pid_text)
                for ev in correlate(msg, "kex_exchange_identification:", None, pid, machine,
                                    when):
                    emit(ev, when, pid, machine, number, None)
                continue
            # Any other classic sshd line: the fused per-message path.
            if msg[:4] == "pam_":
                continue
            # Length as Correlator.feed_raw measures it (parse_syslog_line drops
            # trailing CRs first), before split_prefixes' rstrip.
            if len(msg) > limit and len(msg.rstrip("\r\n")) > limit:
                continue
            msg = msg.rstrip()
            if msg[:1] in "efk[P":
                msg, relay = split(msg)
            else:
                relay = False
            blank = msg.find(" ")
            first = msg[:blank] if blank > 0 else msg
            family = families.get(first)
            verdict = family(msg) if family is not None else None
            if verdict is None:
                if first not in correlated:
                    continue
                pid = int(pid_text)
                for ev in correlate(msg, first, None, pid, machine, when):
                    emit(ev, when, pid, machine, number, None)
                continue
            if relay:
                verdict = (*verdict[:4], True)
            pid = int(pid_text)
            if settle(machine, pid, verdict[1], when,
                      first in endings and msg.startswith(ending_prefixes)):
                emit(verdict, when, pid, machine, number, None)
                continue
            for ev in correlate(msg, first, verdict, pid, machine, when):
                emit(ev, when, pid, machine, number, None)
