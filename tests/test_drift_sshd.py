"""The drift guard repairing sshd's configuration on real files, validated by a real
`sshd -t`/`sshd -T` (tests/drift_helpers.py). Alerts are the real Alerts with a `send` that
keeps the messages; metrics the real Metrics with a private registry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from drift_helpers import HASH, Box, actions, sshd
from sshguardd import contracts
from sshguardd.effects import sshd as service


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_compliant_host_is_left_alone(box: Box):
    box.give_alice_a_key()
    before = box.main.read_bytes()
    assert actions(box.guard.check_all("start")) == {}
    assert box.main.read_bytes() == before and box.restart_count() == 0
    assert box.sent == []


def _date(box: Box) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(box.now))


def test_sed_style_drift_is_reverted_with_every_other_byte_kept(box: Box):
    box.give_alice_a_key()
    drifted = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes")
    box.main.write_text(drifted)
    os.chown(box.main, 0, 4)
    os.chmod(box.main, 0o640)
    out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert actions(out) == {"permitrootlogin": "repaired"}
    # The repaired line says who changed it, when and why (issue 12 item 6).
    assert box.main.read_text() == drifted.replace("PermitRootLogin yes", (
        f"# sshguardd {_date(box)}: PermitRootLogin no (was yes): no logins as root over "
        "SSH\nPermitRootLogin no"))
    st = box.main.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 0, 4)
    assert box.effective()["permitrootlogin"] == "no"
    assert box.restart_count() == 1
    # A copy of the drifted file and a unified diff are kept.
    kept = sorted((box.root / "state" / "drift").iterdir())
    assert [p.suffix for p in kept] == [".diff", ".drifted"]
    assert kept[1].read_text() == drifted
    assert "-PermitRootLogin yes\n+# sshguardd " in kept[0].read_text()
    assert "\n+PermitRootLogin no\n" in kept[0].read_text()
    assert [a["SETTING"] for a in box.alerts("drift")] == ["permitrootlogin"]
    assert len(box.alerts("repaired")) == 1
    assert box.metric("drift_repaired_total", setting="permitrootlogin",
                      file=str(box.main)) == 1
    assert box.metric("sshd_restarts_total", result="success") == 1
    # The watcher then reports our own write: ignored, nothing is restarted again.
    again = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert [o.action for o in again] == ["ignored"]
    assert box.restart_count() == 1


def test_dropin_ahead_of_main_file_is_neutralised_in_the_dropin(box: Box):
    box.give_alice_a_key()
    main_before = box.main.read_bytes()
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    dropin.write_text("# written by cloud-init\nPasswordAuthentication yes\n")
    assert box.guard.is_relevant(str(dropin))
    assert box.effective()["passwordauthentication"] == "yes"
    out = box.guard.handle(contracts.FileChanged(str(dropin), box.now))
    assert actions(out) == {"passwordauthentication": "repaired"}
    assert dropin.read_text() == (
        f"# written by cloud-init\n# sshguardd {_date(box)}: PasswordAuthentication no (was "
        "yes): keys only, password guessing gets nowhere\nPasswordAuthentication no\n")
    assert box.main.read_bytes() == main_before
    assert box.effective()["passwordauthentication"] == "no"


def test_missing_setting_added_where_it_wins(box: Box):
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no\n", "")
                        + "Match User bob\n  X11Forwarding no\n")
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "repaired"}
    assert "PermitRootLogin no\nMatch User bob\n" in box.main.read_text()
    assert box.effective()["permitrootlogin"] == "no"


def test_match_block_reenabling_root_login_is_repaired(box: Box):
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text() + "Match Address 10.0.0.0/8\n"
                        "  PermitRootLogin yes\n")
    ctx = {"user": "root", "host": "h", "addr": "10.1.2.3"}
    assert box.runner.effective(box.main, ctx)["permitrootlogin"] == "yes"
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin (Match Address 10.0.0.0/8)": "repaired"}
    assert box.runner.effective(box.main, ctx)["permitrootlogin"] == "no"


def test_config_sshd_rejects_is_not_touched_and_alerted_once(box: Box):
    box.give_alice_a_key()
    broken = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes") \
        + "NoSuchKeyword at all\n"
    box.main.write_text(broken)
    for _ in range(2):
        out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
        assert actions(out) == {"permitrootlogin": "failed"}
    assert box.main.read_text() == broken and box.restart_count() == 0
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "validate" and "NoSuchKeyword" in alert["STDERR"]
    # (line 12 of the candidate: the repair adds its comment line above line 8)
    assert f"{box.main} (candidate): line 12: Bad configuration option" in alert["STDERR"]
    # Broken with nothing to repair: alerted once too.
    box.main.write_text(broken.replace("PermitRootLogin yes", "PermitRootLogin no"))
    for _ in range(2):
        out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
        assert actions(out) == {"sshd_config": "failed"}
    assert len(box.alerts("repair_failed")) == 2
    assert box.restart_count() == 0


def test_invalid_value_of_a_policy_keyword_is_repaired(box: Box):
    # A bad value makes sshd reject the file; putting the policy's value back fixes it.
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin maybe"))
    with pytest.raises(service.ServiceError):
        box.runner.test(box.main)
    out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert actions(out) == {"permitrootlogin": "repaired"}
    assert box.effective()["permitrootlogin"] == "no" and box.restart_count() == 1


def test_candidate_rejected_by_sshd_changes_nothing(tmp_path: Path):
    box = Box(tmp_path, sshd_settings={"MaxAuthTries": "lots"})
    box.give_alice_a_key()
    before = box.main.read_bytes()
    out = box.guard.check_all("start")
    assert actions(out) == {"maxauthtries": "failed"}
    assert box.main.read_bytes() == before and box.restart_count() == 0
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "validate"
    assert f"{box.main} (candidate) line 12: MaxAuthTries integer value invalid" \
        in alert["STDERR"]
    assert box.metric("repair_failures_total", step="validate") == 1


def test_failed_restart_restores_the_files(tmp_path: Path):
    box = Box(tmp_path, restart_command=["false"])
    box.runner = box.guard.runner = sshd(restart=["false"])
    box.give_alice_a_key()
    drifted = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes")
    box.main.write_text(drifted)
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "failed"}
    assert box.main.read_text() == drifted
    (alert,) = box.alerts("restart_failed")
    assert alert["COMMAND"] == "false"
    assert box.metric("sshd_restarts_total", result="failure") == 1


def test_repair_sshd_does_not_confirm_is_rolled_back(tmp_path: Path):
    # sshd accepts "MaxAuthTries 03" but reports it as 3: the model's edit is not what the
    # policy says in sshd's own terms, so the files go back and nothing is restarted.
    box = Box(tmp_path, sshd_settings={"MaxAuthTries": "03"})
    box.give_alice_a_key()
    before = box.main.read_bytes()
    out = box.guard.check_all("start")
    assert actions(out) == {"maxauthtries": "failed"}
    assert box.main.read_bytes() == before and box.restart_count() == 0
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "verify" and "maxauthtries 3, not 03" in alert["STDERR"]


def test_symlinked_config_keeps_its_link(box: Box):
    box.give_alice_a_key()
    managed = box.root / "managed_sshd_config"
    managed.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                    "PermitRootLogin yes"))
    box.main.unlink()
    box.main.symlink_to(managed)
    assert actions(box.guard.check_all("start")) == {"permitrootlogin": "repaired"}
    assert box.main.is_symlink() and "PermitRootLogin no\n" in managed.read_text()


def test_audit_mode_changes_nothing(tmp_path: Path):
    box = Box(tmp_path, mode="audit")
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    box.shadow.write_text(box.shadow.read_text().replace("root:*:", f"root:{HASH}:"))
    before = {p: p.read_bytes() for p in (box.main, box.shadow)}
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "drift", "root password": "drift"}
    assert {p: p.read_bytes() for p in before} == before
    assert box.restart_count() == 0
    assert len(box.alerts("drift")) == 2 and box.alerts("repaired") == []


def test_standing_drift_is_alerted_once(tmp_path: Path):
    box = Box(tmp_path, mode="audit")
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    for _ in range(3):
        box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert len(box.alerts("drift")) == 1
    assert box.metric("drift_detected_total", setting="permitrootlogin",
                      file=str(box.main)) == 1
    # Fixed by hand, then drifted again: a new alert.
    box.main.write_text(box.main.read_text().replace("PermitRootLogin yes",
                                                     "PermitRootLogin no"))
    box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert len(box.alerts("drift")) == 2


def test_unenforceable_policy_keyword_is_reported_not_guessed(tmp_path: Path):
    box = Box(tmp_path, sshd_settings={"AllowUsers": "alice"})
    (alert,) = box.alerts("startup_problem")
    assert alert["WHAT"] == "drift policy" and "allowusers" in alert["DETAIL"]
    box.give_alice_a_key()
    before = box.main.read_bytes()
    assert actions(box.guard.check_all("start")) == {}
    assert box.main.read_bytes() == before


def test_watch_paths_and_relevance(box: Box):
    extra = box.root / "extra.d"
    extra.mkdir()
    (extra / "a.conf").write_text("X11Forwarding no\n")
    box.main.write_text(f"Include {extra}/*.conf\n" + box.main.read_text())
    paths = box.guard.watch_paths()
    # Each directory sshd reads from and the shadow's, and their parents (a directory
    # renamed over is seen there).
    assert paths == [box.ssh, extra, box.ssh / "sshd_config.d", box.etc, box.root]
    assert box.guard.watch_set() == box.guard.watch_set()  # an immutable value
    assert box.guard.is_relevant(str(extra / "new.conf"))
    assert not box.guard.is_relevant(str(extra / "new.txt"))
    assert not box.guard.is_relevant(str(box.ssh / "sshd_config.d" / ".tmp.conf"))
    assert not box.guard.is_relevant(str(box.etc / "hosts"))
    assert box.guard.is_relevant(str(box.shadow))


def test_restart_command_found_from_installed_unit(tmp_path: Path):
    debian, rhel = tmp_path / "debian", tmp_path / "rhel"
    debian.mkdir()
    rhel.mkdir()
    (debian / "ssh.service").write_text("[Unit]\n")
    (debian / "sshd.service").symlink_to(debian / "ssh.service")  # Debian's alias
    (rhel / "sshd.service").write_text("[Unit]\n")
    assert service.find_restart_command([str(debian)]) == ("systemctl", "restart",
                                                          "ssh.service")
    assert service.find_restart_command([str(tmp_path / "none"), str(rhel)]) == (
        "systemctl", "restart", "sshd.service")


def test_service_error_quotes_argv_status_and_stderr(box: Box):
    with pytest.raises(service.ServiceError) as err:
        service.Sshd().test(box.root / "missing")
    assert err.value.argv[-2:] == ["-f", str(box.root / "missing")]
    assert err.value.returncode == 1 and "No such file or directory" in err.value.stderr
    assert "/usr/sbin/sshd -t -f " in str(err.value)  # the exact argv, privsep wrapper too
    with pytest.raises(service.ServiceError) as err:
        service.Sshd(restart=["/nonexistent/restart-sshd"]).restart()
    assert err.value.returncode == 127 and "No such file" in err.value.stderr
