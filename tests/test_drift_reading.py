"""Issue 11's sshd_config cases against the real sshd: bytes sshd reads differently from
str.splitlines(), a repair that raises half-way, an edit that lands while we repair, a FIFO
drop-in and a missing privilege-separation directory (tests/drift_helpers.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from drift_helpers import Box, actions
from sshguardd import contracts
from sshguardd.effects import sshd as service

OUTSIDE_ROOT = {"user": "root", "host": "h", "addr": "192.0.2.1", "laddr": "192.0.2.2",
                "lport": "22"}
GLUED = "Ma\0\ntch Address *\nPermitRootLogin yes\nPasswordAuthentication yes\n"


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = Box(tmp_path)
    b.give_alice_a_key()
    return b


def test_nul_glued_match_is_seen_and_repaired(box: Box) -> None:
    # sshd keeps strlen() of each line: "Ma\0\n" loses its newline and glues onto "tch",
    # a real Match that gives root and passwords back to everyone. The old model read two
    # junk keywords and reported the host compliant.
    box.main.write_text(box.main.read_text() + GLUED)
    assert box.effective(OUTSIDE_ROOT)["permitrootlogin"] == "yes"
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin (Match Address *)": "repaired",
                            "passwordauthentication (Match Address *)": "repaired"}
    real = box.effective(OUTSIDE_ROOT)
    assert (real["permitrootlogin"], real["passwordauthentication"]) == ("no", "no")
    # Only the two values changed (each with the comment a repair adds above it); the NUL
    # and the glued line are left as they were.
    text = box.main.read_text()
    ours = [ln for ln in text.splitlines() if ln.startswith("# sshguardd ")]
    assert len(ours) == 2 and all("(was yes)" in ln for ln in ours), ours
    rest = "".join(ln for ln in text.splitlines(keepends=True)
                   if not ln.startswith("# sshguardd "))
    assert rest.endswith("Ma\0\ntch Address *\nPermitRootLogin no\nPasswordAuthentication no\n")


def test_check_fails_on_the_nul_glued_match(box: Box, capsys: Any) -> None:
    box.main.write_text(box.main.read_text() + GLUED)
    rc, out = box.check(capsys)
    assert rc == 1
    assert "permitrootlogin (Match Address *)" in out and "FAIL (want no)" in out


def test_nul_in_a_match_criterion_never_crashes_a_repair(box: Box) -> None:
    # The old repair raised ValueError ("embedded null byte" in `sshd -T -C`) after it had
    # rewritten the file: no restart, no alert, and `check` crashed.
    box.main.write_text(box.main.read_text()
                        + "Match Address 203.0.113.0\0\n,192.0.2.0/24\nPermitRootLogin yes\n")
    assert box.effective(OUTSIDE_ROOT)["permitrootlogin"] == "yes"
    out = box.guard.check_all("start")
    assert list(actions(out).values()) == ["repaired"]
    assert box.effective(OUTSIDE_ROOT)["permitrootlogin"] == "no"
    assert box.restart_count() == 1


class _Exploding(service.Sshd):
    """The real sshd, except that verifying after the real files were replaced and
    validated raises something no step expects."""

    def __init__(self, main: Path, restart: Any) -> None:
        super().__init__(restart=restart)
        self.main = main
        self.armed = False

    def test(self, config: Path | str) -> None:
        super().test(config)
        if Path(config) == self.main:  # not the candidate copy: verify comes next
            self.armed = True

    def effective(self, config: Path | str, context: Any = None) -> dict[str, str]:
        if self.armed:
            raise ValueError("a bug in a step nobody thought of")
        return super().effective(config, context)


def test_an_unexpected_exception_restores_the_files_and_alerts(box: Box) -> None:
    runner = _Exploding(box.main, box.runner.restart_argv)
    box.guard.runner = runner
    drifted = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes")
    box.main.write_text(drifted)
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "failed"}
    assert box.main.read_text() == drifted  # what was there before, byte for byte
    assert box.restart_count() == 0  # sshd never runs a config we did not verify
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "internal" and "ValueError" in alert["STDERR"]


def test_an_edit_landing_during_the_repair_is_kept(tmp_path: Path) -> None:
    # The admin's edit lands between our compare and our rename (the worst moment): it
    # must survive, and the repair is re-planned on top of it.
    main: list[Path] = []

    def admin_edit() -> None:
        text = main[0].read_text()
        if "# admin was here" not in text:
            main[0].write_text(text + "# admin was here\nMaxSessions 4\n")

    box = Box(tmp_path, before_swap=admin_edit)
    main.append(box.main)
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "repaired"}
    text = box.main.read_text()
    assert "# admin was here\nMaxSessions 4\n" in text and "PermitRootLogin no\n" in text
    assert box.effective()["maxsessions"] == "4"
    # What we wrote last is ours; the admin's edit was not mistaken for our own write.
    assert [o.action for o in box.guard.handle(
        contracts.FileChanged(str(box.main), box.now))] == ["ignored"]


def test_a_fifo_dropin_is_reported_before_sshd_runs(box: Box) -> None:
    # sshd -T would block on the FIFO (30 s per call on the loop before); it is reported
    # at once, and nothing is run or written.
    fifo = box.ssh / "sshd_config.d" / "50-evil.conf"
    os.mkfifo(fifo)
    before = box.main.read_bytes()
    started = time.monotonic()
    out = box.guard.check_all("start")
    assert time.monotonic() - started < 5
    assert actions(out) == {"sshd_config": "failed"}
    (alert,) = box.alerts("repair_failed")
    assert "not a regular file" in alert["STDERR"] and str(fifo) in alert["STDERR"]
    assert box.main.read_bytes() == before and box.restart_count() == 0


def test_sshd_checks_run_when_the_privsep_dir_is_missing(box: Box) -> None:
    # ssh.service stopped (or socket-activated, before its first connection): no
    # /run/sshd, and a plain `sshd -t` refuses to run, so nothing was ever repaired.
    assert not os.path.isdir("/run/sshd")
    plain = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(box.main)],
                           capture_output=True, text=True, check=False)
    assert plain.returncode != 0 and "privilege separation directory" in plain.stderr
    service.Sshd().test(box.main)  # a private /run/sshd for the check
    assert not os.path.isdir("/run/sshd")  # and the host's /run is untouched
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    assert actions(box.guard.check_all("start")) == {"permitrootlogin": "repaired"}


def test_a_line_the_model_is_unsure_of_is_alerted_not_trusted(box: Box) -> None:
    # strdelim()'s quote handling inside a keyword is not reproduced: drift, alerted and
    # refused with the reason, never guessed at.
    box.main.write_text(box.main.read_text() + 'X11Forward"ing" yes\n')
    out = box.guard.check_all("start")
    assert "sshd_config line 11" in actions(out)
    (refused,) = box.alerts("repair_refused")
    assert "double quote" in refused["REASON"]
    assert len(box.alerts("drift")) == 1
    box.guard.check_all("again")
    assert len(box.alerts("repair_refused")) == 1  # once while it stands


def test_form_feed_and_quotes_read_as_sshd_reads_them(box: Box) -> None:
    # "PasswordAuthentication 'yes'" is yes to sshd (argv_split groups single quotes);
    # a form feed at the end of a line is whitespace.
    text = box.main.read_text().replace("PasswordAuthentication no\n",
                                        "PasswordAuthentication 'yes'\x0c\n")
    box.main.write_text(text)
    assert box.effective()["passwordauthentication"] == "yes"
    out = box.guard.check_all("start")
    assert actions(out) == {"passwordauthentication": "repaired"}
    assert "PasswordAuthentication no\x0c\n" in box.main.read_text()
    assert box.effective()["passwordauthentication"] == "no"


def test_a_value_split_by_a_nul_is_refused_not_guessed(tmp_path: Path) -> None:
    # "MaxAuthTries 1<NUL>\n0" is "MaxAuthTries 10" to sshd; no one-line edit can change a
    # value that spans two physical lines: drift, alerted, refused with the reason.
    box = Box(tmp_path, sshd_settings={"MaxAuthTries": "3"})
    box.give_alice_a_key()
    text = box.main.read_text() + "MaxAuthTries 3\n"
    text = text.replace("MaxAuthTries 3\n", "MaxAuthTries 1\0\n0\n")
    box.main.write_text(text)
    assert box.effective()["maxauthtries"] == "10"
    out = box.guard.check_all("start")
    assert actions(out) == {"maxauthtries": "refused"}
    (refused,) = box.alerts("repair_refused")
    assert "split across lines by a NUL byte" in refused["REASON"]
    assert box.main.read_text() == text and box.restart_count() == 0
