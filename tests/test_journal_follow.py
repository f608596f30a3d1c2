"""The journal follower against real journals: files written by systemd-journal-remote, and
a private systemd-journald in a sandbox (rotation, vacuuming, forged sender names)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from sshguardd.contracts import LogBatch
from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.effects.journal import JournalFollower

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000_000  # µs


def write_journal(directory: Path, entries: list[dict[str, str]], name: str = "x",
                  start: int = 0) -> None:
    """Turn entries (field dicts) into a real journal file with systemd-journal-remote.
    Entry i gets realtime T0 + (start+i) seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    export = directory.parent / f"{name}.export"
    with open(export, "w", encoding="utf-8") as f:
        for i, fields in enumerate(entries, start):
            f.write(f"__REALTIME_TIMESTAMP={T0 + i * 1_000_000}\n"
                    f"__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={BOOT}\n_HOSTNAME=box\n")
            for k, v in fields.items():
                f.write(f"{k}={v}\n")
            f.write("\n")
    subprocess.run([JOURNAL_REMOTE, f"--output={directory}/{name}.journal", str(export)],
                   check=True, capture_output=True)


def sshd(msg: str, pid: int = 100, comm: str = "sshd", uid: str = "0", **extra: str) -> dict:
    return {"MESSAGE": msg, "_COMM": comm, "_UID": uid, "_PID": str(pid),
            "SYSLOG_IDENTIFIER": "sshd", **extra}


def drain(f: JournalFollower) -> list[str]:
    out: list[str] = []
    while (b := f.read()) is not None:
        out += [r.message for r in b.records]
    return out


def _trust_corpus() -> list[dict[str, str]]:
    return [
        sshd("by comm"),
        sshd("by sshd-session", comm="sshd-session"),
        {"MESSAGE": "by unit", "_SYSTEMD_UNIT": "ssh.service", "_COMM": "sshd", "_UID": "0",
         "_PID": "7"},
        # issue 10: unit alone is not sshd (a user's session left in ssh.service's cgroup)
        {"MESSAGE": "unit, other comm", "_SYSTEMD_UNIT": "sshd.service", "_COMM": "sshd-auth",
         "_UID": "101", "_PID": "8"},
        {"MESSAGE": "Accepted password for guest from 10.9.9.9 port 1 ssh2",
         "_SYSTEMD_UNIT": "ssh.service", "_COMM": "logger", "_UID": "1000", "_PID": "11"},
        {"MESSAGE": "user-named sshd in the unit", "_SYSTEMD_UNIT": "ssh.service",
         "_COMM": "sshd", "_UID": "1000", "_PID": "12"},
        # forged: logger -t sshd (identifier only), a non-root program named sshd, other unit
        {"MESSAGE": "logger -t sshd", "SYSLOG_IDENTIFIER": "sshd", "_COMM": "logger",
         "_UID": "0", "_PID": "9"},
        sshd("user's own sshd", uid="1000"),
        {"MESSAGE": "cron says sshd", "SYSLOG_IDENTIFIER": "sshd", "_COMM": "cron",
         "_SYSTEMD_UNIT": "cron.service", "_UID": "0", "_PID": "10"},
        # journald's own flood notices (fields as systemd 252 writes them), and forgeries
        {"MESSAGE": "Suppressed 31999 messages from ssh.service", "_TRANSPORT": "driver",
         "MESSAGE_ID": "a596d6fe7bfa4994828e72309e95d61e", "_COMM": "systemd-journal",
         "_UID": "0", "_PID": "5", "N_DROPPED": "31999"},
        {"MESSAGE": "Suppressed 7 messages from cron.service", "_TRANSPORT": "driver",
         "MESSAGE_ID": "a596d6fe7bfa4994828e72309e95d61e", "_COMM": "systemd-journal",
         "_UID": "0", "_PID": "5"},
        {"MESSAGE": "Suppressed 999 messages from ssh.service", "_TRANSPORT": "syslog",
         "MESSAGE_ID": "a596d6fe7bfa4994828e72309e95d61e", "_COMM": "logger",
         "_UID": "1000", "_PID": "13"},
    ]


