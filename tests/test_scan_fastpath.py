"""`sshguardd scan`'s chunk scanner (one regex per chunk of text that skips the lines that
cannot matter and parses the commonest sshd wordings itself) gives exactly what the
general paths give: the per-line reference path (tests/scan_reference.py) and the
definitional one (parse_syslog_line, then Correlator.feed_raw), on a prefix of the benchmark log with
near-miss variants of every fast-path wording mixed in."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

from scan_reference import lines_as_chunks, scan_lines
from sshguardd.detect import Correlator
from sshguardd.detect.logformats import parse_syslog_line
from sshguardd.scan.fastpath import CHUNK, Emit, scan_text
from sshguardd.scan.report import Printer
from sshguardd.scan.textio import Years, chunks

BENCH = Path(__file__).resolve().parent.parent / "bench"

# Messages logged with the prefix (time, host, pid) of the line before them, so that they
# meet the correlator's state for a live connection. {a} is that line's address if it has
# one. Each is a near miss of a fast-path pattern (or the pattern itself).
MESSAGES = [
    "Failed password for root from {a} port 22 ssh2",
    "Failed password for invalid user  from {a} port 22 ssh2",
    "Failed password for  from {a} port 22 ssh2",
    "Failed password for from from {a} port 22 ssh2",
    "Failed password for invalid user from {a} port 22 ssh2",
    "Failed password for illegal user x from {a} port 22 ssh2",
    "Failed password for a b from {a} port 22 ssh2",
    "Failed password for x from 192.0.2.66 port 1 ssh2 from {a} port 22 ssh2",
    "Failed password for <invalid username> from {a} port 22 ssh2",
    "Failed password for root from {a} port 99999 ssh2",
    "Failed password for root from {a} port 022 ssh2",
    "Failed password for root from {a} port 22 ssh2 ",
    "Failed password for root from {a} port 22 ssh2\r",
    "Failed password for root from {a} port 22 ssh1",
    "Failed password for root from {a} port 22",
    "Failed password for root from {a} ssh2",
    "Failed password for root from 999.1.1.1 port 22 ssh2",
    "Failed password for root from 01.2.3.4 port 22 ssh2",
    "Failed password for root from ::ffff:198.51.100.9 port 22 ssh2",
    "Failed password for root from host.example.com port 22 ssh2",
    "Failed password for root from [{a}] port 22 ssh2",
    "Failed password for root from {a} port \u0662\u0662 ssh2",
    "Failed publickey for root from {a} port 22 ssh2: RSA SHA256:x",
    "Failed password for " + "u" * 1030 + " from {a} port 1 ssh2",
    "Invalid user x from {a} port 1",
    "Invalid user  from {a} port 1",
    "Invalid user from {a} port 1",
    "Invalid user from from {a} port 1",
    "Invalid user x from {a} port 70000",
    "Invalid user x from {a}",
    "Invalid user x from {a} port 1 [preauth]",
    "Invalid user x y from {a} port 1",
    "Invalid user x from {a} port 1 " + " " * 2030,
    "Invalid user x from {a} port 1" + "\r" * 2030,
    "Invalid user " + "x" * 2040 + " from {a} port 1",
    "Connection closed by {a} port 1 [preauth]",
    "Connection closed by invalid user  {a} port 1 [preauth]",
    "Connection closed by invalid user {a} port 1 [preauth]",
    "Connection closed by user x {a} port 1 [preauth]",
    "Connection closed by authenticating user x {a} port 1 [preauth]",
    "Connection closed by {a} port 1 [preauth] ",
    "Connection closed by {a} [preauth]",
    "Connection reset by authenticating user r {a} port 65536 [preauth]",
    "Connection reset by {a} port 1 [preauth]",
    "Disconnected from invalid user a b {a} port 1 [preauth]",
    "Disconnected from user x {a} port 1 [preauth]",
    "Connection closed by {a} port 1",
    "Connection closed by {a} port 1 ",
    "Disconnected from user x {a} port 1",
    "Disconnected from user  {a} port 1",
    "Disconnected from {a} port 1",
    "Received disconnect from {a} port 1:11: Bye Bye [preauth]",
    "Received disconnect from {a} port 1:11: x [preauth]",
    "Received disconnect from {a} port 1:11:  [preauth]",
    "Received disconnect from {a} port 1:11: [preauth]",
    "Received disconnect from {a} port 99999:11: x [preauth]",
    "Received disconnect from {a} port 1:3: Auth fail [preauth]",
    "Received disconnect from {a} port 1:14: No supported authentication methods available [preauth]",
    "Received disconnect from {a}: 11: Bye [preauth]",
    "Received disconnect from {a} port 1:11: disconnected by user",
    "Received disconnect from {a} port 1:11: disconnected by user ",
    "Accepted publickey for alice from {a} port 1 ssh2: ED25519 SHA256:abc",
    "Accepted publickey for alice from {a} port 1 ssh2: ED25519 SHA256:abc ",
    "Accepted publickey for alice from {a} port 1 ssh2: from 192.0.2.77",
    "Accepted publickey for alice from {a} port 1 ssh2: RSA SHA256:x from 192.0.2.77 port 2 ssh2: RSA SHA256:y",
    "Accepted publickey for a from {a} port 99999 ssh2: RSA SHA256:x",
    "Accepted publickey for x: from {a} port 1 ssh2: RSA SHA256:x",
    "Accepted publickey for alice from ssh2: port 1 ssh2: RSA SHA256:x",
    "Accepted publickey for alice from {a} port 1 ssh2: RSA-CERT SHA256:x ID k (serial 1) CA RSA SHA256:y",
    "Accepted password for alice from {a} port 1 ssh2",
    "error: kex_exchange_identification: Connection closed by remote host",
    "error: kex_exchange_identification: Connection closed by remote host\r",
    "error: kex_exchange_identification: client sent invalid protocol identifier \"x\"",
    "error: kex_exchange_identification: client sent invalid protocol identifier \"x\" ",
    "error: kex_exchange_identification: client sent invalid protocol identifier \"\"",
    "error: kex_exchange_identification: read: Connection reset by peer",
    "fatal: kex_exchange_identification: Connection closed by remote host",
    "error: PAM: Authentication failure for root from {a}",
    "Disconnecting: Too many authentication failures [preauth]",
    "error: maximum authentication attempts exceeded for root from {a} port 1 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for invalid user x from {a} port 1 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for invalid user  from {a} port 1 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for invalid user from {a} port 1 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for  from {a} port 1 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for a b from {a} port 1 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for root from {a} port 65536 ssh2 [preauth]",
    "error: maximum authentication attempts exceeded for root from {a} port 1 ssh2",
    "error: maximum authentication attempts exceeded for root from {a} port 1 ssh2 [preauth] ",
    "fatal: maximum authentication attempts exceeded for root from {a} port 1 ssh2 [preauth]",
    "error: PAM: maximum authentication attempts exceeded for root from {a} port 1 ssh2 [preauth]",
    "Disconnecting authenticating user root {a} port 1: Too many authentication failures [preauth]",
    "Disconnecting invalid user x {a} port 1: Too many authentication failures [preauth]",
    "Disconnecting invalid user  {a} port 1: Too many authentication failures [preauth]",
    "Disconnecting user x {a} port 1: Too many authentication failures [preauth]",
    "Disconnecting {a} port 1: Too many authentication failures [preauth]",
    "Disconnecting authenticating user a b {a} port 1: Too many authentication failures [preauth]",
    "Disconnecting authenticating user root {a} port 99999: Too many authentication failures [preauth]",
    "Disconnecting authenticating user root {a} port 1: Too many authentication failures",
    "Disconnecting authenticating user root {a} port 1: Change of username or service not allowed: (root,ssh-connection) -> (x,ssh-connection) [preauth]",
    "Unable to negotiate with {a} port 1: no matching cipher found. Their offer: x [preauth]",
    "Unable to negotiate with {a} port 1: no matching cipher found. Their offer: x",
    "Unable to negotiate with {a} port 99999: no matching cipher found. Their offer: x [preauth]",
    "Unable to negotiate with {a}: no matching cipher found. Their offer: x [preauth]",
    "Unable to negotiate with {a} port 1: something else [preauth]",
    "Unable to negotiate with {a} port 1: no matching x: from 192.0.2.9 port 2: y [preauth]",
    "banner exchange: Connection from {a} port 1: invalid format",
    "banner exchange: Connection from {a} port 1: invalid format ",
    "banner exchange: Connection from {a} port 1: ",
    "banner exchange: Connection from {a} port 1: x: from 192.0.2.9 port 2: y",
    "banner exchange: Connection from {a} port 65536: invalid format",
    "banner exchange: Connection from {a}: invalid format",
    "pam_unix(sshd:auth): authentication failure; rhost={a}",
    "Xyz from {a}",
    "Dec  1 00:00:00 evil sshd[6]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 evil sshd[6]: pam_unix(sshd:auth): authentication failure",
    "",
]

# Whole lines of other shapes ({a}: an address).
LINES = [
    "Mar  1 00:00:00 h sshd-foo[1]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h sshd: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h sshd[x]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h auth.info sshd[7]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h/x sshd[7]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h] sshd[7]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h sshd[12345678901]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h sshd-session[8]: Invalid user q from {a} port 1",
    "Mar  1 00:00:00 h sshd-auth[9]: Invalid user q from {a} port 1",
    "Mar  1 00:00:00 h [sshd] Invalid user q from {a} port 1",
    "Mar  1 00:00:00 h CRON[1]: Invalid user q from {a} port 1",
    "Mar  1 00:00:00 h cron/x[1]: Invalid user q from {a} port 1",
    "Mar 1 00:00:00 h sshd[7]: Invalid user q from {a} port 1",
    "Feb 30 00:00:00 h sshd[7]: Invalid user q from {a} port 1",
    "mar  1 00:00:00 h sshd[7]: Invalid user q from {a} port 1",
    "2025-03-01T00:00:00+01:00 h sshd[7]: Invalid user q from {a} port 1",
    "<38>1 2025-03-01T00:00:01Z h sshd 7 - - Failed password for root from {a} port 2 ssh2",
    "Mar  1 00:00:00 h sshd[7]: Invalid user q from {a} port 1\x00",
    "Mar  1 00:00:00 h sshd[7]: Dec  1 00:00:00 evil sshd[6]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h sshd[7]: pam_unix(x)\nFailed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 h sshd[7]: pam_unix(x)\nMar  1 00:00:00 h sshd[7]: Failed password for root from {a} port 1 ssh2",
    "Mar  1 00:00:00 \u00e9 sshd[7]: Invalid user \u00e9 from {a} port 1",
    "",
    "garbage",
]

# Near misses of the ISO 8601 prefix (rsyslog's RSYSLOG_FileFormat) and its skip pattern.
ISO_LINES = [
    "2025-13-01T00:00:00.1+00:00 h sshd[5]: Invalid user a from {a} port 1",
    "0000-06-10T08:00:00Z h sshd[5]: Invalid user a from {a} port 1",
    "2025-00-10T08:00:00 h sshd[5]: Invalid user a from {a} port 1",
    "2025-02-30T08:00:00Z h sshd[8]: Invalid user g from {a} port 1",
    "2025-06-10T08:00:00 h sshd[5]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00+0100 h sshd[6]: Failed password for root from {a} port 2 ssh2",
    "2025-06-10T08:00:00-07:00 h sshd[6]: Failed password for root from {a} port 2 ssh2",
    "2025-06-10T08:00:00.5Z h sshd[7]: Connection closed by {a} port 3 [preauth]",
    ("2025-06-10T08:00:00.999999999999+05:30 h sshd-session[8]: Failed password for x from {a} "
    "port 1 ssh2"),
    "2025-06-10T08:00:00+01 h sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10 08:00:00.5Z h sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00.5Z h\tx sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00.5Z h\u00a0x sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00.5Z  h sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00.5Z h  sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00.5Z h auth.info sshd[7]: Invalid user b from {a} port 1",
    "2025-06-10T08:00:00.5Z h sshd: Invalid user c from {a}",
    "2025-06-10T08:00:00.5Z h:1 sshd[7]: Invalid user a from {a} port 1",
    "2025-06-10T08:00:00.5Z sshd[9]: Invalid user e from {a} port 1",
    "2025-06-10T08:00:00.5Z sshd: Invalid user e from {a} port 1",
    "2025-06-10T08:00:00.5Z h postfix/smtpd[9]: connect from unknown[{a}]",
    "2025-06-10T08:00:00.5Z h sshd.x[9]: Invalid user d from {a} port 1",
    "2025-06-10T08:00:00.5Z h sshdx: Invalid user d from {a} port 1",
    "2025-06-10T08:00:00.5Z h sshd-session: Invalid user d from {a} port 1",
    "2025-06-10T08:00:00.5Z h CRON[1]: Invalid user f from {a} port 1",
    "2025-06-10T08:00:00.5Z h kernel: [ 1.0] Failed password for root from {a} port 1 ssh2",
    "2025-06-10T08:00:00.5Z h [sshd] Invalid user q from {a} port 1",
    "2025-06-10T08:00:00.5Z h x y: Invalid user q from {a} port 1",
    ("2025-06-10T08:00:00.5Z h sshd[7]: error: kex_exchange_identification: Connection closed "
    "by remote host"),
    "2025-06-10T08:00:00.5Z h sshd[7]: pam_unix(sshd:auth): authentication failure; rhost={a}",
    "2025-06-10T08:00:00.5Z h sshd[7]:Invalid user q from {a} port 1",
    "2025-06-10T08:00:00.5Z",
]


def _log(tmp_path: Path, lines: int, seed: int, generator: str = "gen_authlog",
         stamp: str = "classic") -> Path:
    """A prefix of a benchmark log (gen_authlog with its default attackers and seed, or
    gen_authlog2 with its ISO or classic stamps), with MESSAGES and LINES mixed in."""
    sys.path.insert(0, str(BENCH))
    try:
        import gen_authlog
        import gen_authlog2
    finally:
        sys.path.pop(0)
    base = tmp_path / "bench.log"
    if generator == "gen_authlog":
        gen_authlog.generate(str(base), lines=lines, attackers=40_000, seed=1)
    else:
        gen_authlog2.generate(str(base), lines, seed=seed, stamp=stamp, attackers=5000,
                              users=5000)
    extra = LINES + ISO_LINES
    rng = random.Random(seed)
    out = []
    address = "192.0.2.200"
    for line in base.read_text().splitlines():
        out.append(line)
        words = line.split()
        for word in reversed(words):
            if word.count(".") == 3 or word.count(":") >= 2:
                address = word.strip("[]").split("]:")[0]
                break
        roll = rng.random()
        if roll < 0.08 and "]: " in line:
            head = line[: line.index("]: ") + 3]
            out.append(head + rng.choice(MESSAGES).format(a=address))
        elif roll < 0.09:
            out.append(rng.choice(extra).format(a=address))
    path = tmp_path / "mixed.log"
    path.write_bytes(("\n".join(out) + "\n").encode("utf-8", "surrogatepass"))
    return path


def _recorder() -> tuple[list[tuple], Emit]:
    got: list[tuple] = []

    def emit(event, t, pid, machine, line, cursor) -> None:
        got.append((event, t, pid, machine, line, cursor))

    return got, emit


def _definitional(path: Path) -> list[tuple]:
    correlator = Correlator()
    got = []
    text = path.read_bytes().decode("utf-8", "replace")
    for number, line in enumerate(text[:-1].split("\n"), 1):
        record = parse_syslog_line(line, 2025)
        if record is None:
            continue
        for event in correlator.feed_raw(record.message, record.pid, record.host, record.time):
            got.append((event, record.time, record.pid, record.host, number))
    return got


def _equal_on(path: Path) -> list[tuple]:
    """The chunk scanner, with big and tiny reads, against the per-line reference path and
    the definitional one (parse_syslog_line, then Correlator.feed_raw); returns its output."""
    years = Years(2025, None)
    fast, emit = _recorder()
    with open(path, "rb") as f:
        scan_text(chunks(f), years, Correlator(), emit)
    small, emit = _recorder()  # tiny reads: many chunk boundaries
    with open(path, "rb") as f:
        scan_text(chunks(f, 4096), years, Correlator(), emit)
    lines, emit = _recorder()
    with open(path, "rb") as f:
        scan_lines(lines_as_chunks(chunks(f)), years, Correlator(), emit)
    assert fast == lines
    assert small == fast
    assert [(e, t, pid, host, n) for e, t, pid, host, n, _ in fast] == _definitional(path)
    return fast


@pytest.mark.parametrize("seed", [1, 2])
def test_chunk_scanner_equals_general_paths(tmp_path: Path, seed: int) -> None:
    path = _log(tmp_path, 30_000, seed)
    assert len(_equal_on(path)) > 10_000

    # The test exercised every pattern the chunk regex parses itself, and its other paths.
    with open(path, "rb") as f:
        text = "".join(chunks(f))
    names = {v: k for k, v in CHUNK.groupindex.items()}
    seen = {names.get(m.lastindex) for m in CHUNK.finditer(text)}
    assert seen >= {"fp", "cl", "iu", "ac", "rd", "en", "kx", "mx", "dc", "un", "bn", "msg",
                    "other"}


@pytest.mark.parametrize("stamp", ["iso", "classic"])
def test_chunk_scanner_equals_reference_on_the_second_generator(tmp_path: Path,
                                                                stamp: str) -> None:
    """The independent generator's log (interleaved connections, long-tail users, IPv6,
    other programs' lines; ISO 8601 or classic stamps), with every near miss mixed in."""
    path = _log(tmp_path, 30_000, 4, "gen_authlog2", stamp)
    assert len(_equal_on(path)) > 8_000
    with open(path, "rb") as f:
        text = "".join(chunks(f))
    names = {v: k for k, v in CHUNK.groupindex.items()}
    seen = {names.get(m.lastindex) for m in CHUNK.finditer(text)}
    assert seen >= {"fp", "cl", "iu", "rd", "en", "kx", "mx", "dc", "un", "bn", "msg", "other"}


@pytest.mark.parametrize("generator,stamp", [("gen_authlog", "classic"),
                                             ("gen_authlog2", "iso")])
def test_printed_output_is_the_same(tmp_path: Path, generator: str, stamp: str) -> None:
    """The JSON printed through the chunk scanner and through the reference path agree
    (on ISO logs the scanner builds rsyslog's UTC times' JSON from the stamp's text)."""
    path = _log(tmp_path, 5_000 if generator == "gen_authlog" else 20_000, 3, generator, stamp)
    years = Years(2025, None)
    outputs = []
    # The lambdas read `printer` when called, after the loop body rebinds it: on purpose.
    for reader in (lambda f: scan_text(chunks(f), years, Correlator(),
                                       printer.emit_for(str(path))),  # noqa: B023
                   lambda f: scan_lines(lines_as_chunks(chunks(f)), years, Correlator(),
                                        printer.emit_for(str(path)))):  # noqa: B023
        buffer = io.StringIO()
        printer = Printer(buffer)
        with open(path, "rb") as f:
            reader(f)
        printer.flush()
        outputs.append(buffer.getvalue())
    assert outputs[0].count("\n") > 1000
    assert outputs[0] == outputs[1]
