"""`sshguardd scan`: the offline analyser, fed syslog files (classic, ISO, RFC 5424),
stdin, journal export format and a real journal file made by systemd-journal-remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshguardd import cli

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"

AUTH_LOG = """\
Nov 28 09:00:01 web1 CRON[100]: pam_unix(cron:session): session opened for user root
Nov 28 09:00:02 web1 sshd[200]: Invalid user admin from 203.0.113.5 port 40000
Nov 28 09:00:04 web1 sshd[200]: Failed password for invalid user admin from 203.0.113.5 port 40000 ssh2
Nov 28 09:00:05 web1 sshd[200]: Connection closed by invalid user admin 203.0.113.5 port 40000 [preauth]
Nov 28 09:00:06 web1 sshd[201]: Accepted publickey for alice from 198.51.100.1 port 50000 ssh2: ED25519 SHA256:abc
Nov 28 09:00:07 web1 sshd-session[202]: Failed password for invalid user x from 10.9.9.9 port 22 ssh2 from 2001:db8::5 port 50001 ssh2
Nov 28 09:00:08 web1 sshd[203]: error: kex_exchange_identification: Connection closed by remote host
Nov 28 09:00:08 web1 sshd[203]: Connection closed by 192.0.2.7 port 45655
Nov 28 09:00:09 web1 kernel: [ 1.0] Failed password for root from 192.0.2.99 port 1 ssh2
this line is not syslog at all
"""


def _scan(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = cli.main(["scan", *argv])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_syslog_file(tmp_path: Path, capsys) -> None:
    log = tmp_path / "auth.log"
    log.write_text(AUTH_LOG)
    code, rows = _scan(capsys, str(log), "--year", "2025")
    assert code == 0
    got = [(r["line"], r["host"], r["user"], r["kind"]) for r in rows]
    assert got == [
        (2, "203.0.113.5", "admin", "invalid_user"),
        (3, "203.0.113.5", "admin", "bad_password"),
        (4, "203.0.113.5", "admin", "preauth_disconnect"),
        (6, "2001:db8::5", "x from 10.9.9.9 port 22 ssh2", "bad_password"),
        (8, "192.0.2.7", None, "protocol_error"),  # the kex error lent this line's address
    ]
    assert all(r["file"] == str(log) for r in rows)
    # Classic syslog time is local time in the year given.
    assert rows[0]["time"].startswith("2025-11-28")


def test_year_from_mtime_with_rollover(tmp_path: Path, capsys) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Dec 31 23:59:59 h sshd[1]: Invalid user a from 192.0.2.1 port 1\n"
                   "Jan  1 00:00:01 h sshd[2]: Invalid user b from 192.0.2.2 port 2\n")
    january = 1767312000  # 2026-01-02T00:00:00Z
    os.utime(log, (january, january))
    _, rows = _scan(capsys, str(log))
    assert [r["time"][:4] for r in rows] == ["2025", "2026"]


def test_iso_and_rfc5424(tmp_path: Path, capsys) -> None:
    log = tmp_path / "secure"
    log.write_text(
        "2025-03-01T10:00:00.123456+01:00 db1 sshd[7]: Invalid user bob from 192.0.2.10 port 1\n"
        "<38>1 2025-03-01T10:00:01Z db1 sshd 8 - [meta x=\"[y]\"] "
        "Failed password for root from 192.0.2.11 port 2 ssh2\n"
        "<38>1 2025-03-01T10:00:02Z db1 postfix 9 - - Failed password for root from 192.0.2.12\n")
    _, rows = _scan(capsys, str(log))
    assert [(r["host"], r["time"]) for r in rows] == [
        ("192.0.2.10", "2025-03-01T09:00:00.123456+00:00"),
        ("192.0.2.11", "2025-03-01T10:00:01+00:00"),
    ]


def test_stdin() -> None:
    proc = subprocess.run([sys.executable, "-m", "sshguardd", "scan", "-", "--year", "2025"],
                          input=AUTH_LOG, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 5 and {r["file"] for r in rows} == {"-"}


def _export(entries: list[dict[str, str | bytes]]) -> bytes:
    out = bytearray()
    for fields in entries:
        for name, value in fields.items():
            if isinstance(value, bytes):  # binary-safe form: NAME\n<le64 size><data>\n
                out += name.encode() + b"\n" + len(value).to_bytes(8, "little") + value + b"\n"
            else:
                out += f"{name}={value}\n".encode()
        out += b"\n"
    return bytes(out)


ENTRIES: list[dict[str, str | bytes]] = [
    {"__CURSOR": "c1", "__REALTIME_TIMESTAMP": "1700000000000000", "_HOSTNAME": "h1",
     "_PID": "300", "_COMM": "sshd", "SYSLOG_IDENTIFIER": "sshd",
     "MESSAGE": "Invalid user eve from 192.0.2.20 port 1"},
    {"__CURSOR": "c2", "__REALTIME_TIMESTAMP": "1700000001000000", "_HOSTNAME": "h1",
     "_PID": "301", "_COMM": "bash", "SYSLOG_IDENTIFIER": "bash",
     "MESSAGE": "Invalid user mallory from 192.0.2.21 port 1"},
    {"__CURSOR": "c3", "__REALTIME_TIMESTAMP": "1700000002000000", "_HOSTNAME": "h1",
     "_PID": "302", "_COMM": "sshd-session", "SYSLOG_IDENTIFIER": "sshd-session",
     "MESSAGE": b"Invalid user multi\nline from 192.0.2.22 port 2"},
    {"__CURSOR": "c4", "__REALTIME_TIMESTAMP": "1700000003000000", "_HOSTNAME": "h1",
     "_PID": "303", "_COMM": "sshd-session", "SYSLOG_IDENTIFIER": "sshd-session",
     "MESSAGE": "Timeout before authentication for connection from 192.0.2.23 to 192.0.2.1, pid = 303"},
]


def test_export_format(tmp_path: Path, capsys) -> None:
    path = tmp_path / "entries.export"
    path.write_bytes(_export(ENTRIES))
    _, rows = _scan(capsys, str(path))
    assert [(r["line"], r["host"], r["kind"], r["cursor"]) for r in rows] == [
        (1, "192.0.2.20", "invalid_user", "c1"),
        (3, "192.0.2.22", "invalid_user", "c3"),
        (4, "192.0.2.23", "timeout", "c4"),
    ]
    assert rows[0]["time"] == "2023-11-14T22:13:20+00:00"
    assert rows[1]["user"] == "multi\nline"


def test_truncated_export_is_reported(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.export"
    data = _export(ENTRIES[:1]) + b"MESSAGE\n" + (1000).to_bytes(8, "little") + b"short"
    path.write_bytes(data)
    code = cli.main(["scan", str(path)])
    captured = capsys.readouterr()
    assert code == 66
    assert "192.0.2.20" in captured.out  # what came before the damage is kept
    assert "truncated binary field" in captured.err


def test_real_journal_file(tmp_path: Path, capsys) -> None:
    export = tmp_path / "entries.export"
    export.write_bytes(_export(ENTRIES))
    jdir = tmp_path / "journal"
    jdir.mkdir()
    subprocess.run([JOURNAL_REMOTE, f"--output={jdir}/remote.journal", str(export)],
                   check=True, capture_output=True, timeout=60)
    _, by_dir = _scan(capsys, "--journal-dir", str(jdir))
    _, by_file = _scan(capsys, str(jdir / "remote.journal"))
    for rows in (by_dir, by_file):
        assert [(r["host"], r["kind"]) for r in rows] == [
            ("192.0.2.20", "invalid_user"), ("192.0.2.22", "invalid_user"),
            ("192.0.2.23", "timeout")]
        assert rows[0]["time"] == "2023-11-14T22:13:20+00:00"
        assert [r["line"] for r in rows] == [1, 3, 4]


def test_summary(tmp_path: Path, capsys) -> None:
    log = tmp_path / "auth.log"
    log.write_text("".join(
        f"Nov 28 09:00:{i:02d} h sshd[{i}]: Failed password for root from 203.0.113.9 port {i} ssh2\n"
        for i in range(10)) + "Nov 28 09:01:00 h sshd[99]: Invalid user a from 192.0.2.3 port 1\n")
    code = cli.main(["scan", "--summary", "--json", "--year", "2025", str(log)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["failures"] == 11
    top = report["addresses"][0]
    assert top["host"] == "203.0.113.9" and top["kinds"] == {"bad_password": 10}
    if report["policy"]:  # with the ban policy present: 10 failures exceed max_retry 5
        assert top["bans"] and not report["addresses"][1]["bans"]
    code = cli.main(["scan", "--summary", "--year", "2025", str(log)])
    table = capsys.readouterr().out
    assert "11 failures from 2 addresses" in table and "203.0.113.9" in table


def _daemon_bans(path: Path) -> list[tuple[str, str]]:
    """(network, ISO time) of the bans the daemon's path would decide on this log: each
    sshd record through detect's Correlator.feed, then BanPolicy.observe (daemon/loop)."""
    import datetime as dt

    from sshguardd import config
    from sshguardd.bans.policy import BanPolicy
    from sshguardd.detect import Correlator
    from sshguardd.detect.logformats import parse_syslog_line

    policy, correlator, bans = BanPolicy(config.Config().ban), Correlator(), []
    for line in path.read_text().splitlines():
        record = parse_syslog_line(line, 2025)
        if record is None:
            continue
        for event in correlator.feed(record.message, record.pid, record.host, record.time):
            ban = policy.observe(record, event)
            if ban is not None:
                assert record.time is not None
                at = dt.datetime.fromtimestamp(record.time, dt.UTC).isoformat()
                bans.append((ban.network, at))
    return bans


