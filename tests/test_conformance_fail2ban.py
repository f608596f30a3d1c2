"""Conformance with a peer's corpus: fail2ban's own annotated sshd test logs.

The logs are read from the installed Debian package (never copied into this tree). Every
line annotated `"match": true` must give a failure event for the annotated host; every
line annotated `"match": false` must give no failure. fail2ban tests its sshd filter in
several modes; we judge with its aggressive-mode expectations (the union of all modes),
evaluating each annotation's "constraint" as fail2ban would under mode=aggressive.

Lines are fed in file order through classify.Correlator, which lends a connection's
address (by sshd pid) to the few old wordings that carry none, as fail2ban's multi-line
matching does. DIFFERENCES lists where we deliberately disagree, and why; the test checks
that we still do exactly what the list says for those lines.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sshguardd.contracts import Event, Kind
from sshguardd.detect import Correlator
from sshguardd.detect.logformats import parse_syslog_line

CORPUS = Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs")

# fail2ban's constraint expressions, evaluated as under filter sshd[mode=aggressive].
CONSTRAINTS = {
    "name == 'sshd'": True,
    "opts.get('mode') == 'aggressive'": True,
    "opts.get('mode') != 'aggressive'": False,
}

# Deliberate differences: (substring of the log line, what we produce instead, why).
# "none" = no failure event on that line; an address = the failure is blamed on it.
DIFFERENCES: list[tuple[str, str, str]] = [
    ("192.030.0.6", "none",
     ("a leading-zero octet is not an IPv4 literal: inet_aton would read it as octal "
     "(192.24.0.6), ipaddress rejects it, and sshd's getnameinfo never prints one")),
    ("port 20000 ssh1: ruser from 1.2.3.4", "1.2.3.4",
     ("sshd appends ': info' only to publickey/hostbased results, so after a password "
     "failure that text can only be part of the user name; the address sshd wrote is the "
     "one at the end")),
    ("port 20000 ssh1: ruser XXXX", "1.2.3.4", "same: end-anchored address of a password failure"),
    ("port 58946 ssh2: from 10.10.1.2 port 55555 ssh2", "10.10.1.2",
     "same: ': from 10.10.1.2 ...' after a password failure is user-name text"),
    ("Accepted password for known from 192.0.2.114", "none",
     ("fail2ban's heuristic turns a success after failures for other users into a failure; "
     "we report it as Kind.ACCEPTED and count the failures from sshd's own 'Failed "
     "password' lines")),
    ("Accepted password for known from 192.0.2.116", "none", "same heuristic"),
    ("ruser=sudoer rhost=192.0.2.114", "none",
     ("pam_unix's 'authentication failure' duplicates sshd's 'Failed password' line for the "
     "same attempt (fail2ban also treats it as a no-fail helper; its match comes from the "
     "multi-user heuristic)")),
    ("Disconnected from authenticating user admin 192.0.2.6 port 33553 [preauth]",
     "192.0.2.6",
     ("a disconnect before authentication is always a (half-weight) preauth_disconnect for "
     "us, as in fail2ban's own extra/aggressive modes for the same wording ('Nov 26 "
     "16:47:51 ... root 192.0.2.6 ...' is annotated true there)")),
]

# A refused public key is reported as Kind.BAD_KEY, whose default weight is 0 (clients
# offer several keys): fail2ban treats the same lines as no-fail helpers. It therefore does
# not count as a failure for `"match": false` lines.
NOT_COUNTED = {Kind.BAD_KEY, Kind.ACCEPTED}

_JOURNAL_LINE = re.compile(r"(?P<host>\S+) (?P<prog>[\w.-]+)\[(?P<pid>\d+)\]: (?P<msg>.*)")


@dataclass
class Case:
    file: str
    lineno: int
    line: str
    expect: dict
    events: list[Event]


def _cases(name: str) -> list[Case]:
    path = CORPUS / name
    correlator = Correlator()
    cases: list[Case] = []
    pending: dict | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith("# failJSON:"):
            pending = json.loads(raw[len("# failJSON:"):])
            continue
        if not raw.strip() or raw.startswith("#"):
            continue
        if name == "sshd-journal":
            m = _JOURNAL_LINE.fullmatch(raw)
            assert m, f"{name}:{lineno}: unreadable journal-style line"
            message, pid, machine = m["msg"], int(m["pid"]), m["host"]
        else:
            record = parse_syslog_line(raw, year=2005)
            assert record is not None, f"{name}:{lineno}: our syslog reader skipped {raw!r}"
            message, pid, machine = record.message, record.pid, record.host
        events = correlator.feed(message, pid, machine)
        if pending is not None:
            cases.append(Case(name, lineno, raw, pending, events))
            pending = None
    return cases


def _applies(case: Case) -> bool:
    constraint = case.expect.get("constraint")
    if constraint is None:
        return True
    assert constraint in CONSTRAINTS, f"{case.file}:{case.lineno}: new constraint {constraint!r}"
    return CONSTRAINTS[constraint]


def _norm(host: str) -> str:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def _difference(line: str) -> tuple[str, str, str] | None:
    for diff in DIFFERENCES:
        if diff[0] in line:
            return diff
    return None


@pytest.fixture(scope="module", params=["sshd", "sshd-journal"])
def cases(request) -> list[Case]:
    assert (CORPUS / request.param).is_file(), "fail2ban's test corpus is not installed"
    found = _cases(request.param)
    assert len(found) > 100, "the corpus looks truncated"
    return found


def test_every_annotated_line(cases: list[Case]) -> None:
    problems = []
    for case in cases:
        if not _applies(case):
            continue
        failures = [e for e in case.events if e.kind.is_failure]
        counted = [e for e in failures if e.kind not in NOT_COUNTED]
        where = f"{case.file}:{case.lineno}: {case.line}"
        diff = _difference(case.line)
        if diff is not None:
            if diff[1] == "none":
                if counted:
                    problems.append(f"{where}\n  listed difference expects no failure, got {counted}")
            elif not any(e.host == diff[1] for e in failures):
                problems.append(f"{where}\n  listed difference expects {diff[1]}, got {failures}")
            continue
        if case.expect.get("match"):
            host = case.expect.get("host") or case.expect.get("ip4") or case.expect.get("ip6")
            if host is None:
                if not failures:
                    problems.append(f"{where}\n  expected a failure, got {case.events}")
            elif not any(e.host == _norm(host) for e in failures):
                problems.append(f"{where}\n  expected a failure for {host}, got {case.events}")
        elif counted:
            problems.append(f"{where}\n  expected no failure, got {counted}")
    assert not problems, "\n".join(problems)


def test_differences_are_all_used() -> None:
    """Every listed difference must still correspond to a line in the corpus."""
    text = (CORPUS / "sshd").read_text(encoding="utf-8") + (CORPUS / "sshd-journal").read_text(
        encoding="utf-8")
    unused = [d[0] for d in DIFFERENCES if d[0] not in text]
    assert not unused


def test_corpus_coverage(cases: list[Case]) -> None:
    """Most annotated lines are real matches: the test is not vacuous."""
    matched = [c for c in cases if c.expect.get("match") and _applies(c)]
    detected = [c for c in matched if any(e.kind.is_failure for e in c.events)]
    assert len(detected) >= 0.9 * len(matched)
