"""Property tests: the classifier and readers never raise, stay fast on hostile input, and
only ever report an address found at a position where sshd writes one."""

from __future__ import annotations

import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshguardd.detect import MAX_MESSAGE, Correlator, classify, orphan_kind, parse_host
from sshguardd.detect.logformats import parse_syslog_line, record_from_journal

# Fragments of real sshd wordings, so random messages reach deep into every family.
_WORDS = [
    "Failed", "Accepted", "Invalid", "User", "ROOT LOGIN REFUSED FROM", "maximum",
    "authentication attempts exceeded for", "Disconnecting", "Connection", "closed", "reset",
    "by", "Disconnected", "Received disconnect from", "Did not receive identification string",
    "Bad protocol version identification", "Unable to negotiate with", "banner exchange:",
    "ssh_dispatch_run_fatal:", "Timeout before authentication for", "connection from", "to",
    "drop connection #1", "penalty:", "refused connect from", "Authentication failure for",
    "unknown user for", "error:", "fatal:", "PAM:", "[ID 1 auth.info]", "kernel:[ 1.0]:",
    "password", "publickey", "hostbased", "keyboard-interactive/pam", "for", "invalid user",
    "authenticating user", "user", "from", "port", "ssh2", "ssh1", "[preauth]", ":", ": ",
    "11:", "3:", "14:", "Auth fail", "No supported authentication methods available",
    "Too many authentication failures", "Change of username or service not allowed: (",
    ",", ")", "(", "[", "]", "]:", "via", "not allowed because", "listed in DenyUsers",
    "RSA", "RSA-CERT", "SHA256:x", "ID", "(serial 1)", "CA", 'client user "', '", client host "',
    "192.0.2.1", "203.0.113.9", "::ffff:198.51.100.3", "2001:db8::1", "fe80::1%eth0",
    "host.example.com", "300.1.1.1", "1.2.3", "::", "-", "#", "=", "\t", "é", "\x00",
]
_messages = st.lists(st.sampled_from(_WORDS), max_size=30).map(" ".join) | st.text(max_size=300)

# Where sshd puts the address, as independent patterns (a second opinion on classify).
_ANCHORS = [
    re.compile(r"(?:^| )(\S+)(?: port \d{1,5})?(?: ssh[12])?(?: \[preauth\])?\s*$"),  # end
    re.compile(r"(\S+)(?: port \d{1,5})?(?: ssh[12])?: "),        # before sshd's ": EXTRA"
    re.compile(r"(\S+) port \d{1,5}: "),                          # packet.c remote id
    re.compile(r"from (\S+) not allowed because "),
    re.compile(r"^Received disconnect from ([^ ]+?)(?: port \d+)?: ?\d+: "),
    re.compile(r"^Received disconnect from (\S+) port"),
    re.compile(r"^Unable to negotiate with (\S+)"),
    re.compile(r"^banner exchange: Connection from (\S+)"),
    re.compile(r"^Timeout before authentication for (?:connection from )?(\S+)"),
    re.compile(r"^drop connection #\d+ from \[([^\]]+)\]"),
    re.compile(r"\(([^() ]+)\)$"),
    re.compile(r"from (\S+) via \S+$"),
]
_PREFIX = re.compile(r"^(?:(?:error|fatal): )?(?:\[ID [^\]]*\] |kernel: ?\[ *\d+\.\d+\]:? ?)?(?:PAM: )?")


def _anchored(message: str) -> set[str]:
    msg = _PREFIX.sub("", message.rstrip(), count=1)
    hosts = set()
    for pattern in _ANCHORS:
        for m in pattern.finditer(msg):
            host = parse_host(m.group(1))
            if host is not None:
                hosts.add(host)
    return hosts


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages)
def test_never_raises_and_blames_only_anchored_addresses(message: str) -> None:
    event = classify(message)
    orphan_kind(message)
    if event is not None:
        assert event.host in _anchored(message), (message, event)
        assert parse_host(event.host) == event.host  # already normalised
        assert event.port is None or 0 < event.port <= 65535


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_messages, st.integers(0, 5)), max_size=20))
def test_correlator_never_raises_and_stays_bounded(feed: list[tuple[str, int]]) -> None:
    c = Correlator(max_entries=3)
    for message, pid in feed:
        for event in c.feed(message, pid, "h", 1.0):
            assert parse_host(event.host) == event.host
    assert len(c) <= 3


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=400))
def test_readers_never_raise(line: str) -> None:
    parse_syslog_line(line, 2025)
    parse_syslog_line("Nov 28 09:00:00 h sshd[1]: " + line, 2025)
    parse_syslog_line("<38>1 2025-01-01T00:00:00Z h sshd 1 - " + line)
    record_from_journal({"MESSAGE": line, "_PID": line, "__REALTIME_TIMESTAMP": line})


def _worst(pieces: list[str]) -> list[str]:
    """Messages just under the length cap made of one repeated adversarial piece."""
    out = []
    for piece in pieces:
        for head in ("Failed publickey for ", "Failed hostbased for ", "Invalid user ",
                     "Disconnecting invalid user ", "Received disconnect from ",
                     "Connection closed by invalid user ", "User "):
            body = head + piece * ((MAX_MESSAGE - len(head)) // len(piece))
            out.append(body[:MAX_MESSAGE])
    return out


def test_hostile_lines_are_cheap() -> None:
    """No catastrophic backtracking: every line at the cap takes far less than the generous
    bound (a typical line takes microseconds), and longer lines are refused outright."""
    pieces = [" from 192.0.2.1 port 1 ssh2: RSA SHA256:x", " ssh2: ", ": ", " from ",
              ' ssh2: RSA SHA256:a, client user "', '", client host "', " port 1",
              ": Change of username or service not allowed: (", "a", " ", "::::", "[preauth]",
              " ID x (serial 1) CA RSA SHA256:y", " not allowed because "]
    bound = 0.05
    for message in _worst(pieces):
        start = time.perf_counter()
        classify(message)
        orphan_kind(message)
        elapsed = time.perf_counter() - start
        assert elapsed < bound, (elapsed, message[:80])
    huge = "Invalid user " + "x from 192.0.2.1 " * 100_000 + "from 192.0.2.2"
    start = time.perf_counter()
    assert classify(huge) is None
    assert time.perf_counter() - start < bound