def test_summary_bans_what_the_daemon_would(tmp_path: Path, capsys) -> None:
    """--summary used to hand the policy each message after its prefixes were stripped,
    so sshd's PAM relays ("error: PAM: Authentication failure ...") counted as attempts
    there and not in the daemon: six relays banned 203.0.113.9 in the summary only. The
    relay is now the classifier's finding (Event.pam_relay) on both paths."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import gen_authlog
    finally:
        sys.path.pop(0)
    log = tmp_path / "auth.log"
    gen_authlog.generate(str(log), lines=6000, attackers=300, seed=5)
    relays = "".join(f"Mar  1 00:00:{i:02d} srv0 sshd[{90000 + i}]: error: PAM: Authentication "
                     f"failure for alice from 203.0.113.9\n" for i in range(6))
    log.write_text(relays + log.read_text())
    assert cli.main(["scan", "--summary", "--json", "--year", "2025", str(log)]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = sorted((b["network"], b["at"]) for a in report["addresses"] for b in a["bans"])
    daemon = sorted(_daemon_bans(log))
    assert len(daemon) > 10
    assert summary == daemon
    relayed = [a for a in report["addresses"] if a["host"] == "203.0.113.9"]
    assert relayed[0]["kinds"] == {"auth_failure": 6} and relayed[0]["bans"] == []


def test_usage_errors(capsys) -> None:
    assert cli.main(["scan"]) == cli.EX_USAGE
    assert cli.main(["scan", "/nonexistent/auth.log"]) == 66
    assert "/nonexistent/auth.log" in capsys.readouterr().err


@pytest.mark.parametrize("line", [
    "", "\x00\x01\x02", "Nov 99 99:99:99 h sshd[1]: x", "<999>1 - - - - - -", "[" * 5000,
])
def test_garbage_is_skipped(tmp_path: Path, capsys, line: str) -> None:
    log = tmp_path / "junk.log"
    log.write_text(line + "\n")
    code, rows = _scan(capsys, str(log))
    assert code == 0 and rows == []


def test_parallel_segments_give_the_same_output(tmp_path: Path, capsys, monkeypatch) -> None:
    """--jobs cuts a file into segments for worker processes; with a warm-up before each
    segment the output is byte-identical to a single pass, lines numbered alike."""
    from sshguardd.scan import parallel

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import gen_authlog
    finally:
        sys.path.pop(0)
    log = tmp_path / "auth.log"
    gen_authlog.generate(str(log), lines=6000, attackers=300, seed=7)
    monkeypatch.setattr(parallel, "SEGMENT", 64 << 10)
    monkeypatch.setattr(parallel, "WARMUP", 16 << 10)
    assert len(parallel.segments(str(log))) > 4
    assert cli.main(["scan", "--year", "2025", str(log)]) == 0
    single = capsys.readouterr().out
    assert cli.main(["scan", "--year", "2025", "--jobs", "2", str(log)]) == 0
    parallel = capsys.readouterr().out
    assert single.count("\n") > 1000
    assert parallel == single


def test_fast_path_equals_general_path(tmp_path: Path, capsys) -> None:
    """The fused fast loop for classic lines gives exactly what the general path (the
    regex reader plus Correlator.feed) gives: the same log with a facility field, which
    only the general reader accepts, must produce identical findings."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import gen_authlog
    finally:
        sys.path.pop(0)
    fast = tmp_path / "fast.log"
    gen_authlog.generate(str(fast), lines=8000, attackers=200, seed=3)
    lines = []
    for line in fast.read_text().splitlines(keepends=True):
        lines.append(line)
        if "Failed password for root" in line:
            # Old-style address-less lines in the middle of a connection exercise the
            # correlator (its address comes from the line before).
            head = line[: line.index("]: ") + 3]
            lines.append(head + "Disconnecting: Too many authentication failures [preauth]\n")
    text = "".join(lines)
    fast.write_text(text)
    general = tmp_path / "general.log"
    general.write_text("".join(line[:16] + line[16:].replace(" ", " auth.info ", 1)
                               for line in text.splitlines(keepends=True)))
    _, a = _scan(capsys, "--year", "2025", str(fast))
    _, b = _scan(capsys, "--year", "2025", str(general))
    assert len(a) > 2000
    strip = [{k: v for k, v in row.items() if k != "file"} for row in a]
    assert strip == [{k: v for k, v in row.items() if k != "file"} for row in b]