def _read_all(d: Path, **kw: object) -> tuple[list[str], list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    f = JournalFollower(directory=d, cursor=None,
                        on_suppressed=lambda u, n: seen.append((u, n)), **kw)  # type: ignore[arg-type]
    f.open()
    f.cursor = None
    f._reader.seek_head()  # type: ignore[union-attr]  # read the whole file, not the tail
    out = drain(f)
    f.close()
    return out, seen


def test_trusted_fields_only(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, _trust_corpus())
    # This host has no systemd as PID 1: no entry could carry a unit, _COMM+_UID decide.
    out, seen = _read_all(d)
    assert out == ["by comm", "by sshd-session", "by unit"]
    assert seen == [("ssh.service", 31999)]
    # On a systemd host the unit is required too.
    out, seen = _read_all(d, require_unit=True)
    assert out == ["by unit"]
    assert seen == [("ssh.service", 31999)]


def test_a_batch_of_notices_only_still_moves_the_position(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, [sshd("first"), _trust_corpus()[-3]])
    seen: list[tuple[str, int]] = []
    f = JournalFollower(directory=d, batch_size=1,
                        on_suppressed=lambda u, n: seen.append((u, n)))
    f.open()
    f._reader.seek_head()  # type: ignore[union-attr]
    first = f.read()
    assert first is not None and [r.message for r in first.records] == ["first"]
    notice = f.read()
    assert notice is not None and notice.records == () and notice.position != first.position
    assert f.read() is None and seen == [("ssh.service", 31999)]
    f.close()


def test_record_fields_and_first_start_at_tail(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, [sshd(f"old {i}", pid=200 + i) for i in range(3)])
    f = JournalFollower(directory=d)
    f.open()
    assert f.read() is None  # the tail: nothing that was already there
    f.close()
    # and when entries are read, they carry the entry's own time and sshd's pid
    f = JournalFollower(directory=d)
    f.open()
    f._reader.seek_head()  # type: ignore[union-attr]
    batch = f.read()
    assert isinstance(batch, LogBatch)
    r = batch.records[1]
    assert (r.message, r.pid, r.time) == ("old 1", 201, pytest.approx((T0 + 1e6) / 1e6))
    assert batch.position and batch.position.startswith("s=")
    f.close()


def test_resume_after_cursor_no_loss_no_double(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, [sshd(f"m{i}") for i in range(10)])
    f = JournalFollower(directory=d, batch_size=4)
    f.open()
    f._reader.seek_head()  # type: ignore[union-attr]
    first = f.read()
    assert first is not None and [r.message for r in first.records] == ["m0", "m1", "m2", "m3"]
    f.close()
    # restart with the persisted position: continues with m4, exactly once each
    f = JournalFollower(directory=d, cursor=first.position, batch_size=4)
    f.open()
    assert drain(f) == [f"m{i}" for i in range(4, 10)]
    f.close()


def test_resume_when_cursor_entry_was_vacuumed(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, [sshd(f"a{i}") for i in range(3)], name="a")
    write_journal(d, [sshd(f"b{i}") for i in range(3)], name="b", start=3)
    f = JournalFollower(directory=d)
    f.open()
    f._reader.seek_head()  # type: ignore[union-attr]
    batch = f.read(limit=2)  # a0, a1
    assert batch is not None and batch.records[-1].message == "a1"
    f.close()
    (d / "a.journal").unlink()  # vacuumed while we were down
    f = JournalFollower(directory=d, cursor=batch.position)
    f.open()
    assert drain(f) == ["b0", "b1", "b2"]
    f.close()


def test_backlog_replays_the_find_time_window(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, [sshd(f"m{i}") for i in range(10)])
    f = JournalFollower(directory=d)
    f.open()
    f._reader.seek_head()  # type: ignore[union-attr]
    batch = f.read(limit=7)  # m0..m6 processed before a crash
    assert batch is not None
    f.close()
    f = JournalFollower(directory=d, cursor=batch.position)
    f.open()
    # a 2 s window back from m6's own time: m4, m5, m6 (the entries are 1 s apart)
    assert [r.message for r in f.backlog(2.0)] == ["m4", "m5", "m6"]
    assert drain(f) == ["m7", "m8", "m9"]  # backlog left the position alone
    f.close()


def test_bad_cursor_falls_back_to_tail(tmp_path: Path) -> None:
    d = tmp_path / "j"
    write_journal(d, [sshd("old")])
    f = JournalFollower(directory=d, cursor="not-a-cursor")
    f.open()
    assert f.read() is None
    f.close()


# -- a live private journald ---------------------------------------------------------------

@pytest.fixture
def box(tmp_path: Path):
    with Sandbox(tmp_path, etc_overlay=False, journald=True) as sb:
        yield sb


@pytest.fixture
def tools():
    """A copy of logger named `sshd` (a process whose _COMM is sshd), in a directory any
    user can read, for root and non-root senders."""
    d = Path(tempfile.mkdtemp(prefix="jf-tools-"))
    os.chmod(d, 0o755)
    shutil.copy("/usr/bin/logger", d / "sshd")
    os.chmod(d / "sshd", 0o755)
    yield d
    shutil.rmtree(d)


class Collector:
    """Runs a follower's thread and gathers what it emits."""

    def __init__(self, follower: JournalFollower):
        self.follower = follower
        self.messages: list[str] = []
        self.positions: list[str | None] = []
        self.lock = threading.Lock()

    def emit(self, batch: LogBatch) -> None:
        with self.lock:
            self.messages += [r.message for r in batch.records]
            self.positions.append(batch.position)

    def has(self, msg: str) -> bool:
        with self.lock:
            return msg in self.messages


def journal_dir(sb: Sandbox) -> Path:
    return sb.path("/run/log/journal")


class Sender:
    """A long-lived syslog sender inside the sandbox (`logger` reading lines from stdin).

    It must outlive its messages: journald reads _COMM from /proc/PID/comm when the
    datagram arrives, and for a process that already exited the field is simply missing.
    """

    def __init__(self, sb: Sandbox, exe: str, *pre: str):
        self.proc = sb.popen([*pre, exe, "-u", "/dev/log", "-p", "auth.info", "-t", "sshd"],
                             stdin=subprocess.PIPE, text=True)

    def say(self, msg: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(msg + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def test_live_forged_sshd_lines_are_ignored(box: Sandbox, tools: Path) -> None:
    f = JournalFollower(directory=journal_dir(box))
    f.open()
    c = Collector(f)
    f.start(c.emit)
    try:
        senders = [
            Sender(box, "logger"),  # logger -t sshd
            Sender(box, str(tools / "sshd"),  # a program named sshd, run by a user
                   "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            Sender(box, str(tools / "sshd")),  # stands in for the real (root) sshd
        ]
        for i, s in enumerate(senders[:2]):
            s.say(f"Invalid user spoof{i} from 10.9.9.{i} port 22")
        box.run(["systemd-cat", "-t", "sshd", "echo", "Invalid user spoof2 from 10.9.9.2"],
                check=True)
        # the forgeries really carry what they forge (else this test proves nothing)
        wait_for(lambda: box.journal("-o", "cat", "_COMM=sshd", "_UID=65534"), 10,
                 what="the non-root sshd entry")
        wait_for(lambda: box.journal("-o", "cat", "SYSLOG_IDENTIFIER=sshd").count("spoof") == 3,
                 10, what="three forged entries")
        senders[2].say("Invalid user real from 10.9.9.4 port 22")
        wait_for(lambda: c.has("Invalid user real from 10.9.9.4 port 22"), 10,
                 what="the trusted line")
        for s in senders:
            s.close()
        assert c.messages == ["Invalid user real from 10.9.9.4 port 22"]
    finally:
        f.close()
    assert not f.alive


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_rotation_and_vacuum_keep_following_without_fd_leak(box: Sandbox, tools: Path) -> None:
    f = JournalFollower(directory=journal_dir(box))
    f.open()
    c = Collector(f)
    f.start(c.emit)
    counts = []
    sender = Sender(box, str(tools / "sshd"))
    try:
        for cycle in range(6):
            for i in range(3):
                sender.say(f"cycle {cycle} line {i}")
            wait_for(lambda cycle=cycle: c.has(f"cycle {cycle} line 2"), 10, what=f"cycle {cycle}")
            box.run(["journalctl", "--rotate"], check=True)
            box.run(["journalctl", "--vacuum-files=1"], check=True)
            sender.say(f"after rotate {cycle}")
            wait_for(lambda cycle=cycle: c.has(f"after rotate {cycle}"), 10,
                     what=f"after rotate {cycle}")
            counts.append(fd_count())
        expected = []
        for cycle in range(6):
            expected += [f"cycle {cycle} line {i}" for i in range(3)] + [f"after rotate {cycle}"]
        assert c.messages == expected
        # files closed as they are vacuumed: the fd count does not grow with rotations
        assert max(counts[2:]) <= counts[1], counts
    finally:
        sender.close()
        f.close()
    assert not f.alive


def thread_cpu_ticks(tid: int) -> int:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_quiet_follower_sleeps(box: Sandbox, tools: Path) -> None:
    """Once sshd is quiet (after the short hot window) the thread sleeps on inotify:
    no polling loop burning CPU."""
    f = JournalFollower(directory=journal_dir(box), hot_window=0.2)
    f.open()
    c = Collector(f)
    f.start(c.emit)
    sender = Sender(box, str(tools / "sshd"))
    try:
        sender.say("one line to make it hot")
        wait_for(lambda: c.has("one line to make it hot"), 10, what="the line")
        assert f._thread is not None and f._thread.native_id is not None
        tid = f._thread.native_id
        threading.Event().wait(0.5)  # let the hot window pass (not synchronisation)
        before = thread_cpu_ticks(tid)
        threading.Event().wait(2.0)
        used = thread_cpu_ticks(tid) - before
        assert used <= 2, f"{used} clock ticks in 2 s while idle"
        sender.say("and it still wakes up")
        wait_for(lambda: c.has("and it still wakes up"), 10, what="the wake-up")
    finally:
        sender.close()
        f.close()

