"""The per-line reference path of `sshguardd scan` for syslog text: each line split by its
syslog prefix, then classified and correlated by detect/, one line at a time. The chunk
scanner (sshguardd/scan/fastpath.py) must give exactly what this gives; it lives here, not
in the package, because only the equivalence tests run it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from sshguardd.detect import CORRELATED_WORDS, MAX_MESSAGE, PARSERS, Correlator, split_prefixes
from sshguardd.detect.logformats import SSHD_PROGRAMS, classic_minute, parse_syslog_line
from sshguardd.scan.fastpath import Emit
from sshguardd.scan.textio import Years

# "Mmm dd hh:mm:ss host sshd[pid]: ": the common classic line, matched in one C call.
_FAST_PREFIX = re.compile(
    r"[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] ([^ \[\]:]+) "
    r"(?:sshd|sshd-session|sshd-auth)\[([0-9]{1,10})\]: (.*)", re.S)


def lines_as_chunks(chunks: Iterable[str]) -> Iterator[list[str]]:
    """The lines of textio.chunks' texts."""
    for text in chunks:
        yield text[1:].split("\n")


def scan_lines(chunks: Iterable[list[str]], years: Years, correlator: Correlator,
               emit: Emit, first_line: int = 1) -> None:
    """Syslog text given as lists of lines: each line split by _FAST_PREFIX or
    parse_syslog_line, then classified and correlated."""
    by_month, default = years.by_month, years.year
    number = first_line - 1
    chunk_done = getattr(emit, "chunk_done", None)
    for lines in chunks:
        if chunk_done is not None:
            chunk_done()
        for line in lines:
            number += 1
            m = _FAST_PREFIX.match(line)
            if m is not None:
                machine, pid_text, msg = m.groups()
                if msg[:4] == "pam_":
                    continue  # PAM's lines (a third of a busy log) name no failure of their own
                # Length as Correlator.feed_raw measures it (parse_syslog_line drops
                # trailing CRs first), before split_prefixes' rstrip.
                if len(msg) > MAX_MESSAGE and len(msg.rstrip("\r\n")) > MAX_MESSAGE:
                    continue
                msg, relay = split_prefixes(msg)
                blank = msg.find(" ")
                first = msg[:blank] if blank > 0 else msg
                family = PARSERS.get(first)
                event = family(msg) if family is not None else None
                if event is None and first not in CORRELATED_WORDS:
                    continue
                if event is not None and relay:
                    event = (*event[:4], True)
                base = classic_minute(by_month.get(line[:3], default), line[:12])
                when = base + int(line[13:15]) if base is not None else None
                for ev in correlator.correlate(msg, first, event, int(pid_text), machine, when):
                    emit(ev, when, int(pid_text), machine, number, None)
                continue
            if len(line) > 20 and line[15] == " " and line[9] == ":" and line[12] == ":":
                sp = line.find(" ", 16)
                end = line.find(": ", sp) if sp > 16 else -1
                if end > sp:
                    tag = line[sp + 1:end]
                    if " " not in tag and "[" not in line[16:sp] and "/" not in tag \
                            and tag.partition("[")[0] not in SSHD_PROGRAMS:
                        continue  # another program's line
            record = parse_syslog_line(line, by_month.get(line[:3], default))
            if record is None:
                continue
            for event in correlator.feed_raw(record.message, record.pid, record.host,
                                             record.time):
                emit(event, record.time, record.pid, record.host, number, None)