def test_overlong_lines_crlf_and_bad_bytes(tmp_path: Path, capsys) -> None:
    """A 20 MB line without a newline, CRLF endings and invalid UTF-8 are survived with
    bounded memory; the sshd lines around them are still found."""
    log = tmp_path / "auth.log"
    with open(log, "wb") as f:
        f.write(b"Nov 28 09:00:01 h sshd[1]: Invalid user a from 192.0.2.1 port 1\r\n")
        f.write(b"Nov 28 09:00:02 h sshd[2]: Invalid user \xff\xfe from 192.0.2.2 port 2\n")
        f.write(b"Nov 28 09:00:03 h sshd[3]: Invalid user " + b"x" * (20 << 20) + b"\n")
        f.write(b"Nov 28 09:00:04 h sshd[4]: Invalid user b from 192.0.2.4 port 4")
    code, rows = _scan(capsys, "--year", "2025", str(log))
    assert code == 0
    assert [(r["line"], r["host"]) for r in rows] == [
        (1, "192.0.2.1"), (2, "192.0.2.2"), (4, "192.0.2.4")]
    assert rows[1]["user"] == "\ufffd\ufffd"


def test_iso_utc_is_datetimes_isoformat() -> None:
    """scan's printer formats times with report.iso_utc instead of datetime (ISO 8601 logs
    give every line its own microsecond); the two must agree to the character, rounding
    of halves and carries into the next second included."""
    import datetime as dt
    import random

    from sshguardd.scan.textio import iso_utc

    rng = random.Random(16)
    cases = [0.0, -0.5, 0.5e-6, 1.5e-6, 2.5e-6, -1e-7, 1749542400.0000005, 1749542400.9999995,
             253402300799.9999994, -62135596800.0, 1749542400.003275]
    for _ in range(20_000):
        base = rng.choice((rng.uniform(-6e10, 2.5e11), float(rng.randrange(-10**9, 10**10))))
        cases += [base, base + rng.randrange(-4, 5) * 0.5e-6, int(base) + rng.random()]
    for t in cases:
        try:
            want: object = dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
        except (ValueError, OverflowError) as exc:
            want = type(exc)
        try:
            got: object = iso_utc(t)
        except (ValueError, OverflowError) as exc:
            got = type(exc)
        assert got == want, t
    print(f"{len(cases)} timestamps compared")


