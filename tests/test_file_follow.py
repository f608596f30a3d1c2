"""The syslog-file follower with real files: resume, rotation by rename and by truncation,
half-written lines, and other programs' lines."""

from __future__ import annotations

from pathlib import Path

from sshguardd.effects.logfile import FileFollower


def line(n: int, prog: str = "sshd[123]") -> str:
    return f"Nov 28 10:00:{n % 60:02d} host {prog}: Invalid user u{n} from 10.0.0.{n % 250} port 22\n"


def drain(f: FileFollower) -> list[str]:
    out: list[str] = []
    while (b := f.read()) is not None:
        out += [r.message for r in b.records]
    return out


def test_tail_resume_rotation_and_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(line(0))
    f = FileFollower([tmp_path / "secure", log])
    f.open()
    assert f.path == log and f.read() is None  # first start: the tail
    with log.open("a") as fh:
        fh.write(line(1) + line(2, prog="CRON[9]") + line(3)[:20])
    assert drain(f) == ["Invalid user u1 from 10.0.0.1 port 22"]
    pos = f.cursor
    f.close()
    with log.open("a") as fh:
        fh.write(line(3)[20:] + line(4))
    # restart from the saved position: the half line is read whole, nothing twice
    f = FileFollower([log], position=pos)
    f.open()
    assert drain(f) == [f"Invalid user u{n} from 10.0.0.{n} port 22" for n in (3, 4)]
    # rotation by rename: the rest of the old file, then the new one from its start
    with log.open("a") as fh:
        fh.write(line(5))
    log.rename(tmp_path / "auth.log.1")
    log.write_text(line(6))
    assert drain(f) == [f"Invalid user u{n} from 10.0.0.{n} port 22" for n in (5, 6)]
    # copytruncate: the file shrinks (seen on the next poll), read it from the start
    log.write_text("")
    assert drain(f) == []
    with log.open("a") as fh:
        fh.write(line(7))
    assert drain(f) == ["Invalid user u7 from 10.0.0.7 port 22"]
    f.close()


def test_resume_after_rotation_while_down(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(line(0))
    f = FileFollower([log])
    f.open()
    with log.open("a") as fh:
        fh.write(line(1))
    assert drain(f) == ["Invalid user u1 from 10.0.0.1 port 22"]
    pos = f.cursor
    f.close()
    log.rename(tmp_path / "auth.log.1")
    log.write_text(line(2))
    f = FileFollower([log], position=pos)
    f.open()
    assert drain(f) == ["Invalid user u2 from 10.0.0.2 port 22"]
    f.close()