def test_a_time_past_year_9999_does_not_end_the_scan(tmp_path: Path, capsys) -> None:
    """An ISO stamp whose UTC time is past 9999-12-31 (any file scan reads may be crafted)
    made datetime raise, and scan reported the file as unreadable (exit 66) from that line
    on, losing the rest. Now that one time is null and the scan goes on."""
    log = tmp_path / "auth.log"
    log.write_text(
        "9999-12-31T23:59:59-23:59 h sshd[1]: Invalid user a from 192.0.2.1 port 1\n"
        "2025-06-10T08:00:00Z h sshd[2]: Invalid user b from 192.0.2.2 port 1\n"
        "9999-12-31T23:59:59-23:59 h sshd[3]: Failed password for c from 192.0.2.3 port 1 ssh2\n"
        "9999-12-31T23:59:59-23:59 h sshd[3]: Failed password for c from 192.0.2.3 port 1 ssh2\n")
    code, rows = _scan(capsys, str(log))
    assert code == 0
    assert [(r["host"], r["time"]) for r in rows] == [
        ("192.0.2.1", None), ("192.0.2.2", "2025-06-10T08:00:00+00:00"),
        ("192.0.2.3", None), ("192.0.2.3", None)]
    assert cli.main(["scan", "--summary", "--json", str(log)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failures"] == 4


def test_scan_starts_without_pydantic_or_prometheus(tmp_path: Path) -> None:
    """A plain scan registers only its own verb and imports neither pydantic (the config)
    nor prometheus_client: their import cost ~0.6 s of CPU per run before, more than
    scanning 100k lines. --summary still loads the config, and a bad one still exits 78."""
    log = tmp_path / "auth.log"
    log.write_text("Jun 10 08:00:00 h sshd[7]: Invalid user x from 192.0.2.1 port 1\n")
    probe = ("import sys; from sshguardd import cli; rc = cli.main(sys.argv[1:]); "
             "heavy = sorted(m for m in ('pydantic', 'prometheus_client', 'sshguardd.config') "
             "if m in sys.modules); print('HEAVY', heavy, rc, file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", probe, "scan", "--year", "2025", str(log)],
                         capture_output=True, text=True, check=True)
    assert '"kind": "invalid_user"' in run.stdout
    assert "HEAVY [] 0" in run.stderr, run.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[ban]\nmax_retry = 'many'\n")
    run = subprocess.run([sys.executable, "-c", probe, "scan", "--summary", "--config",
                          str(bad), str(log)], capture_output=True, text=True, check=False)
    assert "'sshguardd.config'" in run.stderr and "] 78" in run.stderr, run.stderr
    print("scan imports no pydantic; --summary with a bad config exits 78")
